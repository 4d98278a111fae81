#!/usr/bin/env bash
# Benchmarks for the kernel sensor (docs/performance.md): overhead on unwatched opens,
# a watched-file storm, and idle memory. Run as root on an otherwise idle machine:
#   cargo xtask bench            (builds first)
#   bash xtask/bench/run.sh      (uses the existing release build)
# Knobs: OPENS (default 1000000), RUNS (10), READERS (2), STORM_OPENS (500000 per reader).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGENT=$ROOT/target/release/sensor-agent
OPENLOOP=$ROOT/target/release/openloop
OPENS=${OPENS:-1000000}
RUNS=${RUNS:-10}
READERS=${READERS:-2}
STORM_OPENS=${STORM_OPENS:-500000}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

[ -x "$OPENLOOP" ] || (cd "$ROOT" && cargo build --release -p sensor-tests --bin openloop)
command -v hyperfine >/dev/null || { echo "hyperfine missing: run cargo xtask setup"; exit 1; }

start_agent() { # $1: log file
    "$AGENT" run --state-dir "$WORK/state" --output none 2>"$1" &
    AGENT_PID=$!
    for _ in $(seq 100); do grep -q "sensor-agent ready" "$1" 2>/dev/null && return; sleep 0.1; done
    echo "agent did not start:"; cat "$1"; exit 1
}
stop_agent() { kill -INT "$AGENT_PID"; wait "$AGENT_PID" || true; }
mean() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['results'][0]['mean'])" "$1"; }

echo "== 1. Overhead on unwatched opens: $OPENS open+close of /etc/hostname, $RUNS runs"
hyperfine -N --warmup 2 --runs "$RUNS" --export-json "$WORK/off.json" "$OPENLOOP $OPENS /etc/hostname" >/dev/null
start_agent "$WORK/agent1.log"
hyperfine -N --warmup 2 --runs "$RUNS" --export-json "$WORK/on.json" "$OPENLOOP $OPENS /etc/hostname" >/dev/null
stop_agent
python3 - "$WORK/off.json" "$WORK/on.json" <<'PY'
import json, sys
off, on = (json.load(open(p))["results"][0] for p in sys.argv[1:])
print(f"without agent: {off['mean']:.3f} s ± {off['stddev']:.3f}")
print(f"with agent:    {on['mean']:.3f} s ± {on['stddev']:.3f}")
print(f"overhead:      {100 * (on['mean'] / off['mean'] - 1):+.1f} %  (target: at most +3 %)")
PY

echo "== 2. Watched-file storm: $READERS readers x $STORM_OPENS opens of /etc/shadow"
alone=0
for r in $(seq "$READERS"); do "$OPENLOOP" "$STORM_OPENS" /etc/shadow > "$WORK/alone.$r" & done; wait
alone=$(cat "$WORK"/alone.* | sort -n | tail -1)
start_agent "$WORK/agent2.log"
t0=$(date +%s%N)
for r in $(seq "$READERS"); do "$OPENLOOP" "$STORM_OPENS" /etc/shadow > "$WORK/storm.$r" & done
wait $(jobs -p | grep -v "^$AGENT_PID$")
t1=$(date +%s%N)
# The agent has drained the storm when its counter stops moving.
sleep 2
stop_agent
with=$(cat "$WORK"/storm.* | sort -n | tail -1)
python3 - "$WORK/agent2.log" "$READERS" "$STORM_OPENS" "$alone" "$with" "$t0" "$t1" <<'PY'
import re, sys
log, readers, opens, alone, with_, t0, t1 = sys.argv[1], *map(int, sys.argv[2:])
text = open(log).read()
m = re.findall(r"stopped.*?kernel_events\S*?(\d+).*?events_out\S*?(\d+).*?lost\S*?(\d+)", text)
kernel, out, lost = map(int, m[-1]) if m else (0, 0, 0)
want = readers * opens
storm_s = (t1 - t0) / 1e9
print(f"opens issued:   {want}")
print(f"events out:     {out} (kernel records incl. exec/fork/exit: {kernel}), lost: {lost}")
print(f"storm lasted:   {storm_s:.2f} s -> {want / storm_s:,.0f} events/s decoded, enriched and logged")
print(f"readers' time:  {alone / 1e9:.2f} s alone, {with_ / 1e9:.2f} s with the agent (slowest reader)")
PY

echo "== 3. Idle memory with the default watch set"
start_agent "$WORK/agent3.log"
sleep 10
grep -E "VmRSS|VmHWM" /proc/"$AGENT_PID"/status
stop_agent
