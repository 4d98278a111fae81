#!/usr/bin/env bash
# Overhead of each probe mode on unwatched opens, measured side by side in one run: for each
# mode, PAIRS pairs of `openloop OPENS FILE` with no agent (A) and with the agent attached in
# that mode (B), alternating, on a file of a tmpfs (an unwatched file). Meant for the VM lane's
# guests, where the stronger modes load (docs/performance.md "Probe modes"):
#   cargo xtask vm-test --kernel 6.1 --mode lsm --mode tracepoint --bench
# or on any machine as root: bash xtask/bench/guest_overhead.sh (MODES=... to choose).
# Knobs: OPENS (200000), PAIRS (3), MODES ("auto tracepoint").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGENT=${AGENT:-$ROOT/target/release/sensor-agent}
OPENLOOP=$ROOT/target/release/openloop
OPENS=${OPENS:-200000}
PAIRS=${PAIRS:-3}
MODES=${MODES:-auto tracepoint}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
FILE=$(mktemp -p /dev/shm)

ms() { # wall time of one openloop run, in ms
    local s e
    s=$(date +%s%N)
    "$OPENLOOP" "$OPENS" "$FILE" >/dev/null
    e=$(date +%s%N)
    echo $(((e - s) / 1000000))
}
start_agent() { # $1: mode
    "$AGENT" run --state-dir "$WORK/state-$1" --output none --probe-mode "$1" 2>"$WORK/agent.log" &
    AGENT_PID=$!
    for _ in $(seq 1200); do grep -q "sensor-agent ready" "$WORK/agent.log" 2>/dev/null && return; sleep 0.1; done
    echo "agent did not start:"; cat "$WORK/agent.log"; exit 1
}
stop_agent() { kill -INT "$AGENT_PID"; wait "$AGENT_PID" || true; }

echo "kernel $(uname -r); $OPENS open+close of an unwatched file; A = no agent, B = agent"
for mode in $MODES; do
    ratios=()
    for i in $(seq "$PAIRS"); do
        a=$(ms)
        start_agent "$mode"
        modes=$(grep -o 'probe="[a-z_]*" mode="[a-z]*"' "$WORK/agent.log" | sed 's/probe="//; s/" mode="/=/; s/"//' | tr '\n' ' ')
        b=$(ms)
        stop_agent
        ratio=$(python3 -c "print(f'{$b/$a:.3f}')")
        ratios+=("$ratio")
        echo "$mode pair $i: A ${a} ms, B ${b} ms, B/A ${ratio} ($modes)"
    done
    echo "$mode: B/A ${ratios[*]}"
done
