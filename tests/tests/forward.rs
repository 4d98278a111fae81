//! The real agent forwards its log to a real `sensor-collector serve` over mutually
//! authenticated TLS on loopback (certificates made by the test): the collector holds the
//! agent's batches, each once, verified, up to the one sealed at a clean stop; `sensorctl
//! status` says how far forwarding got; a host restored from a copy or wiped raises its
//! alarm; and
//! a collector or an agent killed with SIGKILL in a storm loses nothing and duplicates
//! nothing once both run again.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use collector_harness::{sample, scrape, CollectorProcess, CuttingProxy, Pki};
use sensor_tests::{collector_bin, openloop, secret_in, sensorctl, Agent, Start, Stdout, STORM};

/// A state directory whose log will be host `host_hex`, as an installer that issued the
/// host's certificate first would prepare it.
fn state_for(host_hex: &str) -> tempfile::TempDir {
    let state = tempfile::tempdir().expect("state");
    std::fs::write(state.path().join("host-id"), format!("{host_hex}\n")).expect("host-id");
    state
}

const HOST: &str = "5e5e5e5e00112233445566778899aabb";

/// The agent's config; `agent` holds more `[agent]` keys.
fn agent_config(secret: &Path, pki: &Pki, collectors: &[&str], agent: &str) -> String {
    let id = pki.host(HOST);
    let list: Vec<String> = collectors.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "[agent]\n{STORM}{agent}\n[forward]\ncollectors = [{}]\nclient_cert = \"{}\"\nclient_key = \"{}\"\nca = \"{}\"\n\
         [[watch]]\npath = \"{}\"\nkind = \"ssh-key\"\n",
        list.join(", "),
        id.cert.display(),
        id.key.display(),
        pki.ca.display(),
        secret.display()
    )
}

fn collector(pki: &Pki, dir: &Path) -> CollectorProcess {
    CollectorProcess::start(
        &collector_bin(),
        pki,
        dir,
        &store(dir),
        "enrollment = \"first_contact\"",
    )
}

fn store(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("collector.db").display())
}

