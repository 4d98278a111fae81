//! Simulated fleet against one real `sensor-collector serve` (docs/performance.md, "Simulated
//! fleet"): many hosts, one mutual-TLS session each, each sending one small signed heartbeat
//! batch per second and timing each batch from its send to its acknowledgement.
//!
//! Before the clock, every simulated host gets a real signed log of its own: the agent's
//! `LogWriter` (its own host id and Ed25519 key, an `EpochStart` batch, then batches of
//! `RECORDS_PER_BATCH` credential-read events each sealed by `seal`), written into a
//! directory on tmpfs (`/dev/shm` when present; its fsyncs cost nothing there, the bytes and
//! signatures are the agent's own) by one thread per core, read back from the store's outbox
//! as the forwarder reads it, and the directory removed. Each host gets a client certificate
//! naming it (`Pki::host`). The collector verifies and stores every batch as it would an
//! agent's; nothing is faked or unsigned.
//!
//! The ramp: for each N in the list, the hosts not yet running connect (at most
//! `CONNECTING` handshakes in flight), then all N send one batch per second. Host `i` sends
//! at `phase_i = frac(i * 0.618…)` of each second after a common origin, so any number of
//! hosts is spread evenly over the second: a steady rate, no thundering herd. After
//! `WARMUP`, each step is measured for SECONDS: batches acknowledged per second, send→ack
//! latency percentiles, how late sends ran behind their schedule (a host sends its next batch
//! only once the previous one is answered), refusals and errors, and from /proc the CPU of
//! the collector (and of its ingest and runtime threads), of this simulator and of
//! PostgreSQL, the collector's RSS, and the disk's flushes. Simulator, collector and
//! PostgreSQL share the machine's cores.
//!
//! ```text
//! cargo build --release -p sensor-collector
//! cargo run --release -p sensor-collector --example fleet -- [sqlite|postgres|both] [N,N,...] [SECONDS]
//! ```
//! (defaults: `both 250,500,1000,2000 20`; `HEARTBEAT_TIMEOUT=1h` in the environment sets the
//! collector's `heartbeat_timeout`, default 5 s).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use collector_harness::{CollectorProcess, Pki};
use rustls::ClientConfig;
use sensor_forward::client::{Answer, Session};
use sensor_forward::tls::client_config;
use sensor_log::forward::{BatchMessage, Hello};
use sensor_log::{hex, Body, Timestamp};
use sensor_store::{LogWriter, WriterOptions};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};

/// Events in each heartbeat batch.
const RECORDS_PER_BATCH: usize = 4;
/// Between the last connection of a step and its measurement.
const WARMUP: Duration = Duration::from_secs(3);
/// Seconds of batches each host holds per step for its connect phase, besides WARMUP and
/// SECONDS.
const CONNECT_ALLOWANCE: usize = 20;
/// Handshakes in flight at once.
const CONNECTING: usize = 256;
/// Longest wait for a step's hosts to connect.
const CONNECT_WAIT: Duration = Duration::from_secs(120);

struct HostLog {
    id: [u8; 16],
    key: [u8; 32],
    tls: Arc<ClientConfig>,
    batches: Vec<BatchMessage>,
}

/// A host's id, public key and batches.
type Log = ([u8; 16], [u8; 32], Vec<BatchMessage>);

/// One acknowledged batch.
struct Sample {
    acked: Instant,
    latency: Duration,
    /// How long after its scheduled second the batch was sent.
    late: Duration,
}

#[derive(Default)]
struct Counters {
    connect_failed: AtomicU64,
    refused: AtomicU64,
    session_errors: AtomicU64,
    exhausted: AtomicU64,
}

