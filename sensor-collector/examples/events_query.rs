//! Bench of `sensor-collector events --host H --since 1h` on a PostgreSQL store holding
//! RECORDS records (default 10 million) in batch rows of PER_BATCH records (default 100)
//! for HOSTS hosts (default 100), one batch per host every 36 s, the newest now: 1,000 batch
//! rows per host over 10 hours, 100 of them in the last hour (docs/performance.md,
//! "Collector queries").
//!
//! One real batch is written by the agent's `LogWriter` (events dated 30 minutes ago) and
//! stored by the collector's ingest; the rows are copies of it made by SQL
//! (`INSERT … SELECT … generate_series`), each with its own host, number and wall range, so
//! the index sees the fleet and the command decodes real records; stored uncompressed, as
//! distinct records would be. The server is a throw-away
//! one (`pg_harness`); `auto_explain` logs the plan of every statement the command runs, with
//! its timing, and this prints the plans of its batch query.
//!
//! `PARTITIONS=16` measures the same on the table hash-partitioned by host instead.
//!
//! `cargo build --release -p sensor-collector && cargo run --release -p sensor-collector --example events_query -- [RECORDS [PER_BATCH [HOSTS]]]`

use std::process::Command;
use std::time::{Duration, Instant};

use sensor_collector::ingest::{Collector, Reply};
use sensor_collector::store::{Host, PostgresStore};
use sensor_log::{Body, Kind, Timestamp};
use sensor_store::{LogWriter, WriterOptions};

const SECOND: u64 = 1_000_000_000;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .map_or(default, |a| a.parse().expect("a number"))
}

