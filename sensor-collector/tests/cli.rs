//! The built `sensor-collector` against a real store filled by the ingest with real logs:
//! it lists hosts, approves one, and `verify` passes an intact store and names what was
//! changed in a tampered one (a record, a missing batch, a checkpoint moved by hand).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{collector, enroll, outbox, write};
use sensor_collector::ingest::Reply;
use sensor_log::hex;

fn run(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sensor-collector"))
        .arg("--store")
        .arg(format!("sqlite:{}", db.display()))
        .args(args)
        .output()
        .expect("run sensor-collector")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A collector store holding one host's 20-event log; returns (its dir, the db, host id hex).
fn filled() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let host_dir = tempfile::tempdir().expect("tempdir");
    write(host_dir.path(), 20, 100);
    let (host, key, messages) = outbox(host_dir.path());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = collector(dir.path());
    enroll(&mut c, host, key);
    for m in &messages {
        assert!(matches!(
            c.receive(&host, m).expect("ingest"),
            Reply::Ack(_)
        ));
    }
    let db = dir.path().join("collector.db");
    (dir, db, hex::encode(host))
}

#[test]
fn hosts_lists_and_approves() {
    let (_dir, db, host) = filled();
    let out = run(&db, &["hosts"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with(&host))
        .expect("the host's line")
        .to_string();
    assert!(line.contains("operator"), "{line}");

    let other = "22".repeat(16);
    let bad = run(&db, &["hosts", "approve", &other, "00"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let key = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[3; 32])
            .verifying_key()
            .as_bytes(),
    );
    let ok = run(&db, &["hosts", "approve", &other, &key]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let again = run(&db, &["hosts", "approve", &other, &key]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already enrolled"),
        "{}",
        stderr(&again)
    );
    assert!(stdout(&run(&db, &["hosts"])).contains(&other));
}

#[test]
fn verify_passes_an_intact_store_and_names_what_was_changed() {
    let (_dir, db, host) = filled();
    let out = run(&db, &["verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("host {host}: intact:")),
        "{}",
        stdout(&out)
    );

    // A record changed inside batch 3's stored items (its last byte: an event field).
    let conn = rusqlite::Connection::open(&db).expect("db");
    let mut records: Vec<u8> = conn
        .query_row("SELECT records FROM batches WHERE number = 3", [], |r| {
            r.get(0)
        })
        .expect("batch 3");
    let last = records.len() - 1;
    records[last] ^= 1;
    conn.execute(
        "UPDATE batches SET records = ?1 WHERE number = 3",
        [&records],
    )
    .expect("update");
    let out = run(&db, &["verify", "--host", &host]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(": modified"), "{}", stderr(&out));

    let (_dir, db, _) = filled();
    let conn = rusqlite::Connection::open(&db).expect("db");
    conn.execute("DELETE FROM batches WHERE number = 2", [])
        .expect("delete");
    let out = run(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("batch 2: deleted"),
        "{}",
        stderr(&out)
    );

    // The newest batch gone, and with it the end of the chain the checkpoint points past.
    let (_dir, db, _) = filled();
    let conn = rusqlite::Connection::open(&db).expect("db");
    conn.execute(
        "DELETE FROM batches WHERE number = (SELECT MAX(number) FROM batches)",
        [],
    )
    .expect("delete");
    let out = run(&db, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not where its batches lead"),
        "{}",
        stderr(&out)
    );

    let out = run(&db, &["verify", "--host", &"33".repeat(16)]);
    assert_eq!(out.status.code(), Some(2));
}
