//! Helpers shared by the collector's tests: real logs written by the agent's `LogWriter`,
//! handed out by its outbox, and a collector over a real SQLite store.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use sensor_collector::ingest::Collector;
use sensor_collector::store::{Host, PostgresStore, SqliteStore};
use sensor_log::record::HostId;
use sensor_log::{Body, Timestamp};
use sensor_store::{LogWriter, WriterOptions};

/// Appends `n` events to the log in `dir` (a new epoch each time it is opened), in batches
/// of 4, and closes it.
pub fn write(dir: &Path, n: u64, pid: u32) {
    let mut writer = LogWriter::open(
        dir,
        WriterOptions {
            batch_max_records: 4,
            ..WriterOptions::default()
        },
    )
    .expect("open log");
    let Body::Event(mut event) = sensor_log::vectors::records()[1].body.clone() else {
        panic!("vector record 2 is an event")
    };
    for i in 0..n {
        if let Some(p) = event.process.as_mut() {
            p.pid = pid + u32::try_from(i).unwrap_or(0);
        }
        let now = Timestamp::now();
        writer
            .append(event.clone(), now.wall_ns, now.mono_ns)
            .expect("append");
        writer.seal_due(now).expect("seal");
    }
    writer.close(Timestamp::now()).expect("close");
}

pub use collector_harness::outbox;

pub fn collector(dir: &Path) -> Collector {
    Collector::new(Box::new(
        SqliteStore::open(&dir.join("collector.db")).expect("collector store"),
    ))
}

/// A throw-away PostgreSQL server; `None` (the test then passes as skipped) only outside CI.
pub fn postgres() -> Option<pg_harness::PgServer> {
    match pg_harness::PgServer::start() {
        Ok(s) => Some(s),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI must run this test: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// A collector over the PostgreSQL database at `url`, its schema created if missing.
pub fn pg_collector(url: &str) -> Collector {
    PostgresStore::init(url, None).expect("schema");
    Collector::new(Box::new(
        PostgresStore::connect(url).expect("postgres store"),
    ))
}

pub fn enroll(c: &mut Collector, host_id: HostId, key: VerifyingKey) {
    c.store()
        .enroll(
            &Host {
                host_id,
                key_epoch: 1,
                public_key: key,
            },
            "operator",
        )
        .expect("enroll");
}
