//! Runs the built `sensorctl` against a real log written by the LogWriter.

use std::path::Path;
use std::process::{Command, Output};

use sensor_log::{Event, FileAccess, Identity, Kind, Process, Timestamp};
use sensor_store::{AgentStatus, LogWriter, WriterOptions};

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
        detail: None,
    }
}

/// Ten events one minute apart from BASE_NS.
fn log() -> tempfile::TempDir {
    log_of(10)
}

/// `n` events one minute apart from BASE_NS, in batches of 4.
fn log_of(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = LogWriter::open(
        dir.path(),
        WriterOptions {
            batch_max_records: 4,
            ..WriterOptions::default()
        },
    )
    .expect("open");
    for i in 0..n {
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

/// `verify` said the 11 records of `log()` are intact, with the key taken on first use.
fn assert_intact_on_trust(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
    assert!(
        stdout(out).starts_with("intact: 11 records and"),
        "{}",
        stdout(out)
    );
    assert!(stderr(out).contains("trust on first use"));
}

#[test]
fn verify_exit_codes() {
    let dir = log();
    let out = sensorctl(dir.path(), &["verify"]);
    assert_intact_on_trust(&out);

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
    sensor_store::tamper::delete(&conn, 6);
    let out = sensorctl(dir.path(), &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("seq 6: deleted"), "{}", stderr(&out));
}

/// `export` then `verify --file`: the same verdicts as the store, without the store; an
/// existing file is never overwritten; a damaged file is refused with the byte offset.
#[test]
fn export_and_verify_the_file_elsewhere() {
    let dir = log();
    let out_dir = tempfile::tempdir().expect("tempdir");
    let file = out_dir.path().join("host.batches");
    let file_arg = file.to_str().expect("utf-8 path");
    let out = sensorctl(dir.path(), &["export", file_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("exported"), "{}", stdout(&out));
    let again = sensorctl(dir.path(), &["export", file_arg]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));

    // Verified from another (empty) state directory: only the file is read.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let out = sensorctl(elsewhere.path(), &["verify", "--file", file_arg]);
    assert_intact_on_trust(&out);

    let conn = rusqlite::Connection::open(dir.path().join("log.db")).expect("db");
    sensor_store::tamper::delete(&conn, 6);
    let cut = out_dir.path().join("cut.batches");
    let cut_arg = cut.to_str().expect("utf-8 path");
    assert!(sensorctl(dir.path(), &["export", cut_arg]).status.success());
    let out = sensorctl(elsewhere.path(), &["verify", "--file", cut_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("seq 6: deleted"), "{}", stderr(&out));

    let mut bytes = std::fs::read(&file).expect("read");
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&file, bytes).expect("write");
    let out = sensorctl(elsewhere.path(), &["verify", "--file", file_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("malformed batch file: at byte"),
        "{}",
        stderr(&out)
    );
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
        text.contains("agent:       NOT RUNNING (pid")
            && text.contains("chain head:")
            && text.contains("records:     11"),
        "{text}"
    );
}

/// Every command ends quietly when its reader has gone: the read end of its stdout is
/// closed before it writes a byte, as `sensorctl events | head -1` does once head has its line.
#[test]
fn closed_stdout_ends_every_command_quietly() {
    let dir = log();
    for args in [
        &["events"][..],
        &["events", "--json"],
        &["identities"],
        &["verify"],
        &["status"],
        &["key", "show"],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_sensorctl"))
            .arg("--state-dir")
            .arg(dir.path())
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run sensorctl");
        let err = stderr(&out);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
    }
}

/// A program that is not the agent, named `sensor-agent` (a copy of `sleep`); killed on drop.
struct Impostor(std::process::Child);

impl Impostor {
    fn start(dir: &Path) -> Impostor {
        let sleep = ["/bin/sleep", "/usr/bin/sleep"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("coreutils sleep");
        let copy = dir.join("sensor-agent");
        // `cp` writes the copy, not this process: a test thread forking while the copy's
        // writable descriptor were open here would hold it, and exec would fail with ETXTBSY.
        let cp = Command::new("cp")
            .arg(sleep)
            .arg(&copy)
            .status()
            .expect("run cp");
        assert!(cp.success(), "cp {sleep}: {cp}");
        Impostor(
            Command::new(&copy)
                .arg("600")
                .spawn()
                .expect("start the copy"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The copy's executable as /proc shows it, which a forger can write into status.json.
    fn exe(&self) -> serde_json::Value {
        use std::os::unix::fs::MetadataExt;
        let link = format!("/proc/{}/exe", self.pid());
        let path = std::fs::read_link(&link).expect("exe link");
        let file = std::fs::metadata(&link).expect("exe");
        serde_json::json!({"path": path, "dev": file.dev(), "ino": file.ino()})
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes status.json by hand, as a root forging it would (fields older agents lack included).
fn forge_status(dir: &Path, pid: u32, extra: serde_json::Value) {
    let mut status = serde_json::json!({
        "pid": pid,
        "started": "2025-01-01T00:00:00Z",
        "updated": sensor_log::time::rfc3339(Timestamp::now().wall_ns),
        "probe_modes": {},
        "events": {},
        "losses": {},
        "anchor": {"state": "anchored", "detail": "device:/dev/tpmrm0", "pcr": 13,
                   "last_extended_batch": 3, "last_quoted_batch": 3, "nv_counter": 1,
                   "gaps": 0, "tpm_commands": 10},
    });
    if let (Some(status), serde_json::Value::Object(extra)) = (status.as_object_mut(), extra) {
        status.extend(extra);
    }
    std::fs::write(dir.join("status.json"), status.to_string()).expect("status.json");
}

fn agent_line(dir: &Path) -> String {
    let out = sensorctl(dir, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    text.lines()
        .find(|l| l.starts_with("agent:"))
        .unwrap_or_else(|| panic!("no agent line: {text}"))
        .to_string()
}

/// A log whose newest batch was sealed ten minutes ago: the agent that wrote it is gone.
fn stale_log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = LogWriter::open(dir.path(), WriterOptions::default()).expect("open");
    let then = Timestamp::now().wall_ns - 600_000_000_000;
    w.append(event(1), then, 1).expect("append");
    w.close(Timestamp {
        wall_ns: then,
        mono_ns: 2,
    })
    .expect("close");
    dir
}

#[test]
fn status_does_not_take_a_copy_named_sensor_agent_for_the_agent() {
    let work = tempfile::tempdir().expect("tempdir");
    let impostor = Impostor::start(work.path());

    // A spoofed status.json naming the copy's pid, as an older agent would write it.
    let dir = log();
    forge_status(dir.path(), impostor.pid(), serde_json::json!({}));
    let line = agent_line(dir.path());
    assert!(line.starts_with("agent:       UNCONFIRMED"), "{line}");
    assert!(line.contains("sensor-agent"), "{line}");

    // It names an executable the process does not run.
    let mut other = impostor.exe();
    other["ino"] = serde_json::json!(other["ino"].as_u64().expect("ino") + 1);
    forge_status(
        dir.path(),
        impostor.pid(),
        serde_json::json!({ "exe": other }),
    );
    let line = agent_line(dir.path());
    assert!(
        line.starts_with("agent:       NOT RUNNING")
            && line.contains("not the executable the agent recorded"),
        "{line}"
    );

    // It names the copy exactly, but the log stopped ten minutes ago: nobody records.
    let stale = stale_log();
    forge_status(
        stale.path(),
        impostor.pid(),
        serde_json::json!({ "exe": impostor.exe() }),
    );
    let line = agent_line(stale.path());
    assert!(
        line.starts_with("agent:       NOT RECORDING") && line.contains("sealed 10m"),
        "{line}"
    );
    let out = stdout(&sensorctl(stale.path(), &["status"]));
    assert!(
        out.contains("anchor:      (last reported) anchored"),
        "{out}"
    );

    // A dead pid.
    forge_status(
        stale.path(),
        u32::MAX - 1,
        serde_json::json!({ "exe": impostor.exe() }),
    );
    assert!(agent_line(stale.path()).contains("NOT RUNNING (pid 4294967294: no such process)"));
}

#[test]
fn status_reports_a_stopped_agent_and_how_old_its_status_is() {
    let work = tempfile::tempdir().expect("tempdir");
    let agent = Impostor::start(work.path());
    let dir = log();
    // The test's "agent" is the copy itself, its log fresh for an hour-long batch interval.
    forge_status(
        dir.path(),
        agent.pid(),
        serde_json::json!({ "exe": agent.exe(), "batch_interval_ms": 3_600_000 }),
    );
    let line = agent_line(dir.path());
    assert!(line.starts_with("agent:       running (pid"), "{line}");
    let out = stdout(&sensorctl(dir.path(), &["status"]));
    assert!(
        out.lines()
            .any(|l| l.starts_with("updated:") && l.ends_with("s ago)")),
        "{out}"
    );

    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &agent.pid().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    };
    signal("-STOP");
    let stat = format!("/proc/{}/stat", agent.pid());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&stat)
        .expect("stat")
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the process did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let line = agent_line(dir.path());
    signal("-CONT");
    assert!(line.starts_with("agent:       STOPPED"), "{line}");
}

#[test]
fn emptied_log_fails_verify_with_a_pinned_key() {
    let dir = log();
    let key = stdout(&sensorctl(dir.path(), &["key", "show"]));
    let hex = key
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("public key: "))
        .expect("key line")
        .to_string();
    let conn = rusqlite::Connection::open(dir.path().join("log.db")).expect("db");
    conn.execute_batch("DELETE FROM blocks; DELETE FROM postings; DELETE FROM batches;")
        .expect("empty");
    let out = sensorctl(dir.path(), &["verify", "--public-key", &hex]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("batch 1: deleted"),
        "{}",
        stderr(&out)
    );
}

/// A recursive view in place of a table made every command loop forever, filling the
/// temporary directory; each command now refuses the store at once, naming the object.
/// Run as child processes with a deadline, so the old behaviour fails instead of hanging.
#[test]
fn recursive_view_is_refused_not_run() {
    let dir = log();
    let conn = rusqlite::Connection::open(dir.path().join("log.db")).expect("db");
    conn.execute_batch(
        "DROP TABLE postings;
         CREATE VIEW postings (term, batch, offsets) AS
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
         SELECT 1, i, zeroblob(1000) FROM n ORDER BY i DESC;",
    )
    .expect("view");
    drop(conn);
    for args in [
        &["events", "--path", "/etc/*"][..],
        &["status"],
        &["verify"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sensorctl"))
            .arg("--state-dir")
            .arg(dir.path())
            .args(args)
            .env("TMPDIR", dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run sensorctl");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sensorctl {args:?} still running after 10 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("view `postings`"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// `sensorctl events` prints exactly what `tests/events.golden` holds (table and JSON, with
/// and without filters), so moving its rendering into `sensor-view` (shared with
/// `sensor-collector events`) cannot change a byte. The log's first record (its epoch start)
/// carries the time the log was opened and the boot id: masked. `GOLDEN=write` rewrites the
/// file from the current binary.
#[test]
fn events_output_is_pinned() {
    let dir = log();
    let mut shown = String::new();
    for args in [
        &["events"][..],
        &["events", "--json"],
        &["events", "--kind", "ptrace"],
        &["events", "--json", "--path", "/etc/*", "--limit", "2"],
        &["events", "--since", "2023-11-14T22:15:00Z", "--human"],
    ] {
        let out = sensorctl(dir.path(), args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        shown.push_str(&format!("$ sensorctl {}\n", args.join(" ")));
        for line in stdout(&out).lines() {
            let masked = line.contains("epoch_start") || line.starts_with("1 ");
            shown.push_str(if masked { "<epoch start>" } else { line });
            shown.push('\n');
        }
    }
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/events.golden");
    if std::env::var("GOLDEN").is_ok_and(|v| v == "write") {
        std::fs::write(&golden, &shown).expect("write golden");
    }
    let expected = std::fs::read_to_string(&golden).expect("tests/events.golden");
    assert_eq!(shown, expected);
}

/// `events` prints records as the query finds them: a long answer shows its first page
/// before the query has read the rest of the log. Here the index of the log's last batch is
/// damaged, so the query ends in an error there, after printing what came before it.
#[test]
fn events_print_the_first_page_before_reading_the_rest() {
    let dir = log_of(1000);
    let conn = rusqlite::Connection::open(dir.path().join("log.db")).expect("db");
    conn.execute(
        "UPDATE postings SET offsets = 'damaged' WHERE batch = (SELECT MAX(batch) FROM postings)",
        [],
    )
    .expect("damage");

    let table = sensorctl(dir.path(), &["events", "--path", "/etc/shadow"]);
    assert_eq!(table.status.code(), Some(1), "{}", stderr(&table));
    assert!(stderr(&table).contains("are damaged"), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.starts_with("SEQ"), "{text}");
    assert!(text.lines().count() > 100, "a first page: {text}");

    let json = sensorctl(dir.path(), &["events", "--json", "--path", "/etc/shadow"]);
    assert_eq!(json.status.code(), Some(1), "{}", stderr(&json));
    assert!(json_lines(&json).len() > 100);
}
