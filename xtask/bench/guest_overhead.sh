#!/usr/bin/env bash
# Overhead of each probe mode on unwatched opens, measured side by side in one run: for each
# mode, PAIRS pairs of `openloop OPENS FILE` with no agent (A) and with the agent attached in
# that mode (B), alternating, on a file of a tmpfs (an unwatched file). Then, the agent still
# attached, a third run with `kernel.bpf_stats_enabled` (which adds its own clock reads, so
# it is not B): the time the kernel spent in the agent's programs per open+close, and its
# share of that run, a figure that does not depend on the wall clock's drift between runs.
# Each run also gives the loop's own CPU time (user + system, what the kernel charged the
# process, the agent's programs run in its context included, other tasks excluded), and its
# ratio B/A beside the wall time's: under the lane's `--icount` that counts the loop's own
# instructions, whatever the agent's threads or the kernel's workers do meanwhile.
# Meant for the VM lane's guests, where the stronger modes load (docs/performance.md "Probe
# modes"):
#   PAIRS=7 cargo xtask vm-test --kernel 6.1 --mode auto --mode tracepoint --bench
# or on any machine as root: bash xtask/bench/guest_overhead.sh (MODES=... to choose).
# Knobs: OPENS (200000), PAIRS (3), MODES ("auto tracepoint"), BASE_AGENT (a baseline build
# measured beside this one); the lane passes OPENS, PAIRS and BASE_AGENT
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

run_loop() { # one openloop run: its wall time and its own CPU time (user + system), in ms
    local TIMEFORMAT='%3R %3U %3S' t
    t=$({ time "$OPENLOOP" "$OPENS" "$FILE" >/dev/null; } 2>&1)
    python3 -c "r, u, s = map(float, '$t'.split()); print(round(r * 1000), round((u + s) * 1000))"
}
ms() { run_loop | cut -d' ' -f1; } # wall time of one openloop run, in ms
prog_stats() { # name, run_time_ns and run_cnt of every loaded program, one per line
    bpftool prog show --json | python3 -c 'import json, sys; [print(p.get("name", "?"), p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in json.load(sys.stdin)]'
}
per_program() { # $1, $2: prog_stats before and after; the programs that ran, ns per open+close
    python3 -c '
import sys
def load(t):
    d = {}
    for line in t.splitlines():
        n, ns, cnt = line.split()
        a = d.setdefault(n, [0, 0]); a[0] += int(ns); a[1] += int(cnt)
    return d
a, b, opens = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
ran = [(n, v[0] - a.get(n, [0, 0])[0], v[1] - a.get(n, [0, 0])[1]) for n, v in b.items()]
print(" ".join(f"{n}={ns / opens:.0f}ns/{cnt / opens:.1f}runs" for n, ns, cnt in sorted(ran, key=lambda r: -r[1]) if cnt))
' "$1" "$2" "$OPENS"
}
sum_ns() { awk '{s += $2} END {print s + 0}' <<<"$1"; }
start_agent() { # $1: mode, $2: agent binary
    "$2" run --state-dir "$WORK/state-$1" --output none --probe-mode "$1" 2>"$WORK/agent.log" &
    AGENT_PID=$!
    for _ in $(seq 1200); do grep -q "sensor-agent ready" "$WORK/agent.log" 2>/dev/null && return; sleep 0.1; done
    echo "agent did not start:"; cat "$WORK/agent.log"; exit 1
}
# After a stop, the kernel frees the programs and maps in the background (RCU, workqueues):
# a pause keeps that work out of the next run (under `--icount` it would count as the loop's).
stop_agent() { kill -INT "$AGENT_PID"; wait "$AGENT_PID" || true; rm -rf "$WORK/state-$1"; sleep 3; }
words() { tr ' ' '\n' <<<"$1" | grep .; }
fastest_ratio() { # $1: the array of runs, $2: the label; the label's least over A's least
    local -n runs=$1
    local a b
    a=$(words "${runs[A]}" | sort -n | head -1)
    b=$(words "${runs[$2]}" | sort -n | head -1)
    echo "$b/$a = $(python3 -c "print(f'{$b/$a:.3f}')")"
}
median() { sort -n | awk '{r[NR]=$1} END {print (NR%2 ? r[(NR+1)/2] : (r[NR/2]+r[NR/2+1])/2)}'; }
declare -A ratios cpu_ratios shares fastest fastest_cpu
measure() { # $1: mode, $2: label, $3: agent binary, $4, $5: A of this pair (wall, CPU; ms)
    local b b_cpu c s0 s1 p0 p1 modes ratio cpu_ratio per_open share
    start_agent "$1" "$3"
    modes=$(grep -o 'probe="[a-z_]*" mode="[a-z]*"' "$WORK/agent.log" | sed 's/probe="//; s/" mode="/=/; s/"//' | tr '\n' ' ')
    read -r b b_cpu <<<"$(run_loop)"
    sysctl -qw kernel.bpf_stats_enabled=1
    s0=$(prog_stats)
    c=$(ms)
    s1=$(prog_stats)
    sysctl -qw kernel.bpf_stats_enabled=0
    stop_agent "$1"
    p0=$(sum_ns "$s0")
    p1=$(sum_ns "$s1")
    # A here-string, not a process substitution: the lane's guests have no /dev/fd.
    read -r ratio cpu_ratio per_open share <<<"$(python3 -c "print(f'{$b/$4:.3f}', f'{$b_cpu/$5:.3f}', f'{($p1-$p0)/$OPENS:.0f}', f'{($p1-$p0)/($c*1e6)*100:.2f}')")"
    ratios[$2]+="$ratio "
    cpu_ratios[$2]+="$cpu_ratio "
    shares[$2]+="$share "
    fastest[$2]+="$b "
    fastest_cpu[$2]+="$b_cpu "
    echo "  $2: B ${b} ms (CPU ${b_cpu} ms), B/A ${ratio}, CPU B/A ${cpu_ratio}; programs ${per_open} ns per open+close, ${share} % of a ${c} ms run ($modes)"
    echo "    per program (per open+close): $(per_program "$s0" "$s1")"
}

