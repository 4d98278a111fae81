//! Runs the built `sensorctl` against a real log written by the LogWriter.

use std::path::Path;
use std::process::{Command, Output};

use sensor_log::{
    AgentStatus, Event, FileAccess, Identity, Kind, LogWriter, Process, Timestamp, WriterOptions,
};

/// 2023-11-14T22:13:20Z
const BASE_NS: u64 = 1_700_000_000_000_000_000;

fn event(i: u64) -> Event {
    let alice = i.is_multiple_of(2);
    Event {
        kind: if i % 5 == 4 {
            Kind::Ptrace
        } else {
            Kind::FileOpen
        },
        time: sensor_log::time::rfc3339(BASE_NS + i * 60_000_000_000),
        ok: true,
        errno: None,
        process: Some(Process {
            pid: 100 + u32::try_from(i).unwrap_or(0),
            exe: "/usr/bin/cat".to_string(),
            ..Process::default()
        }),
        identity: Some(Identity {
            user: if alice { "alice" } else { "backup" }.to_string(),
            unit: Some(
                if alice {
                    "session-3.scope"
                } else {
                    "backup.service"
                }
                .to_string(),
            ),
            human: alice,
            owner: Some("ops".to_string()),
            ..Identity::default()
        }),
        file: Some(FileAccess {
            path: if alice {
                "/home/alice/.ssh/id_ed25519"
            } else {
                "/etc/shadow"
            }
            .to_string(),
            kind: if alice { "ssh-key" } else { "password-db" }.to_string(),
            access: "read".to_string(),
            ..FileAccess::default()
        }),
        target: None,
        syscall: None,
        loss: None,
    }
}

/// Ten events one minute apart from BASE_NS.
fn log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = LogWriter::open(
        dir.path(),
        WriterOptions {
            batch_max_records: 4,
            ..WriterOptions::default()
        },
    )
    .expect("open");
    for i in 0..10 {
        w.append(event(i), BASE_NS + i * 60_000_000_000, i)
            .expect("append");
    }
    w.seal(Timestamp::now()).expect("seal");
    w.close(Timestamp::now()).expect("close");
    dir
}

fn sensorctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sensorctl"))
        .arg("--state-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run sensorctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn events_table_and_json() {
    let dir = log();
    let table = sensorctl(dir.path(), &["events"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.starts_with("SEQ"), "{text}");
    assert!(text.contains("/etc/shadow (password-db, read)") && text.contains("epoch_start"));

    let all = json_lines(&sensorctl(dir.path(), &["events", "--json"]));
    assert_eq!(all.len(), 11, "one EpochStart and ten events");
    assert_eq!(all[1]["seq"], 2);
    assert_eq!(all[1]["process"]["pid"], 100);
}

#[test]
fn events_filters() {
    let dir = log();
    let count = |args: &[&str]| {
        let mut full = vec!["events", "--json"];
        full.extend_from_slice(args);
        let out = sensorctl(dir.path(), &full);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        json_lines(&out)
    };
    assert_eq!(count(&["--kind", "ptrace"]).len(), 2);
    assert!(count(&["--kind", "ptrace"])
        .iter()
        .all(|v| v["kind"] == "ptrace"));
    assert_eq!(count(&["--path", "/etc/*"]).len(), 5);
    assert_eq!(count(&["--path", "/home/**/id_*"]).len(), 5);
    assert_eq!(count(&["--identity", "alice"]).len(), 5);
    assert_eq!(count(&["--unit", "backup.service"]).len(), 5);
    assert_eq!(count(&["--human"]).len(), 5);
    assert_eq!(count(&["--non-human", "--kind", "file_open"]).len(), 4);
    assert_eq!(count(&["--pid", "103"])[0]["seq"], 5);
    assert_eq!(count(&["--exe", "/usr/bin/cat"]).len(), 10);
    assert_eq!(
        count(&[
            "--since",
            "2023-11-14T22:15:00Z",
            "--until",
            "2023-11-14T22:17:00Z",
            "--kind",
            "file_open"
        ])
        .len(),
        2
    );
    assert!(count(&["--since", "1h", "--kind", "file_open"]).is_empty());
    let limited = count(&["--limit", "3"]);
    assert_eq!(
        limited
            .iter()
            .map(|v| v["seq"].as_u64())
            .collect::<Vec<_>>(),
        [Some(9), Some(10), Some(11)]
    );
}

#[test]
fn usage_errors_are_one_sentence_and_exit_2() {
    let dir = log();
    let out = sensorctl(dir.path(), &["events", "--kind", "telepathy"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown kind `telepathy`; valid kinds: file_open"),
        "{}",
        stderr(&out)
    );

    let out = sensorctl(dir.path(), &["events", "--since", "yesterday-ish"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("RFC 3339") && stderr(&out).contains("1h"),
        "{}",
        stderr(&out)
    );

    let missing = dir.path().join("nowhere");
    for args in [
        &["events"][..],
        &["verify"],
        &["status"],
        &["identities"],
        &["key", "show"],
    ] {
        let out = sensorctl(&missing, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("nowhere") && stderr(&out).contains("has not run"),
            "{}",
            stderr(&out)
        );
    }
    let out = sensorctl(dir.path(), &["verify", "--public-key", "zz"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn verify_exit_codes() {
    let dir = log();
    let out = sensorctl(dir.path(), &["verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("intact: 11 records and"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("trust on first use"));

    let key = stdout(&sensorctl(dir.path(), &["key", "show"]));
    let hex = key
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("public key: "))
        .expect("key line")
        .to_string();
    let pinned = sensorctl(dir.path(), &["verify", "--public-key", &hex]);
    assert!(pinned.status.success() && !stderr(&pinned).contains("trust on first use"));

    let conn = rusqlite::Connection::open(dir.path().join("log.db")).expect("db");
    conn.execute("DELETE FROM records WHERE seq = 6", [])
        .expect("delete");
    let out = sensorctl(dir.path(), &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("seq 6: deleted"), "{}", stderr(&out));
}

#[test]
fn identities_and_status() {
    let dir = log();
    let out = sensorctl(dir.path(), &["identities", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ids = json_lines(&out);
    assert_eq!(ids.len(), 2);
    let alice = ids.iter().find(|v| v["user"] == "alice").expect("alice");
    assert_eq!(alice["human"], true);
    assert_eq!(alice["count"], 5);
    assert_eq!(
        alice["credentials"][0]["path"],
        "/home/alice/.ssh/id_ed25519"
    );
    assert!(stdout(&sensorctl(dir.path(), &["identities"])).contains("backup.service"));

    // A live pid that is not the agent's (this test's own) is not taken for the agent.
    AgentStatus {
        pid: std::process::id(),
        started: "2025-01-01T00:00:00Z".to_string(),
        ..AgentStatus::default()
    }
    .write(dir.path())
    .expect("status");
    let out = sensorctl(dir.path(), &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("agent:       not running (pid")
            && text.contains("chain head:")
            && text.contains("records:     11"),
        "{text}"
    );
}
