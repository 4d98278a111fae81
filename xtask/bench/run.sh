#!/usr/bin/env bash
# Benchmarks for the kernel sensor (docs/performance.md): overhead on unwatched opens,
# a watched-file storm, and idle memory. Run as root on an otherwise idle machine:
#   cargo xtask bench            (builds first)
#   bash xtask/bench/run.sh      (uses the existing release build)
# Knobs: OPENS (default 1000000), RUNS (10), READERS (2), STORM_OPENS (1000000 per reader),
# STORM_RATE (200000 opens/s for the steady storm), DISTINCT_RATE (STORM_RATE) and
# DISTINCT_PER_PROCESS (100 opens per process) for the storm of distinct processes and files.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# AGENT: another build to compare side by side (e.g. the previous commit's).
AGENT=${AGENT:-$ROOT/target/release/sensor-agent}
OPENLOOP=$ROOT/target/release/openloop
OPENS=${OPENS:-1000000}
RUNS=${RUNS:-10}
READERS=${READERS:-2}
STORM_OPENS=${STORM_OPENS:-1000000}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

[ -x "$OPENLOOP" ] || (cd "$ROOT" && cargo build --release -p sensor-tests --bin openloop)
command -v hyperfine >/dev/null || { echo "hyperfine missing: run cargo xtask setup"; exit 1; }

# A storm of one process re-opening one file is folded by default (docs/probes.md, "Floods"):
# the pipeline storms below send every open, as before folding existed; 2c shows the default.
printf '[agent]\nfold_window = "off"\nbudget_per_second = 0\n' > "$WORK/every-open.toml"
start_agent() { # $1: log file, $2: more arguments for `run`
    # shellcheck disable=SC2086
    "$AGENT" run --state-dir "$WORK/state" --output none ${2:-} 2>"$1" &
    AGENT_PID=$!
    for _ in $(seq 100); do grep -q "sensor-agent ready" "$1" 2>/dev/null && return; sleep 0.1; done
    echo "agent did not start:"; cat "$1"; exit 1
}
stop_agent() { kill -INT "$AGENT_PID"; wait "$AGENT_PID" || true; }
# ONLY: the sections to run, e.g. ONLY="2a 2d" (default: all).
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
mean() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['results'][0]['mean'])" "$1"; }

if want 1; then
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
fi

storm() { # $1: readers, $2: opens per reader, $3: opens/s per reader (0: flat out), $4: run
    # arguments, $5: what to open (default /etc/shadow; a directory: its files in turn),
    # $6: opens per process (default: one process per reader)
    start_agent "$WORK/storm.log" "${4---config $WORK/every-open.toml}"
    local t0 t1
    t0=$(date +%s%N)
    for r in $(seq "$1"); do
        # shellcheck disable=SC2086
        "$OPENLOOP" "$2" "${5:-/etc/shadow}" "$3" ${6:-} > "$WORK/reader.$r" &
    done
    wait $(jobs -p | grep -v "^$AGENT_PID$")
    t1=$(date +%s%N)
    sleep 3 # let the agent drain what it has
    stop_agent
    python3 - "$WORK/storm.log" "$1" "$2" "$t0" "$t1" "$WORK"/reader.* <<'PY'
import re, sys
log, readers, opens, t0, t1, *reader_files = sys.argv[1:]
readers, opens, t0, t1 = int(readers), int(opens), int(t0), int(t1)
m = re.findall(r"stopped kernel_events=(\d+) events_out=(\d+) lost=(\d+) folded=(\d+)", open(log).read())
kernel, out, lost, folded = map(int, m[-1]) if m else (0, 0, 0, 0)
want = readers * opens
slowest = max(int(open(f).read()) for f in reader_files) / 1e9
print(f"  opens {want:,} in {(t1 - t0) / 1e9:.2f} s ({want / ((t1 - t0) / 1e9):,.0f}/s); slowest reader {slowest:.2f} s")
print(f"  events out {out:,} (of which repeats), opens folded into repeats {folded:,}, lost (counted in loss events) {lost:,}")
print(f"  out + folded + lost - opens = {out + folded + lost - want:+,} (other processes' opens of the file; each repeat event is counted once in out)")
PY
    python3 - "$WORK/state" <<'PY'
import os, sqlite3, sys
state = sys.argv[1]
records = sqlite3.connect(f"file:{state}/log.db?mode=ro", uri=True).execute("SELECT SUM(count) FROM batches").fetchone()[0]
size = sum(os.path.getsize(os.path.join(state, f)) for f in os.listdir(state) if f.startswith("log.db"))
print(f"  store (all storms so far): {records:,} records in {size:,} bytes = {size / records:.0f} bytes/record")
PY
}
STORM_RATE=${STORM_RATE:-200000}
if want 2a; then
    echo "== 2a. Watched-file storm at a steady ${STORM_RATE} events/s: 1 reader, ${STORM_OPENS} opens of /etc/shadow"
    storm 1 "$STORM_OPENS" "$STORM_RATE"
fi
if want 2b; then
    echo "== 2b. Flat-out storm: $READERS readers x $STORM_OPENS opens of /etc/shadow (loss, if any, must be accounted)"
    storm "$READERS" "$STORM_OPENS" 0
    echo "   each reader alone, without the agent: $(( $("$OPENLOOP" "$STORM_OPENS" /etc/shadow) / 1000000 )) ms"
fi
if want 2c; then
    echo "== 2c. The same flat-out storm with the default settings: each reader's repeats folded"
    storm "$READERS" "$STORM_OPENS" 0 ""
fi

DISTINCT_RATE=${DISTINCT_RATE:-$STORM_RATE}
DISTINCT_PER_PROCESS=${DISTINCT_PER_PROCESS:-100}
if want 2d; then
    echo "== 2d. Distinct storm at ${DISTINCT_RATE} events/s: ${STORM_OPENS} opens over 256 watched files, a new process every ${DISTINCT_PER_PROCESS} opens (nothing to fold)"
    mkdir -p "$WORK/distinct"
    for f in $(seq -w 0 255); do echo "secret $f" > "$WORK/distinct/key$f"; done
    chmod 600 "$WORK/distinct"/key*
    { cat "$WORK/every-open.toml"; printf '[[watch]]\npath = "%s/distinct/key*"\nkind = "storm"\n' "$WORK"; } > "$WORK/distinct.toml"
    storm 1 "$STORM_OPENS" "$DISTINCT_RATE" "--config $WORK/distinct.toml" "$WORK/distinct" "$DISTINCT_PER_PROCESS"
fi

if want 3; then
    echo "== 3. Idle memory with the default watch set"
    start_agent "$WORK/agent3.log"
    sleep 10
    grep -E "VmRSS|VmHWM" /proc/"$AGENT_PID"/status
    stop_agent
fi
