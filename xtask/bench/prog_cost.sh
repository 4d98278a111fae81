#!/usr/bin/env bash
# The kernel program's own cost per syscall exit, two agent builds alternating (A B A B):
# `run_time_ns / run_cnt` of `syscalls_sys_exit` (kernel.bpf_stats_enabled) while LOAD runs,
# and LOAD's wall time with and without the agent. Less sensitive than wall-clock ratios to
# a machine whose speed drifts. As root:
#   AGENT_A=/path/to/old/sensor-agent bash xtask/bench/prog_cost.sh
# Knobs: AGENT_B (default: this tree's release build), ROUNDS (4), LOAD (1,000,000 open+close
# of /etc/hostname, three times).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OPENLOOP=$ROOT/target/release/openloop
AGENT_A=${AGENT_A:?the build to compare with}
AGENT_B=${AGENT_B:-$ROOT/target/release/sensor-agent}
LOAD=${LOAD:-$OPENLOOP 1000000 /etc/hostname}
WORK=$(mktemp -d)
trap 'sysctl -qw kernel.bpf_stats_enabled=0; rm -rf "$WORK"' EXIT
sysctl -qw kernel.bpf_stats_enabled=1
stats() { # run_time_ns run_cnt of the sys_exit program
    local id
    id=$(bpftool prog show | awk '/syscalls_sys_exit/{print $1}' | tr -d ':' | tail -1)
    bpftool prog show id "$id" | grep -o "run_time_ns [0-9]* run_cnt [0-9]*" | awk '{print $2, $4}'
}
load3() { # wall ms of one LOAD, the mean of three
    local t0 t1
    t0=$(date +%s%N)
    # shellcheck disable=SC2086
    for _ in 1 2 3; do $LOAD >/dev/null; done
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 3000000 ))
}
for round in $(seq "${ROUNDS:-4}"); do
    for who in A B; do
        agent=AGENT_$who
        "${!agent}" run --state-dir "$WORK/state-$who" --output none 2>"$WORK/log" &
        pid=$!
        for _ in $(seq 100); do grep -q "sensor-agent ready" "$WORK/log" 2>/dev/null && break; sleep 0.1; done
        sleep 1
        read -r t0 c0 < <(stats)
        with=$(load3)
        read -r t1 c1 < <(stats)
        kill -INT "$pid"; wait "$pid" || true
        without=$(load3)
        echo "round $round $who: program $(( (t1 - t0) / (c1 - c0) )) ns per sys_exit; LOAD $with ms with the agent, $without ms without (load $(cut -d' ' -f1 /proc/loadavg))"
    done
done
