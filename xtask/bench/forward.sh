#!/usr/bin/env bash
# Forwarding cost and exposure window (docs/performance.md, "Forwarding cost", "Exposure
# window"). Run as root after `cargo xtask build`:
#   bash xtask/bench/forward.sh
# It makes a throw-away PKI (collector-harness's `pki` example), then alternates the real
# agent with `[forward]` on (to a real `sensor-collector serve`, SQLite store, mutual TLS on
# loopback) and off, PAIRS times (on first, then off), each under the same watched-file storm
# (`openloop`, as xtask/bench/run.sh): events out (decoded, enriched, chained, stored), lost,
# the agent's and the collector's CPU, and, with forwarding, how far the collector got.
# Then the agent forwards IDLE seconds with no load (heartbeat batches every second).
# Exposure window of each forwarded batch: its sealed time (the signed header's wall time,
# taken as the agent's commit begins) to the collector's storing of it (`received_ns`, taken
# in the collector's transaction, just before its commit; the ack follows that commit), both
# read from the collector's store after the run; same machine, same clock.
# Knobs: PAIRS (5), READERS (2), STORM_OPENS (1000000 per reader), STORM_RATE (0: flat out;
# else opens/s per reader), IDLE (60 s), AGENT and COLLECTOR (target/release/...), and
# AGENT_BASE and/or COLLECTOR_BASE: other builds to compare with; each pair then also runs
# them with forwarding on, as "base" (on, base, off), and the idle run is made with both.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGENT=${AGENT:-$ROOT/target/release/sensor-agent}
COLLECTOR=${COLLECTOR:-$ROOT/target/release/sensor-collector}
BASE=${AGENT_BASE:-}${COLLECTOR_BASE:-}
AGENT_BASE=${AGENT_BASE:-$AGENT}
COLLECTOR_BASE=${COLLECTOR_BASE:-$COLLECTOR}
OPENLOOP=$ROOT/target/release/openloop
PKI=$ROOT/target/release/examples/pki
PAIRS=${PAIRS:-5}
READERS=${READERS:-2}
STORM_OPENS=${STORM_OPENS:-1000000}
STORM_RATE=${STORM_RATE:-0}
IDLE=${IDLE:-60}
HOST=f0f0f0f000112233445566778899aabb
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

[ -x "$AGENT" ] && [ -x "$COLLECTOR" ] || { echo "run cargo xtask build first"; exit 1; }
[ -x "$OPENLOOP" ] || (cd "$ROOT" && cargo build --release -p sensor-tests --bin openloop)
[ -x "$PKI" ] || (cd "$ROOT" && cargo build --release -p collector-harness --example pki)
"$PKI" "$WORK/pki" "$HOST"

start_collector() { # $1: binary, $2: its directory; sets COLLECTOR_PID, COLLECTOR_ADDR
    local bin=$1; shift
    mkdir -p "$1"
    cat > "$1/collector.toml" <<EOF
listen = "127.0.0.1:0"
store = "sqlite:$1/collector.db"
metrics_listen = "off"
enrollment = "first_contact"
[tls]
cert = "$WORK/pki/collector.crt"
key = "$WORK/pki/collector.key"
client_ca = "$WORK/pki/ca.crt"
EOF
    RUST_LOG=info "$bin" serve --config "$1/collector.toml" 2>"$1/log" &
    COLLECTOR_PID=$!
    for _ in $(seq 100); do
        COLLECTOR_ADDR=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$1/log" | head -1)
        [ -n "$COLLECTOR_ADDR" ] && return
        sleep 0.1
    done
    echo "collector did not start:"; cat "$1/log"; exit 1
}