struct Row {
    hosts: usize,
    connected: usize,
    connect_s: f64,
    acked_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    late_p99_ms: f64,
    refused: u64,
    errors: u64,
    collector_cpu: f64,
    ingest_cpu: f64,
    /// Runnable but waiting for a CPU.
    ingest_runq: f64,
    ingest_threads: usize,
    runtime_cpu: f64,
    simulator_cpu: f64,
    postgres_cpu: Option<f64>,
    rss_mb: f64,
    flushes_per_s: Option<f64>,
    load: String,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "both".into());
    let steps: Vec<usize> = args.next().map_or(vec![250, 500, 1000, 2000], |a| {
        a.split(',').map(|n| n.parse().expect("N,N,...")).collect()
    });
    let seconds: u64 = args.next().map_or(20, |a| a.parse().expect("SECONDS"));
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "the host counts must grow"
    );
    let stores: Vec<&str> = match which.as_str() {
        "both" => vec!["sqlite", "postgres"],
        "sqlite" | "postgres" => vec![which.as_str()],
        other => panic!("{other}: want sqlite, postgres or both"),
    };
    raise_nofile();

    let pki = Pki::new();
    let started = std::time::Instant::now();
    let hosts = Arc::new(make_fleet(&pki, &steps, seconds as usize));
    let total: usize = hosts.iter().map(|h| h.batches.len()).sum();
    println!(
        "fleet: {} hosts, {total} signed batches of {RECORDS_PER_BATCH} events, made in {:.1} s",
        hosts.len(),
        started.elapsed().as_secs_f64()
    );

    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/sensor-collector");
    let mut tables = Vec::new();
    for store in stores {
        let rows = run(store, &binary, &pki, &hosts, &steps, seconds);
        tables.push((store, rows));
    }
    for (store, rows) in &tables {
        print_table(store, rows, seconds);
    }
}

/// Raises this process's soft limit on open files to its hard limit; the collector, started
/// as a child, inherits it.
fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).expect("raise RLIMIT_NOFILE");
    println!(
        "RLIMIT_NOFILE of the simulator (inherited by the collector): {:?}",
        limit.current
    );
}

/// Every host's log, certificate and TLS configuration. Host `i` joins at the first step
/// whose N exceeds `i` and holds batches for every step from there on.
fn make_fleet(pki: &Pki, steps: &[usize], seconds: usize) -> Vec<HostLog> {
    let max = *steps.last().expect("at least one step");
    let per_step = seconds + WARMUP.as_secs() as usize + CONNECT_ALLOWANCE;
    let batches_of = |i: usize| {
        let joins = steps.iter().position(|&n| i < n).expect("a step");
        (steps.len() - joins) * per_step
    };
    let root = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let next = AtomicUsize::new(0);
    let logs: Mutex<Vec<Option<Log>>> = Mutex::new((0..max).map(|_| None).collect());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max {
                    break;
                }
                let log = write_log(&root, batches_of(i));
                logs.lock().expect("logs")[i] = Some(log);
            });
        }
    });
    logs.into_inner()
        .expect("logs")
        .into_iter()
        .map(|log| {
            let (id, key, batches) = log.expect("written");
            let cert = pki.host(&hex::encode(id));
            let tls = client_config(&cert.cert, &cert.key, &pki.ca).expect("tls");
            HostLog {
                id,
                key,
                tls,
                batches,
            }
        })
        .collect()
}

/// One host's real signed log of `batches` batches (the `EpochStart` batch included), read
/// back from its outbox; the directory is removed.
fn write_log(root: &Path, batches: usize) -> Log {
    let dir = tempfile::tempdir_in(root).expect("tempdir");
    let mut writer = LogWriter::open(dir.path(), WriterOptions::default()).expect("open log");
    let Body::Event(event) = sensor_log::vectors::records()[1].body.clone() else {
        panic!("vector record 2 is an event")
    };
    for _ in 1..batches {
        for _ in 0..RECORDS_PER_BATCH {
            let now = Timestamp::now();
            writer
                .append(event.clone(), now.wall_ns, now.mono_ns)
                .expect("append");
        }
        writer.seal(Timestamp::now()).expect("seal");
    }
    drop(writer);
    let (host, key, log) = collector_harness::outbox(dir.path());
    (host, key.to_bytes(), log)
}

