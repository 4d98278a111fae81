//! Bench of the collector's ingest through `serve`: records per second received over mutual
//! TLS, verified and durably committed, for one host streaming a real signed log (written by
//! the agent's `LogWriter`, batches of 1,024 records) with a window of 64 batches in flight,
//! into SQLite and into PostgreSQL (a throw-away server, `fsync` on). The clock runs from the
//! first batch sent to the last acknowledgement (docs/performance.md, "Collector ingest").
//!
//! `cargo build --release -p sensor-collector && cargo run --release -p sensor-collector --example ingest -- [RECORDS]`

use std::path::Path;
use std::time::Instant;

use collector_harness::{CollectorProcess, Pki};
use sensor_forward::client::{Answer, Session};
use sensor_forward::tls::client_config;
use sensor_log::forward::{BatchMessage, Hello};
use sensor_log::{hex, Body, Timestamp};
use sensor_store::{LogWriter, WriterOptions};

const WINDOW: usize = 64;

fn main() {
    let records: u64 = std::env::args()
        .nth(1)
        .map_or(200_000, |a| a.parse().expect("a number"));
    let log = tempfile::tempdir().expect("tempdir");
    let (host, key, batches) = write(log.path(), records);
    let total: u64 = batches.iter().map(|b| b.records.len() as u64).sum();
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/sensor-collector");
    let pki = Pki::new();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite:{}", dir.path().join("collector.db").display());
    let c = CollectorProcess::start(
        &binary,
        &pki,
        dir.path(),
        &sqlite,
        "enrollment = \"first_contact\"",
    );
    let rate = runtime.block_on(stream(&c, &pki, host, key, &batches));
    println!(
        "sqlite: {total} records in {} batches: {rate:.0} records/s",
        batches.len()
    );
    drop(c);

    let pg = pg_harness::PgServer::start().expect("PostgreSQL");
    let url = pg.url();
    let init = url.clone();
    std::thread::spawn(move || sensor_collector::store::init(&init, None))
        .join()
        .expect("thread")
        .expect("schema");
    let dir = tempfile::tempdir().expect("tempdir");
    let c = CollectorProcess::start(
        &binary,
        &pki,
        dir.path(),
        &url,
        "enrollment = \"first_contact\"",
    );
    let rate = runtime.block_on(stream(&c, &pki, host, key, &batches));
    println!(
        "postgresql: {total} records in {} batches: {rate:.0} records/s",
        batches.len()
    );
}

/// A log of `records` events in batches of 1,024: host id, key, and the outbox's batches.
fn write(dir: &Path, records: u64) -> ([u8; 16], [u8; 32], Vec<BatchMessage>) {
    let mut writer = LogWriter::open(dir, WriterOptions::default()).expect("open log");
    let Body::Event(event) = sensor_log::vectors::records()[1].body.clone() else {
        panic!("vector record 2 is an event")
    };
    for _ in 0..records {
        let now = Timestamp::now();
        writer
            .append(event.clone(), now.wall_ns, now.mono_ns)
            .expect("append");
        if writer.pending_records() >= 1024 {
            writer.seal(now).expect("seal");
        }
    }
    writer.close(Timestamp::now()).expect("close");
    let (host, key, batches) = collector_harness::outbox(dir);
    (host, key.to_bytes(), batches)
}

async fn stream(
    c: &CollectorProcess,
    pki: &Pki,
    host: [u8; 16],
    key: [u8; 32],
    batches: &[BatchMessage],
) -> f64 {
    let id = pki.host(&hex::encode(host));
    let tls = client_config(&id.cert, &id.key, &pki.ca).expect("tls");
    let hello = Hello {
        host_id: host,
        agent_version: "bench".into(),
        oldest: 1,
        newest: batches.len() as u64,
        keys: vec![(1, key)],
    };
    let mut s = Session::connect(&c.addr, "localhost", tls, hello)
        .await
        .expect("session");
    let started = Instant::now();
    let (mut sent, mut answered, mut records) = (0, 0, 0u64);
    while answered < batches.len() {
        while sent < batches.len() && sent - answered < WINDOW {
            s.send(&batches[sent]).await.expect("send");
            sent += 1;
        }
        match s.answer().await.expect("answer") {
            Answer::Ack(n) => records += batches[n as usize - 1].records.len() as u64,
            Answer::Refuse(r) => panic!("refused: {r:?}"),
        }
        answered += 1;
    }
    records as f64 / started.elapsed().as_secs_f64()
}
