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

#[test]
fn alarms_lists_each_alarm_with_its_kind_batch_and_cause() {
    let (dir, db, host) = filled();
    let out = run(&db, &["alarms", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "an intact host has no alarm");

    // A batch changed in transit, sent twice: one alarm.
    let host_dir = tempfile::tempdir().expect("tempdir");
    write(host_dir.path(), 20, 100);
    let (id, key, messages) = outbox(host_dir.path());
    let mut c = collector(dir.path());
    let mut forged = messages[0].clone();
    forged.signature[0] ^= 1;
    let other = hex::encode(id);
    for _ in 0..2 {
        // Not enrolled: refused, no alarm. Enrolled hosts only are listed.
        assert!(matches!(
            c.receive(&id, &forged).expect("ingest"),
            Reply::Refuse(_)
        ));
    }
    enroll(&mut c, id, key);
    for _ in 0..2 {
        assert!(matches!(
            c.receive(&id, &forged).expect("ingest"),
            Reply::Refuse(_)
        ));
    }
    let out = run(&db, &["alarms", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let alarms: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0]["host"], other.as_str());
    assert_eq!(alarms[0]["kind"], "bad_signature");
    assert_eq!(alarms[0]["batch"], 1);
    assert!(
        alarms[0]["raised"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{alarms:?}"
    );

    let table = run(&db, &["alarms", "--host", &other]);
    assert!(table.status.success(), "{}", stderr(&table));
    let lines: Vec<String> = stdout(&table).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("RAISED"), "{lines:?}");
    assert!(
        lines[1].contains(&other) && lines[1].contains("bad_signature"),
        "{lines:?}"
    );
    let out = run(&db, &["alarms", "--host", &host]);
    assert_eq!(stdout(&out).lines().count(), 1, "only the header");
    let out = run(&db, &["alarms", "--host", &"33".repeat(16)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
