//! `sensor-collector events` (the built binary) on a real store, SQLite and PostgreSQL,
//! filled by the ingest with real logs the agent's `LogWriter` wrote: for the same filters it
//! shows exactly what `sensorctl events --json` shows on the agent's own store (its filters,
//! query and rendering: `sensor_store::Store::query`, `sensor_view::events`), plus the host;
//! `--host` keeps hosts apart; time and kind bounds hold at the edges of a batch's wall
//! range; `--follow` prints a batch stored after it started, and ends quietly when its
//! reader goes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use clap::Parser;
use common::{enroll, outbox};
use sensor_collector::ingest::{Collector, Reply};
use sensor_collector::store::{BatchQuery, PostgresStore, SqliteStore};
use sensor_log::{hex, Body, Kind, Timestamp};
use sensor_store::{LogWriter, WriterOptions};
use sensor_view::events::FilterArgs;
use serde_json::Value;

const MINUTE: u64 = 60_000_000_000;

/// Two hours ago, to the minute: events are written from here on, a minute apart.
fn base_ns() -> u64 {
    let now = Timestamp::now().wall_ns;
    (now - 120 * MINUTE) / MINUTE * MINUTE
}

/// A log of `n` events a minute apart from `base`, four records a batch (the first batch
/// also holds the epoch start, at the time the log was opened); every fifth event a ptrace,
/// the others file opens, pids from `pid`.
fn agent_log(dir: &Path, base: u64, n: u64, pid: u32) {
    let mut w = LogWriter::open(
        dir,
        WriterOptions {
            batch_max_records: 4,
            ..WriterOptions::default()
        },
    )
    .expect("open log");
    let Body::Event(template) = sensor_log::vectors::records()[1].body.clone() else {
        panic!("vector record 2 is an event")
    };
    for i in 0..n {
        let mut event = template.clone();
        event.kind = if i % 5 == 4 {
            Kind::Ptrace
        } else {
            Kind::FileOpen
        };
        if let Some(p) = event.process.as_mut() {
            p.pid = pid + u32::try_from(i).expect("small");
        }
        w.append(event, base + i * MINUTE, i).expect("append");
    }
    w.seal(Timestamp::now()).expect("seal");
    w.close(Timestamp::now()).expect("close");
}

/// What `sensorctl events --json ARGS` prints for the agent's store in `dir`: its filter
/// arguments, its query and its JSON, as objects.
fn agent_events(dir: &Path, args: &[&str]) -> Vec<Value> {
    #[derive(Parser)]
    struct Events {
        #[command(flatten)]
        filters: FilterArgs,
    }
    let parsed = Events::try_parse_from(std::iter::once("events").chain(args.iter().copied()))
        .expect("filter arguments");
    let selection = parsed.filters.selection().expect("valid filters");
    let store = sensor_store::Store::open_read_only(dir).expect("agent store");
    let mut out = Vec::new();
    store
        .query(&selection.filter, |r| {
            if selection.path_matches(&r) {
                out.push(sensor_view::events::to_json(&r));
            }
            Ok(true)
        })
        .expect("query");
    out
}

fn with_host(mut events: Vec<Value>, host: &str) -> Vec<Value> {
    for e in &mut events {
        e.as_object_mut()
            .expect("an object")
            .insert("host".into(), host.into());
    }
    events
}

fn collector_cmd(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sensor-collector"));
    cmd.arg("--store").arg(url).arg("events").args(args);
    cmd
}