fn collector_cli(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(collector_bin())
        .arg("--store")
        .arg(store(dir))
        .args(args)
        .output()
        .expect("run sensor-collector");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// (batches held, last batch) for the host, from `sensor-collector hosts`.
fn held(dir: &Path) -> (u64, u64) {
    let (ok, out) = collector_cli(dir, &["hosts"]);
    assert!(ok, "{out}");
    // No row until the host's first contact.
    let Some(row) = out.lines().find(|l| l.starts_with(HOST)) else {
        return (0, 0);
    };
    let cols: Vec<&str> = row.split_whitespace().collect();
    (
        cols[3].parse().expect("batches"),
        cols[4].parse().unwrap_or(0),
    )
}

/// The newest batch sealed in the agent's log.
fn sealed(state: &Path) -> u64 {
    let store = sensor_store::Store::open_read_only(state).expect("store");
    store.last_batch().expect("read").map_or(0, |b| b.number)
}

/// Waits until the collector holds batch `at_least` of the agent's log.
fn wait_forwarded(state: &Path, dir: &Path, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let newest = sealed(state);
        let (count, last) = held(dir);
        if last >= at_least {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "forwarding did not catch up: sealed {newest}, held {count} up to {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status(state: &Path) -> String {
    sensorctl(state, &["status"]).1
}

#[test]
fn the_agent_forwards_its_log_to_a_collector_over_mutual_tls() {
    let pki = Pki::new();
    let cdir = tempfile::tempdir().expect("collector dir");
    let c = collector(&pki, cdir.path());
    let files = tempfile::tempdir().expect("files");
    let secret = secret_in(files.path());
    let state = state_for(HOST);
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let config = agent_config(
        &secret,
        &pki,
        &[&c.addr],
        &format!("metrics_listen = \"{metrics}\"\n"),
    );
    let started_ns = sensor_log::time::wall_now_ns();
    let mut agent = Agent::start_at(&config, state.path(), &[]);
    assert!(openloop(40, &secret).wait().expect("openloop").success());
    let last = wait_forwarded(state.path(), cdir.path(), 3);

    // Status reports it, from the agent's own word within two seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let s = status(state.path());
        let line = s
            .lines()
            .find(|l| l.starts_with("forwarding:"))
            .unwrap_or_default()
            .to_owned();
        if line.contains("connected to") && line.contains("0 batches (0 records) behind") {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed forwarding caught up:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(line.contains(&c.addr), "{line}");

    // Prometheus sees the same: the opens, and forwarding connected and caught up.
    let text = scrape(metrics);
    let value = |name: &str| sample(&text, name);
    assert!(
        value("sensor_events_total{kind=\"file_open\"}") >= 40.0,
        "{text}"
    );
    assert_eq!(value("sensor_forward_connected"), 1.0, "{text}");
    assert!(value("sensor_forward_lag_batches") <= 2.0, "{text}");

    // Each acknowledged batch is timed from its seal: one sample per ack, each at least the
    // collector's own seal-to-store time for that batch (the ack follows its commit) and at
    // most the agent's age.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (acks, sum) = loop {
        let text = scrape(metrics);
        let count = "sensor_forward_exposure_seconds_count";
        if text.contains(count) && sample(&text, count) >= last as f64 {
            let sum = sample(&text, "sensor_forward_exposure_seconds_sum");
            break (sample(&text, count) as i64, sum);
        }
        assert!(
            Instant::now() < deadline,
            "no exposure of {last} acks:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let age_s = (sensor_log::time::wall_now_ns() - started_ns) as f64 / 1e9;
    let db = rusqlite::Connection::open_with_flags(
        cdir.path().join("collector.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("collector store");
    let (held_acked, stored_ns): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), SUM(received_ns - wall_ns) FROM batches WHERE number <= ?1",
            [acks],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("read the collector's store");
    assert_eq!(
        held_acked, acks,
        "acknowledged batches 1 to {acks} are held"
    );
    assert!(
        sum * 1e9 + 1e3 >= stored_ns as f64,
        "exposure {sum} s in all, less than the collector's {stored_ns} ns seal-to-store"
    );
    assert!(
        sum > 0.0 && sum <= acks as f64 * age_s,
        "exposure {sum} s over {acks} acks, the agent being {age_s} s old"
    );
    agent.stop();
    // The batch sealed at the stop, with the stop's own record, reached the collector
    // before the agent exited.
    assert_eq!(
        held(cdir.path()).1,
        sealed(state.path()),
        "the last batch sealed is held"
    );

    // The collector shows what the host shows, plus the host: the 40 opens, byte for byte.
    let (code, local, err) = sensorctl(state.path(), &["events", "--json", "--kind", "file_open"]);
    assert_eq!(code, 0, "{err}");
    let (ok, remote) = collector_cli(
        cdir.path(),
        &["events", "--json", "--kind", "file_open", "--host", HOST],
    );
    assert!(ok, "{remote}");
    let local: Vec<serde_json::Value> = local
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let remote: Vec<serde_json::Value> = remote
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("JSON");
            assert_eq!(v["host"], HOST, "{l}");
            v.as_object_mut().expect("object").remove("host");
            v
        })
        .collect();
    let opens = local
        .iter()
        .filter(|e| e["file"]["path"] == secret.to_str().unwrap_or(""))
        .count();
    assert!(opens >= 40, "{opens} opens logged");
    assert_eq!(remote, local);

    let (count, held_last) = held(cdir.path());
    assert_eq!(count, held_last, "every batch from 1 is held, once");
    assert!(held_last >= last);
    let (ok, out) = collector_cli(cdir.path(), &["verify"]);
    assert!(ok, "sensor-collector verify: {out}");
}

#[test]
fn without_forward_status_says_the_log_is_not_forwarded() {
    let files = tempfile::tempdir().expect("files");
    let secret = secret_in(files.path());
    let mut agent = Agent::start(&format!(
        "[[watch]]\npath = \"{}\"\nkind = \"ssh-key\"\n",
        secret.display()
    ));
    std::thread::sleep(Duration::from_millis(2500));
    let s = status(&agent.state_dir);
    assert!(s.contains("forwarding:  the log is NOT forwarded"), "{s}");
    agent.stop();
}

#[test]
fn a_certificate_for_another_host_stops_the_agent_at_start() {
    let pki = Pki::new();
    let files = tempfile::tempdir().expect("files");
    let secret = secret_in(files.path());
    let state = state_for("0000000000000000000000000000dead");
    let config_dir = tempfile::tempdir().expect("config");
    let config = config_dir.path().join("agent.toml");
    std::fs::write(&config, agent_config(&secret, &pki, &["127.0.0.1:9"], "")).expect("config");
    let out = Command::new(sensor_tests::agent_bin())
        .args(["run", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .expect("run agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("forward.client_cert") && err.contains(HOST) && err.contains("dead"),
        "{err}"
    );
}

/// A collector killed in a storm and started again where the agent expects it, then the
/// agent killed and started again: the collector ends up with every batch, once, in one
/// continuous verified chain.
#[test]
fn kill_9_on_either_side_loses_and_duplicates_nothing() {
    let pki = Pki::new();
    let cdir = tempfile::tempdir().expect("collector dir");
    let mut c = collector(&pki, cdir.path());
    let addr = c.addr.clone();
    let files = tempfile::tempdir().expect("files");
    let secret = secret_in(files.path());
    let state = state_for(HOST);
    let config = agent_config(&secret, &pki, &[&addr], "");
    let mut agent = Agent::start_at(&config, state.path(), &[]);
    let mut storm = openloop(5_000_000, &secret);
    wait_forwarded(state.path(), cdir.path(), 5);

    c.kill();
    std::thread::sleep(Duration::from_millis(500));
    let c = CollectorProcess::start_on(
        &collector_bin(),
        &pki,
        cdir.path(),
        &store(cdir.path()),
        "enrollment = \"first_contact\"",
        &addr,
    );
    let before = sealed(state.path());
    wait_forwarded(state.path(), cdir.path(), before + 2);

    agent.crash();
    let mut agent = Agent::start_at(&config, state.path(), &[]);
    let before = sealed(state.path());
    wait_forwarded(state.path(), cdir.path(), before + 2);
    let _ = storm.kill();
    let _ = storm.wait();
    // Everything sealed by now reaches the collector.
    let target = sealed(state.path());
    wait_forwarded(state.path(), cdir.path(), target);
    agent.stop();
    drop(c);
    let (count, last) = held(cdir.path());
    assert_eq!(
        count, last,
        "held {count} batches up to {last}: a gap or a duplicate"
    );
    assert!(
        last >= target,
        "held up to {last}, sealed {target} before the stop"
    );
    let (ok, out) = collector_cli(cdir.path(), &["verify"]);
    assert!(ok, "sensor-collector verify: {out}");
}

/// A load generator killed when the test ends, even by a failed assertion.
struct Storm(std::process::Child);

impl Drop for Storm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real agent's connection cut 100 times at random points during a storm (the
/// collector's side of 1,000 cuts is `sensor-collector/tests/serve.rs`, which needs no agent
/// back-off between them): the agent resends from what the collector says, and the collector
/// ends up with every batch once, with no gap, in one verified chain.
#[test]
fn cut_connections_leave_no_gap_and_no_duplicate() {
    const CUTS: u64 = 100;
    let pki = Pki::new();
    let cdir = tempfile::tempdir().expect("collector dir");
    let c = collector(&pki, cdir.path());
    let proxy = CuttingProxy::start(c.addr.clone(), CUTS, Duration::from_millis(300));
    let files = tempfile::tempdir().expect("files");
    let secret = secret_in(files.path());
    let state = state_for(HOST);
    let config = agent_config(&secret, &pki, &[&proxy.addr], "");
    // The storm's events are not read from stdout: only the log matters here.
    let start = Start {
        stdout: Stdout::Held,
        ..Start::default()
    };
    let mut agent = Agent::start_opts(&config, state.path(), &start);
    let mut storm = Storm(openloop(400_000, &secret));
    let deadline = Instant::now() + Duration::from_secs(600);
    while proxy.cuts() < CUTS {
        assert!(
            Instant::now() < deadline,
            "only {} cuts in 10 minutes",
            proxy.cuts()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = storm.0.wait();
    let target = sealed(state.path());
    wait_forwarded(state.path(), cdir.path(), target);
    // A stop waits for the output to drain: read it now.
    agent.read_stdout();
    agent.stop();
    let (count, last) = held(cdir.path());
    assert_eq!(
        count, last,
        "held {count} batches up to {last}: a gap or a duplicate"
    );
    let (ok, out) = collector_cli(cdir.path(), &["verify"]);
    assert!(ok, "sensor-collector verify: {out}");
    eprintln!("{} cuts; {last} batches held", proxy.cuts());
}

/// Copies a stopped agent's state directory, as a root taking a backup would.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let kind = entry.file_type().expect("file type");
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The kinds of the alarms the collector raised for the host, oldest first.
fn alarm_kinds(dir: &Path) -> Vec<String> {
    let (ok, out) = collector_cli(dir, &["alarms", "--host", HOST, "--json"]);
    assert!(ok, "{out}");
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON");
            v["kind"].as_str().expect("kind").to_owned()
        })
        .collect()
}

/// Waits until the collector raised an alarm of `kind` for the host.
fn wait_alarm(dir: &Path, kind: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let kinds = alarm_kinds(dir);
        if kinds.iter().any(|k| k == kind) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} alarm within 30 s; alarms: {kinds:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A root's two ways to make a host's record start over, tried on the real agent: put back
/// an older copy of its state directory (the log rolled back, logging on), and wipe it (a new
/// log from scratch under the same certificate). At the agent's first contact the collector
/// raises `fork`, then `new_log`, keeps the chain it held untouched, and the agent's status
/// shows the refusal; once the agent stops, the host is reported `silent`.
#[test]
fn a_restored_or_wiped_host_raises_its_alarm_at_first_contact() {
    let pki = Pki::new();
    let cdir = tempfile::tempdir().expect("collector dir");
    let _c = CollectorProcess::start(
        &collector_bin(),
        &pki,
        cdir.path(),
        &store(cdir.path()),
        "enrollment = \"first_contact\"\nheartbeat_timeout = \"3s\"",
    );
    let files = tempfile::tempdir().expect("files");
    let secret = secret_in(files.path());
    let state = state_for(HOST);
    let config = agent_config(&secret, &pki, &[&_c.addr], "");
    let mut agent = Agent::start_at(&config, state.path(), &[]);
    wait_forwarded(state.path(), cdir.path(), 2);
    agent.stop();
    let backup = tempfile::tempdir().expect("backup");
    copy_tree(state.path(), backup.path());

    // The genuine log goes on well past the copy, and all of it reaches the collector.
    let mut agent = Agent::start_at(&config, state.path(), &[]);
    assert!(openloop(100_000, &secret)
        .wait()
        .expect("openloop")
        .success());
    wait_forwarded(state.path(), cdir.path(), sealed(state.path()));
    agent.stop();
    let genuine = held(cdir.path());
    assert!(
        genuine.1 > sealed(backup.path()) + 20,
        "the genuine log {genuine:?} is not far ahead of the copy"
    );

    // Rolled back: the copy is put back and the agent started on it.
    std::fs::remove_dir_all(state.path()).expect("wipe");
    copy_tree(backup.path(), state.path());
    let mut agent = Agent::start_at(&config, state.path(), &[]);
    wait_alarm(cdir.path(), "fork");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !status(state.path()).contains(": fork: ") {
        assert!(
            Instant::now() < deadline,
            "status shows no fork refusal:\n{}",
            status(state.path())
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    agent.stop();

    // Wiped: a new state directory under the same host id and certificate.
    let wiped = state_for(HOST);
    let mut agent = Agent::start_at(&config, wiped.path(), &[]);
    wait_alarm(cdir.path(), "new_log");
    agent.stop();

    // Stopped for good: silent.
    wait_alarm(cdir.path(), "silent");
    assert_eq!(
        held(cdir.path()),
        genuine,
        "the chain held is the genuine one"
    );
    let (ok, out) = collector_cli(cdir.path(), &["verify"]);
    assert!(ok, "sensor-collector verify: {out}");
    let kinds = alarm_kinds(cdir.path());
    assert!(
        !kinds.iter().any(|k| k == "invalid" || k == "bad_signature"),
        "{kinds:?}"
    );
}