fn main() {
    let records = arg(1, 10_000_000);
    let per_batch = arg(2, 100);
    let hosts = arg(3, 100);
    let per_host = records / per_batch / hosts;
    let pg = pg_harness::PgServer::start().expect("PostgreSQL");
    let url = pg.url();
    PostgresStore::init(&url, None).expect("schema");
    // Copies of one batch would compress to almost nothing; distinct records do not.
    pg.psql("ALTER TABLE batches ALTER records SET STORAGE EXTERNAL")
        .expect("storage");

    // One real batch of PER_BATCH events, verified and stored by the ingest.
    let dir = tempfile::tempdir().expect("dir");
    let mut w = LogWriter::open(
        dir.path(),
        WriterOptions {
            batch_max_records: usize::try_from(per_batch).expect("fits"),
            ..WriterOptions::default()
        },
    )
    .expect("log");
    let Body::Event(template) = sensor_log::vectors::records()[1].body.clone() else {
        panic!("vector record 2 is an event")
    };
    let now = Timestamp::now().wall_ns;
    // A credential read as the sensor logs one: about 300 bytes encoded.
    let mut template = template;
    if let Some(p) = template.process.as_mut() {
        (p.pid, p.ppid, p.uid, p.euid, p.auid) = (48213, 48190, 1000, 1000, 1000);
        p.comm = "ssh".into();
        p.exe = "/usr/bin/ssh".into();
        p.cmdline = "ssh -i /home/alice/.ssh/id_ed25519 deploy@build-17.internal".into();
        p.ancestors = vec!["/usr/bin/bash".into(), "/usr/sbin/sshd".into()];
    }
    if let Some(i) = template.identity.as_mut() {
        i.user = "alice".into();
        i.unit = Some("session-42.scope".into());
        i.human_reason = "interactive login session".into();
        i.owner = Some("platform-team".into());
    }
    if let Some(f) = template.file.as_mut() {
        f.path = "/home/alice/.ssh/id_ed25519".into();
        f.requested = f.path.clone();
        f.kind = "ssh-key".into();
        f.access = "read".into();
        f.flags = "O_RDONLY|O_CLOEXEC".into();
        f.syscall = "openat".into();
        f.inode = Some(1_835_021);
    }
    template.time = sensor_log::time::rfc3339(now);
    for i in 0..per_batch * 3 {
        let mut e = template.clone();
        e.kind = if i % 5 == 4 {
            Kind::Ptrace
        } else {
            Kind::FileOpen
        };
        w.append(e, now - 1800 * SECOND + i, i).expect("append");
    }
    w.close(Timestamp::now()).expect("close");
    let store = sensor_store::Store::open_read_only(dir.path()).expect("store");
    let (_, key) = store.oldest_key().expect("read").expect("key");
    let first = store.first_batch().expect("read").expect("batch");
    let host_id = first.header.host_id;
    let mut c = Collector::new(Box::new(PostgresStore::connect(&url).expect("connect")));
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
    for n in 1..=3 {
        let m = store.outbox_batch(n).expect("read").expect("held");
        assert!(matches!(
            c.receive(&host_id, &m).expect("ingest"),
            Reply::Ack(_)
        ));
    }
    drop(c);

    // PARTITIONS=N: the alternative measured and not taken (docs/collector.md, "Schema"):
    // the same table hash-partitioned by host into N partitions, with the same indexes.
    let partitions: Option<u32> = std::env::var("PARTITIONS")
        .ok()
        .map(|n| n.parse().expect("PARTITIONS: a number"));
    if let Some(n) = partitions {
        let mut sql = "ALTER TABLE batches RENAME TO batches_plain;
             CREATE TABLE batches (LIKE batches_plain INCLUDING DEFAULTS INCLUDING STORAGE)
                 PARTITION BY HASH (host_id);"
            .to_string();
        for i in 0..n {
            sql.push_str(&format!(
                "CREATE TABLE batches_{i} PARTITION OF batches
                     FOR VALUES WITH (MODULUS {n}, REMAINDER {i});"
            ));
        }
        sql.push_str(
            "ALTER TABLE batches ADD PRIMARY KEY (host_id, number);
             CREATE INDEX ON batches (host_id, max_wall);
             CREATE INDEX ON batches (max_wall);
             CREATE INDEX ON batches (xact);
             INSERT INTO batches SELECT * FROM batches_plain;",
        );
        pg.psql(&sql).expect("partitioned table");
    }
    // The partitioned copy has no identity column: its rows are numbered here.
    let (received, received_value) = match partitions {
        Some(_) => (", received", ", h * 1000000 + n"),
        None => ("", ""),
    };
    let started = Instant::now();
    let step = 36 * SECOND;
    for h in 1..=hosts {
        pg.psql(&format!(
            "INSERT INTO batches (host_id, number, epoch, first_seq, count, wall_ns, header,
                                  signature, digest, records, received_ns, min_wall, max_wall,
                                  kinds{received})
             SELECT decode(lpad(to_hex(h), 32, '0'), 'hex'), n, epoch, first_seq, count,
                    wall_ns, header, signature, digest, records, received_ns,
                    {now} - ({per_host} - n) * {step} - {step} + 1,
                    {now} - ({per_host} - n) * {step}, kinds{received_value}
             FROM batches, (SELECT {h} AS h) host, generate_series(1, {per_host}) n
             WHERE host_id = '\\x{}' AND number = 2",
            sensor_log::hex::encode(host_id)
        ))
        .expect("generate rows");
    }
    pg.psql("VACUUM ANALYZE batches").expect("analyze");
    println!(
        "one batch of {per_batch} records: {} bytes of record items",
        pg.psql(&format!(
            "SELECT length(records) FROM batches WHERE host_id = '\\x{}' AND number = 2",
            sensor_log::hex::encode(host_id)
        ))
        .expect("size")
    );
    println!(
        "generated {} batch rows ({} records) for {hosts} hosts in {:.1?}; table size {}",
        hosts * per_host,
        hosts * per_host * per_batch,
        started.elapsed(),
        pg.psql("SELECT pg_size_pretty(pg_total_relation_size('batches'))")
            .expect("size")
    );

    pg.psql("ALTER ROLE sensor_test SET session_preload_libraries = 'auto_explain'")
        .expect("auto_explain");
    for setting in [
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_analyze = on",
        "auto_explain.log_buffers = on",
    ] {
        pg.psql(&format!("ALTER ROLE sensor_test SET {setting}"))
            .expect("setting");
    }
    let host = format!("{:032x}", hosts / 2);
    // Built beside this example (target/release/examples/..).
    let binary = std::env::current_exe()
        .expect("this example's path")
        .parent()
        .and_then(|examples| examples.parent())
        .expect("the target directory")
        .join("sensor-collector");
    for run in 1..=3 {
        let started = Instant::now();
        let out = Command::new(&binary)
            .args([
                "--store", &url, "events", "--host", &host, "--since", "1h", "--json",
            ])
            .output()
            .expect("run sensor-collector");
        let took: Duration = started.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = out.stdout.iter().filter(|&&b| b == b'\n').count();
        println!("run {run}: events --host H --since 1h --json: {lines} events in {took:.1?}");
    }
    let log = std::fs::read_to_string(pg.socket_dir().join("server.log")).expect("server log");
    let plans: Vec<&str> = log
        .split("LOG:  duration:")
        .filter(|p| p.contains("FROM batches") && p.contains("max_wall >="))
        .collect();
    println!("plans of the batch query (auto_explain, last run):");
    if let Some(plan) = plans.last() {
        println!("duration:{plan}");
    }
}