fn collector_events(url: &str, args: &[&str]) -> Vec<Value> {
    let out: Output = collector_cmd(url, &[&["--json"][..], args].concat())
        .output()
        .expect("run sensor-collector");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// Sends every batch of the log in `dir` to the collector; returns the host id in hex.
fn forward(c: &mut Collector, dir: &Path) -> String {
    let (host, key, messages) = outbox(dir);
    if c.store().host(&host).expect("read").is_none() {
        enroll(c, host, key);
    }
    for m in &messages {
        assert!(matches!(
            c.receive(&host, m).expect("ingest"),
            Reply::Ack(_)
        ));
    }
    hex::encode(host)
}

fn rfc3339(ns: u64) -> String {
    sensor_log::time::rfc3339(ns)
}

/// Two hosts' logs through the collector: each host's events, under every filter, are what
/// its agent shows, plus the host; all hosts together are both, in the order they arrived.
fn shows_what_the_agent_shows_plus_the_host(mut c: Collector, url: &str) {
    let base = base_ns();
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    agent_log(a_dir.path(), base, 10, 100);
    agent_log(b_dir.path(), base + 30 * MINUTE, 10, 500);
    let a = forward(&mut c, a_dir.path());
    let b = forward(&mut c, b_dir.path());

    // Host A's batches: [epoch start, 0, 1, 2] [3, 4, 5, 6] [7, 8, 9, ...]. The time bounds
    // fall on the edges of batch 2's wall range (events 3 and 6) and just past them.
    let at = |i: u64| rfc3339(base + i * MINUTE);
    let past = |i: u64| rfc3339(base + i * MINUTE + 1);
    let before = |i: u64| rfc3339(base + i * MINUTE - 1);
    let filters: Vec<Vec<String>> = vec![
        vec![],
        vec!["--kind".into(), "ptrace".into()],
        vec![
            "--kind".into(),
            "ptrace".into(),
            "--kind".into(),
            "epoch_start".into(),
        ],
        vec!["--since".into(), at(6)],
        vec!["--since".into(), past(6)],
        vec!["--until".into(), at(3)],
        vec!["--until".into(), before(3)],
        vec!["--since".into(), at(3), "--until".into(), at(6)],
        vec![
            "--since".into(),
            at(4),
            "--until".into(),
            at(4),
            "--kind".into(),
            "ptrace".into(),
        ],
        vec!["--since".into(), "1h".into()],
        vec!["--pid".into(), "103".into()],
        vec![
            "--path".into(),
            "/home/**".into(),
            "--kind".into(),
            "file_open".into(),
        ],
        vec!["--exe".into(), "/nonexistent".into()],
    ];
    let mut nonempty = 0;
    for f in &filters {
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        let agent_a = with_host(agent_events(a_dir.path(), &f), &a);
        let agent_b = with_host(agent_events(b_dir.path(), &f), &b);
        nonempty += usize::from(!agent_a.is_empty());
        assert_eq!(
            collector_events(url, &[&["--host", &a][..], &f].concat()),
            agent_a,
            "host A, {f:?}"
        );
        assert_eq!(
            collector_events(url, &[&["--host", &b][..], &f].concat()),
            agent_b,
            "host B, {f:?}"
        );
        assert_eq!(
            collector_events(url, &f),
            [agent_a, agent_b].concat(),
            "all hosts, {f:?}"
        );
    }
    assert!(nonempty >= 10, "the filters select something");

    // The edges, counted: the bounds are inclusive, on the decoded record's wall time.
    let count = |args: &[&str]| collector_events(url, &[&["--host", &a][..], args].concat());
    let pids = |v: Vec<Value>| -> Vec<u64> {
        v.iter()
            .filter_map(|e| e["process"]["pid"].as_u64())
            .collect()
    };
    assert_eq!(
        pids(count(&["--since", &at(6), "--until", &at(7)])),
        [106, 107]
    );
    assert_eq!(
        pids(count(&["--since", &past(6), "--until", &at(7)])),
        [107]
    );
    assert_eq!(
        pids(count(&["--since", &at(2), "--until", &at(3)])),
        [102, 103]
    );
    assert_eq!(
        pids(count(&["--since", &at(2), "--until", &before(3)])),
        [102]
    );
    assert_eq!(pids(count(&["--kind", "ptrace"])), [104, 109]);

    let table = collector_cmd(url, &["--host", &b, "--kind", "ptrace"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("HOST  "), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with(&b)).count(),
        2,
        "{text}"
    );
}

/// `--follow` prints the events of a batch stored after it started, and only then.
fn follow_prints_a_batch_stored_after_it_started(mut c: Collector, url: &str) {
    let base = base_ns();
    let dir = tempfile::tempdir().expect("dir");
    agent_log(dir.path(), base, 3, 100);
    let (host, key, first) = outbox(dir.path());
    enroll(&mut c, host, key);
    for m in &first {
        assert!(matches!(
            c.receive(&host, m).expect("ingest"),
            Reply::Ack(_)
        ));
    }
    let held = agent_events(dir.path(), &["--kind", "file_open"]).len();

    let mut follow = collector_cmd(url, &["--json", "--follow", "--kind", "file_open"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    for _ in 0..held {
        lines.next().expect("a line").expect("read");
    }
    // Polls that find nothing go on polling: the batches come a few polls later.
    std::thread::sleep(std::time::Duration::from_millis(800));
    // The same host logs on (a new epoch): its later batches arrive while `--follow` runs,
    // their events dated before the first ones (the host's clock was set back): arrival, not
    // wall time, is what `--follow` goes by.
    agent_log(dir.path(), base - 60 * MINUTE, 2, 900);
    let (_, _, all) = outbox(dir.path());
    for m in &all[first.len()..] {
        assert!(matches!(
            c.receive(&host, m).expect("ingest"),
            Reply::Ack(_)
        ));
    }
    let mut pids = Vec::new();
    for _ in 0..2 {
        let line = lines.next().expect("a line").expect("read");
        let v: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["host"], hex::encode(host));
        pids.push(v["process"]["pid"].as_u64());
    }
    assert!(
        follow.try_wait().expect("status").is_none(),
        "still following"
    );
    follow.kill().expect("kill");
    follow.wait().expect("reap");
    assert_eq!(pids, [Some(900), Some(901)]);
}

/// `events --follow --json | head -1`: once the reader has gone, the next event ends the
/// command quietly, with the status of a tool ended by SIGPIPE.
fn follow_ends_quietly_when_its_reader_goes(mut c: Collector, url: &str) {
    let base = base_ns();
    let dir = tempfile::tempdir().expect("dir");
    agent_log(dir.path(), base, 3, 100);
    let (host, key, first) = outbox(dir.path());
    enroll(&mut c, host, key);
    for m in &first {
        assert!(matches!(
            c.receive(&host, m).expect("ingest"),
            Reply::Ack(_)
        ));
    }
    let mut follow = collector_cmd(url, &["--json", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    lines.next().expect("a line").expect("read");
    drop(lines);
    agent_log(dir.path(), base, 2, 900);
    let (_, _, all) = outbox(dir.path());
    for m in &all[first.len()..] {
        assert!(matches!(
            c.receive(&host, m).expect("ingest"),
            Reply::Ack(_)
        ));
    }
    let out = follow.wait_with_output().expect("ends");
    assert_eq!(out.status.code(), Some(141));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// A held record this build cannot decode (a kind a newer agent added: made here by editing
/// the kind of one stored event to a number no kind has, in SQLite, whose rows a test may
/// edit) is named on stderr and not shown; the batch's other events still are.
#[test]
fn a_record_that_does_not_decode_is_named_not_shown() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("collector.db");
    let mut c = Collector::new(Box::new(SqliteStore::open(&db).expect("store")));
    let log = tempfile::tempdir().expect("dir");
    agent_log(log.path(), base_ns(), 6, 100);
    forward(&mut c, log.path());
    let url = format!("sqlite:{}", db.display());
    let before = collector_events(&url, &["--kind", "file_open"]);

    // The byte that holds an event's kind: where a file open and a ptrace differ.
    let store = sensor_store::Store::open_read_only(log.path()).expect("agent store");
    let mut records = Vec::new();
    store
        .query(&sensor_log::filter::Filter::default(), |r| {
            records.push(r);
            Ok(true)
        })
        .expect("query");
    let target = records
        .iter()
        .find(|r| r.body.kind_name() == "file_open" && r.header.seq == 3)
        .expect("event 2")
        .clone();
    let mut other = target.clone();
    if let Body::Event(e) = &mut other.body {
        e.kind = Kind::Ptrace;
    }
    let (a, b) = (
        target.encode().expect("encode"),
        other.encode().expect("encode"),
    );
    let at = (0..a.len()).find(|&i| a[i] != b[i]).expect("kinds differ");
    let conn = rusqlite::Connection::open(&db).expect("db");
    let (number, mut held) = {
        let mut stmt = conn
            .prepare("SELECT number, records FROM batches")
            .expect("query");
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .expect("rows")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        rows.into_iter()
            .find(|(_, blob)| blob.windows(a.len()).any(|w| w == a))
            .expect("the record held verbatim in a batch")
    };
    let start = held
        .windows(a.len())
        .position(|w| w == a)
        .expect("found above");
    held[start + at] = 0x7f;
    conn.execute(
        "UPDATE batches SET records = ?1 WHERE number = ?2",
        rusqlite::params![held, number],
    )
    .expect("edit");

    let out = collector_cmd(&url, &["--json", "--kind", "file_open"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("record 3 is held and verified but does not decode"),
        "{err}"
    );
    let shown: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let without: Vec<Value> = before.into_iter().filter(|e| e["seq"] != 3).collect();
    assert_eq!(shown, without);
}

/// Each case against the SQLite store and against a real PostgreSQL server.
macro_rules! on_both_stores {
    ($($case:ident),*) => {
        mod sqlite {
            $(#[test]
            fn $case() {
                let dir = tempfile::tempdir().expect("tempdir");
                let db = dir.path().join("collector.db");
                let c = super::Collector::new(Box::new(
                    super::SqliteStore::open(&db).expect("store"),
                ));
                super::$case(c, &format!("sqlite:{}", db.display()));
            })*
        }
        mod postgresql {
            $(#[test]
            fn $case() {
                let Some(pg) = super::common::postgres() else { return };
                super::$case(super::common::pg_collector(&pg.url()), &pg.url());
            })*
        }
    };
}

on_both_stores!(
    shows_what_the_agent_shows_plus_the_host,
    follow_prints_a_batch_stored_after_it_started,
    follow_ends_quietly_when_its_reader_goes
);

/// Several collectors commit to one PostgreSQL at once, so a batch numbered first in arrival
/// order can become visible last. A poll must not step over it: here a second collector's
/// transaction (raw SQL: a session paused inside its commit cannot be made otherwise) takes
/// its place in the order, a later one commits, and the first commits only after a poll.
#[test]
fn follow_on_postgresql_misses_no_batch_committed_out_of_order() {
    let Some(pg) = common::postgres() else { return };
    let mut c = common::pg_collector(&pg.url());
    let dir = tempfile::tempdir().expect("dir");
    agent_log(dir.path(), base_ns(), 3, 100);
    forward(&mut c, dir.path());
    let mut store = PostgresStore::connect(&pg.url()).expect("store");
    // The first byte of the host of each batch a poll returns, and the cursor after it.
    let mut poll = |after| {
        let mut hosts = Vec::new();
        let cursor = sensor_collector::Store::batches_after(
            &mut store,
            &BatchQuery::default(),
            after,
            &mut |host, _| {
                hosts.push(host[0]);
                Ok(())
            },
        )
        .expect("poll");
        (hosts, cursor)
    };
    let (_, cursor) = poll(None);
    let copy = |host: u8| {
        format!(
            "INSERT INTO batches (host_id, number, epoch, first_seq, count, wall_ns, header,
                                  signature, digest, records, received_ns, min_wall, max_wall,
                                  kinds)
             SELECT '\\x{}'::bytea, number, epoch, first_seq, count, wall_ns, header, signature,
                    digest, records, received_ns, min_wall, max_wall, kinds
             FROM batches WHERE number = 1",
            format!("{host:02x}").repeat(16)
        )
    };
    let mut first = postgres::Client::connect(&pg.url(), postgres::NoTls).expect("connect");
    let mut first = first.transaction().expect("begin");
    first
        .batch_execute(&copy(0xaa))
        .expect("insert, not committed");
    let mut second = postgres::Client::connect(&pg.url(), postgres::NoTls).expect("connect");
    second
        .batch_execute(&copy(0xbb))
        .expect("insert, committed");
    let (mut hosts, cursor) = poll(Some(cursor));
    first.commit().expect("commit");
    let (later, _) = poll(Some(cursor));
    hosts.extend(later);
    assert_eq!(
        hosts,
        [0xaa, 0xbb],
        "each once, in the order they were numbered"
    );
}