# With BASE_AGENT (a baseline build), each pair also measures it beside this build, the
# two in turns (this build first in odd pairs), against the same A.
echo "kernel $(uname -r); $OPENS open+close of an unwatched file; A = no agent, B = agent"
for mode in $MODES; do
    ratios=() cpu_ratios=() shares=() fastest=() fastest_cpu=()
    ms >/dev/null # a warm-up run, not counted (caches; what the run before left to finish)
    for i in $(seq "$PAIRS"); do
        read -r a a_cpu <<<"$(run_loop)"
        fastest[A]+="$a "
        fastest_cpu[A]+="$a_cpu "
        echo "$mode pair $i: A ${a} ms (CPU ${a_cpu} ms)"
        if [ -z "${BASE_AGENT:-}" ]; then
            measure "$mode" agent "$AGENT" "$a" "$a_cpu"
        elif [ $((i % 2)) = 1 ]; then
            measure "$mode" agent "$AGENT" "$a" "$a_cpu"
            measure "$mode" base "$BASE_AGENT" "$a" "$a_cpu"
        else
            measure "$mode" base "$BASE_AGENT" "$a" "$a_cpu"
            measure "$mode" agent "$AGENT" "$a" "$a_cpu"
        fi
    done
    # Another load on the machine (or, under `--icount`, in the guest) only adds to a run, so
    # the fastest runs are the least disturbed: their ratio is printed beside the median.
    for label in "${!ratios[@]}"; do
        echo "$mode $label: B/A ${ratios[$label]}; median $(words "${ratios[$label]}" | median); fastest B / fastest A $(fastest_ratio fastest "$label"); programs' share median $(words "${shares[$label]}" | median) %"
        echo "$mode $label: CPU B/A ${cpu_ratios[$label]}; median $(words "${cpu_ratios[$label]}" | median); least CPU B / least CPU A $(fastest_ratio fastest_cpu "$label")"
    done
done