/// The ramp against a fresh collector on `store`.
fn run(
    store: &str,
    binary: &Path,
    pki: &Pki,
    hosts: &Arc<Vec<HostLog>>,
    steps: &[usize],
    seconds: u64,
) -> Vec<Row> {
    let dir = tempfile::tempdir().expect("tempdir");
    let max = *steps.last().expect("a step");
    // One session per host; the default (10,000) would do, the limit is set to say so.
    // HEARTBEAT_TIMEOUT=1h makes the silence sweep (every half timeout) rare, to compare.
    let timeout = std::env::var("HEARTBEAT_TIMEOUT")
        .map_or(String::new(), |t| format!("heartbeat_timeout = \"{t}\"\n"));
    let extra = format!(
        "enrollment = \"first_contact\"\n{timeout}[limits]\nmax_sessions = {}\n",
        2 * max
    );
    let pg;
    let (url, postmaster) = if store == "sqlite" {
        (
            format!("sqlite:{}", dir.path().join("collector.db").display()),
            None,
        )
    } else {
        pg = pg_harness::PgServer::start().expect("PostgreSQL");
        let url = pg.url();
        let init = url.clone();
        std::thread::spawn(move || sensor_collector::store::init(&init, None))
            .join()
            .expect("thread")
            .expect("schema");
        (url, Some(pg.socket_dir().to_path_buf()))
    };
    let c = CollectorProcess::start(binary, pki, dir.path(), &url, &extra);
    let pid = c.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    println!(
        "{store}: collector pid {pid}, {}",
        limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    );
    let disk = disk_of(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let rows = runtime.block_on(ramp(
        store,
        &c,
        postmaster.as_deref(),
        disk,
        hosts,
        steps,
        Duration::from_secs(seconds),
    ));
    drop(runtime);
    drop(c);
    rows
}

async fn ramp(
    store: &str,
    c: &CollectorProcess,
    postmaster: Option<&Path>,
    disk: Option<(u32, u32)>,
    hosts: &Arc<Vec<HostLog>>,
    steps: &[usize],
    seconds: Duration,
) -> Vec<Row> {
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let counters = Arc::new(Counters::default());
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let origin = Instant::now();
    let addr: Arc<str> = c.addr.as_str().into();
    let mut tasks = Vec::new();
    let mut rows = Vec::new();
    let mut running = 0;
    let mut connected = 0;
    for &n in steps {
        let (go_tx, go_rx) = watch::channel(None);
        let (ready_tx, mut ready) = mpsc::unbounded_channel();
        let connect_start = Instant::now();
        for i in running..n {
            tasks.push(tokio::spawn(host(
                Arc::clone(hosts),
                i,
                Arc::clone(&addr),
                origin,
                Arc::clone(&connecting),
                ready_tx.clone(),
                go_rx.clone(),
                Arc::clone(&samples),
                Arc::clone(&counters),
            )));
        }
        drop(ready_tx);
        let deadline = connect_start + CONNECT_WAIT;
        for _ in running..n {
            match tokio::time::timeout_at(deadline, ready.recv()).await {
                Ok(Some(true)) => connected += 1,
                Ok(Some(false)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let connect_s = connect_start.elapsed().as_secs_f64();
        running = n;
        go_tx.send_replace(Some(Instant::now()));
        tokio::time::sleep(WARMUP).await;

        let before = Usage::read(c.pid(), postmaster, disk);
        let errors_before = counters.errors();
        let refused_before = counters.refused.load(Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(seconds).await;
        let t1 = Instant::now();
        let after = Usage::read(c.pid(), postmaster, disk);
        let wall = (t1 - t0).as_secs_f64();

        let (mut latency, mut late): (Vec<Duration>, Vec<Duration>) = {
            let samples = samples.lock().expect("samples");
            samples
                .iter()
                .filter(|s| s.acked >= t0 && s.acked < t1)
                .map(|s| (s.latency, s.late))
                .unzip()
        };
        latency.sort_unstable();
        late.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let pct = |v: &[Duration], p: f64| {
            v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .map_or(f64::NAN, |d| ms(*d))
        };
        let cpu = |a: u64, b: u64| (b - a) as f64 / ticks_per_s() / wall * 100.0;
        let threads = |prefix: &str| {
            after
                .threads
                .iter()
                .filter(|(_, t)| t.name.starts_with(prefix))
                .map(|(tid, t)| {
                    let b = before.threads.get(tid);
                    (
                        t.run_ns - b.map_or(0, |b| b.run_ns),
                        t.wait_ns - b.map_or(0, |b| b.wait_ns),
                    )
                })
                .fold((0, 0), |(r, w), (dr, dw)| (r + dr, w + dw))
        };
        let (ingest_run, ingest_wait) = threads("ingest-");
        let ingest_threads = after
            .threads
            .values()
            .filter(|t| t.name.starts_with("ingest-"))
            .count();
        let (runtime_run, _) = threads("tokio-r");
        let ns = wall * 1e9;
        let row = Row {
            hosts: n,
            connected,
            connect_s,
            acked_per_s: latency.len() as f64 / wall,
            p50_ms: pct(&latency, 0.50),
            p99_ms: pct(&latency, 0.99),
            max_ms: latency.last().map_or(f64::NAN, |d| ms(*d)),
            late_p99_ms: pct(&late, 0.99),
            refused: counters.refused.load(Ordering::Relaxed) - refused_before,
            errors: counters.errors() - errors_before,
            collector_cpu: cpu(before.collector, after.collector),
            ingest_cpu: ingest_run as f64 / ns * 100.0,
            ingest_runq: ingest_wait as f64 / ns * 100.0,
            ingest_threads,
            runtime_cpu: runtime_run as f64 / ns * 100.0,
            simulator_cpu: cpu(before.simulator, after.simulator),
            postgres_cpu: before.postgres.zip(after.postgres).map(|(a, b)| cpu(a, b)),
            rss_mb: after.collector_rss_kb as f64 / 1024.0,
            flushes_per_s: before
                .flushes
                .zip(after.flushes)
                .map(|(a, b)| (b - a) as f64 / wall),
            load: std::fs::read_to_string("/proc/loadavg")
                .expect("loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        };
        println!(
            "{store} N={n}: {connected} connected ({connect_s:.1} s), {:.0} acks/s, \
             latency p50 {:.1} p99 {:.1} max {:.1} ms, late p99 {:.1} ms, refused {}, errors {} \
             (connect failures {}, exhausted {}), collector {:.0}% CPU ({} ingest thread(s): {:.0}% on CPU, \
             {:.0}% waiting for a CPU, the rest off CPU; runtime {:.0}%), RSS {:.0} MB, simulator {:.0}%, postgres {}, \
             flushes/s {}, load {}",
            row.acked_per_s,
            row.p50_ms,
            row.p99_ms,
            row.max_ms,
            row.late_p99_ms,
            row.refused,
            row.errors,
            counters.connect_failed.load(Ordering::Relaxed),
            counters.exhausted.load(Ordering::Relaxed),
            row.collector_cpu,
            row.ingest_threads,
            row.ingest_cpu,
            row.ingest_runq,
            row.runtime_cpu,
            row.rss_mb,
            row.simulator_cpu,
            row.postgres_cpu
                .map_or("-".into(), |c| format!("{c:.0}% CPU")),
            row.flushes_per_s.map_or("-".into(), |f| format!("{f:.0}")),
            row.load
        );
        rows.push(row);
    }
    for t in &tasks {
        t.abort();
    }
    rows
}

impl Counters {
    fn errors(&self) -> u64 {
        self.connect_failed.load(Ordering::Relaxed)
            + self.session_errors.load(Ordering::Relaxed)
            + self.exhausted.load(Ordering::Relaxed)
    }
}

/// One simulated host: connect, wait for the step to start, then one batch per second at its
/// phase, each answered before the next is sent.
#[allow(clippy::too_many_arguments)]
async fn host(
    hosts: Arc<Vec<HostLog>>,
    i: usize,
    addr: Arc<str>,
    origin: Instant,
    connecting: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<bool>,
    mut go: watch::Receiver<Option<Instant>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    counters: Arc<Counters>,
) {
    let h = &hosts[i];
    let hello = Hello {
        host_id: h.id,
        agent_version: "fleet".into(),
        oldest: 1,
        newest: h.batches.len() as u64,
        keys: vec![(1, h.key)],
    };
    let permit = connecting.acquire().await.expect("semaphore");
    let session = Session::connect(&addr, "localhost", Arc::clone(&h.tls), hello).await;
    drop(permit);
    let mut s = match session {
        Ok(s) => s,
        Err(e) => {
            if counters.connect_failed.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("host {i}: connect: {e}");
            }
            let _ = ready.send(false);
            return;
        }
    };
    assert!(s.welcome().next_batch <= 1, "a fresh host");
    let _ = ready.send(true);
    let go = *go.wait_for(|g| g.is_some()).await.expect("the step starts");
    let go = go.expect("set");
    // The first of this host's scheduled instants (origin + phase + k s) after `go`.
    let phase = Duration::from_secs_f64((i as f64 * 0.618_033_988_749_895).fract());
    let since = (go - origin).saturating_sub(phase);
    let start = origin + phase + Duration::from_secs(since.as_secs() + 1);
    let mut tick = tokio::time::interval_at(start, Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    for batch in &h.batches {
        let due = tick.tick().await;
        let sent = Instant::now();
        if let Err(e) = s.send(batch).await {
            if counters.session_errors.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("host {i}: send: {e}");
            }
            return;
        }
        match s.answer().await {
            Ok(Answer::Ack(_)) => {
                let acked = Instant::now();
                samples.lock().expect("samples").push(Sample {
                    acked,
                    latency: acked - sent,
                    late: sent - due,
                });
            }
            Ok(Answer::Refuse(r)) => {
                if counters.refused.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("host {i}: refused: {r:?}");
                }
                return;
            }
            Err(e) => {
                if counters.session_errors.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("host {i}: answer: {e}");
                }
                return;
            }
        }
    }
    counters.exhausted.fetch_add(1, Ordering::Relaxed);
}

/// CPU and memory figures read from /proc at one instant.
struct Usage {
    /// utime + stime, in clock ticks.
    collector: u64,
    collector_rss_kb: u64,
    /// The collector's threads by id: name and scheduler times (/proc/…/schedstat).
    threads: HashMap<u32, Thread>,
    simulator: u64,
    postgres: Option<u64>,
    /// Flush requests completed by the disk holding the collector's store.
    flushes: Option<u64>,
}

struct Thread {
    name: String,
    run_ns: u64,
    wait_ns: u64,
}

impl Usage {
    fn read(pid: u32, postmaster: Option<&Path>, disk: Option<(u32, u32)>) -> Usage {
        let mut threads = HashMap::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
            let path = entry.expect("task").path();
            let tid: u32 = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
                .expect("tid");
            let (Ok(name), Ok(sched)) = (
                std::fs::read_to_string(path.join("comm")),
                std::fs::read_to_string(path.join("schedstat")),
            ) else {
                continue;
            };
            let mut f = sched.split_whitespace().map(|v| v.parse().unwrap_or(0));
            threads.insert(
                tid,
                Thread {
                    name: name.trim().to_owned(),
                    run_ns: f.next().unwrap_or(0),
                    wait_ns: f.next().unwrap_or(0),
                },
            );
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        Usage {
            collector: cpu_ticks(pid).expect("the collector runs"),
            collector_rss_kb: rss,
            threads,
            simulator: cpu_ticks(std::process::id()).expect("self"),
            postgres: postmaster.map(postgres_ticks),
            flushes: disk.and_then(flushes),
        }
    }
}

fn ticks_per_s() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// utime + stime of a process (all its threads), and its parent.
fn stat(pid: u32) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((utime + stime, ppid))
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    stat(pid).map(|(t, _)| t)
}

/// CPU of the PostgreSQL server whose command line names `dir` (its data directory is
/// inside) and of its children (backends, checkpointer, WAL writer…).
fn postgres_ticks(dir: &Path) -> u64 {
    let dir = dir.to_string_lossy();
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let Some(postmaster) = pids.iter().copied().find(|p| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(dir.as_ref()))
            && std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
    }) else {
        return 0;
    };
    pids.iter()
        .filter_map(|&p| stat(p).filter(|&(_, ppid)| p == postmaster || ppid == postmaster))
        .map(|(t, _)| t)
        .sum()
}

/// The (major, minor) of the block device holding `path`, as /proc/diskstats names it.
fn disk_of(path: &Path) -> Option<(u32, u32)> {
    let dev = rustix::fs::stat(path).ok()?.st_dev;
    Some((rustix::fs::major(dev), rustix::fs::minor(dev)))
}

fn flushes((major, minor): (u32, u32)) -> Option<u64> {
    let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
    stats.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first()? == &major.to_string() && f.get(1)? == &minor.to_string())
            .then(|| f.get(3 + 15)?.parse().ok())?
    })
}

fn print_table(store: &str, rows: &[Row], seconds: u64) {
    println!(
        "\n{store}, {seconds} s per step (CPU in % of one core; the machine has {}):\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| hosts | connected (s) | acks/s | p50 ms | p99 ms | max ms | late p99 ms | refused / errors | collector CPU | ingest on CPU / runnable | runtime threads | RSS MB | simulator CPU | PostgreSQL CPU | disk flushes/s | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} ({:.1}) | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} / {} | {:.0}% | {:.0}% / {:.0}% | {:.0}% | {:.0} | {:.0}% | {} | {} | {} |",
            r.hosts,
            r.connected,
            r.connect_s,
            r.acked_per_s,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.late_p99_ms,
            r.refused,
            r.errors,
            r.collector_cpu,
            r.ingest_cpu,
            r.ingest_runq,
            r.runtime_cpu,
            r.rss_mb,
            r.simulator_cpu,
            r.postgres_cpu.map_or("-".into(), |c| format!("{c:.0}%")),
            r.flushes_per_s.map_or("-".into(), |f| format!("{f:.0}")),
            r.load
        );
    }
}
