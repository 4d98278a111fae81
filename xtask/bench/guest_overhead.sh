#!/usr/bin/env bash
# Overhead of each probe mode on unwatched opens, measured side by side in one run: for each
# mode, PAIRS pairs of `openloop OPENS FILE` with no agent (A) and with the agent attached in
# that mode (B), alternating, on a file of a tmpfs (an unwatched file). Then, the agent still
# attached, a third run with `kernel.bpf_stats_enabled` (which adds its own clock reads, so
# it is not B): the time the kernel spent in the agent's programs per open+close, and its
# share of that run, a figure that does not depend on the wall clock's drift between runs.
# Meant for the VM lane's guests, where the stronger modes load (docs/performance.md "Probe
# modes"):
#   PAIRS=7 cargo xtask vm-test --kernel 6.1 --mode auto --mode tracepoint --bench
# or on any machine as root: bash xtask/bench/guest_overhead.sh (MODES=... to choose).
# Knobs: OPENS (200000), PAIRS (3), MODES ("auto tracepoint"); the lane passes OPENS and PAIRS
# on from the host's environment.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGENT=${AGENT:-$ROOT/target/release/sensor-agent}
OPENLOOP=$ROOT/target/release/openloop
OPENS=${OPENS:-200000}
PAIRS=${PAIRS:-3}
MODES=${MODES:-auto tracepoint}
WORK=$(mktemp -d)
trap 'sysctl -qw kernel.bpf_stats_enabled=0; kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
FILE=$(mktemp -p /dev/shm)

ms() { # wall time of one openloop run, in ms
    local s e
    s=$(date +%s%N)
    "$OPENLOOP" "$OPENS" "$FILE" >/dev/null
    e=$(date +%s%N)
    echo $(((e - s) / 1000000))
}
prog_ns() { # run_time_ns of every loaded program, summed
    bpftool prog show --json | python3 -c 'import json, sys; print(sum(p.get("run_time_ns", 0) for p in json.load(sys.stdin)))'
}
start_agent() { # $1: mode
    "$AGENT" run --state-dir "$WORK/state-$1" --output none --probe-mode "$1" 2>"$WORK/agent.log" &
    AGENT_PID=$!
    for _ in $(seq 1200); do grep -q "sensor-agent ready" "$WORK/agent.log" 2>/dev/null && return; sleep 0.1; done
    echo "agent did not start:"; cat "$WORK/agent.log"; exit 1
}
stop_agent() { kill -INT "$AGENT_PID"; wait "$AGENT_PID" || true; }
median() { sort -n | awk '{r[NR]=$1} END {print (NR%2 ? r[(NR+1)/2] : (r[NR/2]+r[NR/2+1])/2)}'; }

echo "kernel $(uname -r); $OPENS open+close of an unwatched file; A = no agent, B = agent"
for mode in $MODES; do
    ratios=()
    shares=()
    for i in $(seq "$PAIRS"); do
        a=$(ms)
        start_agent "$mode"
        modes=$(grep -o 'probe="[a-z_]*" mode="[a-z]*"' "$WORK/agent.log" | sed 's/probe="//; s/" mode="/=/; s/"//' | tr '\n' ' ')
        b=$(ms)
        sysctl -qw kernel.bpf_stats_enabled=1
        p0=$(prog_ns)
        c=$(ms)
        p1=$(prog_ns)
        sysctl -qw kernel.bpf_stats_enabled=0
        stop_agent
        # A here-string, not a process substitution: the lane's guests have no /dev/fd.
        read -r ratio per_open share <<<"$(python3 -c "print(f'{$b/$a:.3f}', f'{($p1-$p0)/$OPENS:.0f}', f'{($p1-$p0)/($c*1e6)*100:.2f}')")"
        ratios+=("$ratio")
        shares+=("$share")
        echo "$mode pair $i: A ${a} ms, B ${b} ms, B/A ${ratio}; programs ${per_open} ns per open+close, ${share} % of a ${c} ms run ($modes)"
    done
    echo "$mode: B/A ${ratios[*]}; median $(printf '%s\n' "${ratios[@]}" | median); programs' share median $(printf '%s\n' "${shares[@]}" | median) %"
done