start_agent() { # $1: binary, $2: run directory, $3: on|off; sets AGENT_PID
    mkdir -p "$2/state"
    echo "$HOST" > "$2/state/host-id"
    # Every open an event (neither folded nor budgeted): the storm is load for the pipeline.
    echo "[agent]
metrics_listen = \"off\"
fold_window = \"off\"
budget_per_second = 0" > "$2/agent.toml"
    if [ "$3" = on ]; then
        echo "[forward]
collectors = [\"$COLLECTOR_ADDR\"]
client_cert = \"$WORK/pki/host.crt\"
client_key = \"$WORK/pki/host.key\"
ca = \"$WORK/pki/ca.crt\"
server_name = \"127.0.0.1\"" >> "$2/agent.toml"
    fi
    "$1" run --config "$2/agent.toml" --state-dir "$2/state" --output none 2>"$2/agent.log" &
    AGENT_PID=$!
    for _ in $(seq 200); do grep -q "sensor-agent ready" "$2/agent.log" 2>/dev/null && return; sleep 0.1; done
    echo "agent did not start:"; cat "$2/agent.log"; exit 1
}

# user+system ticks of a process, and per thread name of the agent (summed over threads of
# the same name), as "name ticks" lines.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
thread_ticks() {
    for t in /proc/"$1"/task/*; do
        awk '{ n = $0; sub(/^[0-9]+ \(/, "", n); sub(/\) .*$/, "", n); gsub(/ /, "_", n);
               r = $0; sub(/^.*\) /, "", r); split(r, f, " "); print n, f[12] + f[13] }' "$t/stat"
    done | awk '{ s[$1] += $2 } END { for (n in s) print n, s[n] }' | sort
}

behind() { # batches the agent sealed that the collector does not hold yet
    python3 - "$1" <<'PY'
import sqlite3, sys
d = sys.argv[1]
try:
    sealed = sqlite3.connect(f"file:{d}/state/log.db?mode=ro", uri=True).execute("SELECT MAX(number) FROM batches").fetchone()[0] or 0
    held = sqlite3.connect(f"file:{d}/collector/collector.db?mode=ro", uri=True).execute("SELECT MAX(number) FROM batches").fetchone()[0] or 0
    print(sealed - held)
except sqlite3.Error:
    print(1)
PY
}

run_storm() { # $1: label (on|off|base), $2: agent binary, $3: run directory, $4: collector binary
    local dir=$3 mode=on t0 t1 a0 c0=0
    [ "$1" = off ] && mode=off
    if [ "$mode" = on ]; then start_collector "$4" "$dir/collector"; fi
    start_agent "$2" "$dir" "$mode"
    sleep 2
    a0=$(cpu_ticks "$AGENT_PID")
    thread_ticks "$AGENT_PID" > "$dir/threads0"
    [ "$mode" = on ] && c0=$(cpu_ticks "$COLLECTOR_PID")
    t0=$(date +%s%N)
    local readers=()
    for r in $(seq "$READERS"); do
        if [ "$STORM_RATE" = 0 ]; then "$OPENLOOP" "$STORM_OPENS" /etc/shadow > "$dir/reader.$r" &
        else "$OPENLOOP" "$STORM_OPENS" /etc/shadow "$STORM_RATE" > "$dir/reader.$r" & fi
        readers+=($!)
    done
    wait "${readers[@]}"
    t1=$(date +%s%N)
    sleep 3 # the agent drains what it has; the forward stage catches up
    local a1 c1=0
    a1=$(cpu_ticks "$AGENT_PID")
    thread_ticks "$AGENT_PID" > "$dir/threads1"
    [ "$mode" = on ] && c1=$(cpu_ticks "$COLLECTOR_PID")
    local lag=- caught=-
    if [ "$mode" = on ]; then # let forwarding catch up (at most 60 s), so every batch counts
        lag=$(behind "$dir")
        local w0=$(date +%s%N)
        for _ in $(seq 600); do [ "$(behind "$dir")" -le 0 ] && break; sleep 0.1; done
        caught=$(( ($(date +%s%N) - w0) / 1000000 ))
    fi
    kill -INT "$AGENT_PID"; wait "$AGENT_PID" || true
    if [ "$mode" = on ]; then sleep 1; kill -INT "$COLLECTOR_PID"; wait "$COLLECTOR_PID" || true; fi
    python3 - "$1" "$dir" "$t0" "$t1" "$a0" "$a1" "$c0" "$c1" "$lag" "$caught" <<'PY' | tee -a "$WORK/rows"
import os, re, sqlite3, sys
label, d, t0, t1, a0, a1, c0, c1, lag, caught = sys.argv[1:]
t0, t1 = int(t0), int(t1)
secs = (t1 - t0) / 1e9
m = re.findall(r"stopped kernel_events=(\d+) events_out=(\d+) lost=(\d+)", open(f"{d}/agent.log").read())
kernel, out, lost = map(int, m[-1]) if m else (0, 0, 0)
db = sqlite3.connect(f"file:{d}/state/log.db?mode=ro", uri=True)
stored, last = db.execute("SELECT SUM(count), MAX(number) FROM batches").fetchone()
held = "-"
if os.path.exists(f"{d}/collector/collector.db"):
    c = sqlite3.connect(f"file:{d}/collector/collector.db?mode=ro", uri=True)
    n, top = c.execute("SELECT COUNT(*), MAX(number) FROM batches").fetchone()
    held = f"{top}/{last}"
    with open(f"{d}/exposure", "w") as f:
        for (e,) in c.execute("SELECT received_ns - wall_ns FROM batches WHERE wall_ns BETWEEN ? AND ?", (t0, t1)):
            print(e, file=f)
def threads(p):
    return dict((l.split()[0], int(l.split()[1])) for l in open(p))
th0, th1 = threads(f"{d}/threads0"), threads(f"{d}/threads1")
busy = sorted(((th1[k] - th0.get(k, 0), k) for k in th1), reverse=True)
busy = " ".join(f"{k}={v / 100:.1f}" for v, k in busy[:5] if v > 0)
print(f"{label:4} out {out:>9,} lost {lost:>9,} in {secs:5.2f} s = {out / secs:>9,.0f}/s durable"
      f" | stored {stored:>9,} | cpu s: agent {(int(a1) - int(a0)) / 100:5.2f}"
      f" ({(int(a1) - int(a0)) * 10 / max(out, 1) * 1e3:.1f} µs/event) collector {(int(c1) - int(c0)) / 100:5.2f}"
      f" | batches behind 3 s after the storm {lag}, caught up {caught} ms later, held/sealed at stop {held}"
      f" | agent threads (cpu s) {busy}")
PY
}

pct() { # exposure files -> p50 p99 max in ms
    python3 - "$@" <<'PY'
import sys
v = sorted(int(x) for p in sys.argv[1:] for x in open(p))
if not v:
    print("no batches"); sys.exit()
q = lambda f: v[min(len(v) - 1, int(f * len(v)))] / 1e6
print(f"{len(v)} batches: p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {v[-1] / 1e6:.1f} ms")
PY
}

echo "== $(date -u +%FT%TZ) $(nproc) cores, load: $(uptime | sed 's/.*load average: //')"
echo "== 1. Forwarding cost: $PAIRS pairs, forwarding on then off, each $READERS reader(s) x $STORM_OPENS opens of /etc/shadow (rate ${STORM_RATE}/s per reader, 0: flat out)"
for i in $(seq "$PAIRS"); do
    run_storm on "$AGENT" "$WORK/on.$i" "$COLLECTOR"
    [ -n "$BASE" ] && run_storm base "$AGENT_BASE" "$WORK/base.$i" "$COLLECTOR_BASE"
    run_storm off "$AGENT" "$WORK/off.$i"
    echo "   load: $(uptime | sed 's/.*load average: //')"
done
python3 - "$WORK/rows" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, out = line.split()[0], int(line.split()[2].replace(",", ""))
    rows.setdefault(label, []).append(out)
med = {k: statistics.median(v) for k, v in rows.items()}
for k, v in med.items():
    print(f"   median events out, {k}: {v:,.0f}")
if "on" in med and "off" in med:
    print(f"   on / off: {med['on'] / med['off']:.3f} (target: at least 0.90)")
if "base" in med and "off" in med:
    print(f"   base / off: {med['base'] / med['off']:.3f}")
PY
echo "   exposure during the storms (batches sealed while the readers ran), forwarding on: $(pct "$WORK"/on.*/exposure)"
[ -n "$BASE" ] && echo "   same, base: $(pct "$WORK"/base.*/exposure)"

echo "== 2. Exposure window at idle: $IDLE s forwarding, no load; load: $(uptime | sed 's/.*load average: //')"
idle() { # $1: agent binary, $2: directory, $3: collector binary
    start_collector "$3" "$2/collector"
    start_agent "$1" "$2" on
    local t0 t1
    sleep 2
    t0=$(date +%s%N)
    sleep "$IDLE"
    t1=$(date +%s%N)
    kill -INT "$AGENT_PID"; wait "$AGENT_PID" || true
    sleep 1; kill -INT "$COLLECTOR_PID"; wait "$COLLECTOR_PID" || true
    python3 - "$2" "$t0" "$t1" <<'PY'
import sqlite3, sys
d, t0, t1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = sqlite3.connect(f"file:{d}/collector/collector.db?mode=ro", uri=True)
with open(f"{d}/exposure", "w") as f:
    for (e,) in c.execute("SELECT received_ns - wall_ns FROM batches WHERE wall_ns BETWEEN ? AND ?", (t0, t1)):
        print(e, file=f)
PY
    echo "   $(basename "$2"): $(pct "$2/exposure")"
}
idle "$AGENT" "$WORK/idle" "$COLLECTOR"
[ -n "$BASE" ] && idle "$AGENT_BASE" "$WORK/idle-base" "$COLLECTOR_BASE"
echo "== done, load: $(uptime | sed 's/.*load average: //')"
