//! The log written by the real agent: tampering is named by `sensorctl verify`, a crash in a
//! storm loses nothing durable and the chain continues, a full disk is survived and the gap
//! is chained as a loss.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use rusqlite::Connection;
use sensor_store::tamper;
use sensor_tests::{events, openloop, secret_in, sensorctl, Agent, STORM};

/// A config watching one file in `dir`.
fn config(secret: &Path, extra: &str) -> String {
    format!(
        "[agent]\n{STORM}{extra}\n[[watch]]\npath = \"{}\"\nkind = \"ssh-key\"\n",
        secret.display()
    )
}

/// Waits until `n` events of `path` have been logged (polls the store).
fn wait_logged(dir: &Path, path: &Path, n: usize) {
    for _ in 0..300 {
        let logged = events(dir, "file_open")
            .iter()
            .filter(|e| e["file"]["path"] == path.to_str().unwrap_or(""))
            .count();
        if logged >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("fewer than {n} events of {} were logged", path.display());
}

fn verify(dir: &Path) -> (i32, String) {
    let (code, out, err) = sensorctl(dir, &["verify"]);
    (code, format!("{out}{err}"))
}

/// A log written by the agent: an epoch start, the entry saying it is not anchored in a TPM
/// (this host has none) and 40 watched opens, stopped cleanly.
fn agent_log() -> tempfile::TempDir {
    let files = tempfile::tempdir().expect("tempdir");
    let secret = secret_in(files.path());
    let state = tempfile::tempdir().expect("state");
    let mut agent = Agent::start_at(&config(&secret, ""), state.path(), &[]);
    assert!(openloop(40, &secret).wait().expect("openloop").success());
    wait_logged(state.path(), &secret, 40);
    agent.stop();
    state
}

/// A copy of `dir` to tamper with.
fn copy(dir: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.display()))
        .arg(to.path())
        .status()
        .expect("cp");
    assert!(status.success());
    to
}

fn tamper(dir: &Path, f: impl FnOnce(&Connection)) -> (i32, String) {
    let copy = copy(dir);
    f(&Connection::open(copy.path().join("log.db")).expect("open db"));
    verify(copy.path())
}

#[test]
fn tampering_with_the_agent_log_is_named() {
    let log = agent_log();
    let (code, out) = verify(log.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact: 42 records"), "{out}");

    let (code, out) = tamper(log.path(), |c| {
        tamper::edit_rows(c, |rows| {
            let bytes = &mut tamper::row(rows, 20).bytes;
            let at = bytes.len() - 10;
            bytes[at] ^= 1;
        });
    });
    assert_eq!(code, 1);
    assert!(out.contains("seq 20: modified"), "{out}");

    let (code, out) = tamper(log.path(), |c| tamper::delete(c, 25));
    assert_eq!(code, 1);
    assert!(out.contains("seq 25: deleted"), "{out}");

    let (code, out) = tamper(log.path(), |c| tamper::swap(c, 30, 31));
    assert_eq!(code, 1);
    assert!(out.contains("seq 30: reordered"), "{out}");

    let (code, out) = tamper(log.path(), |c| {
        // A forged record: a copy of seq 10 stored as a new seq after the last one.
        tamper::edit_rows(c, |rows| {
            let mut forged = tamper::row(rows, 10).clone();
            forged.seq = 1000;
            rows.push(forged);
        });
    });
    assert_eq!(code, 1);
    assert!(out.contains("inserted"), "{out}");

    let (code, out) = tamper(log.path(), |c| {
        c.execute("UPDATE batches SET signature = zeroblob(64) WHERE number = (SELECT MIN(number) + 2 FROM batches)", [])
            .expect("signature");
    });
    assert_eq!(code, 1);
    assert!(out.contains("bad signature"), "{out}");
}

#[test]
fn a_crash_in_a_storm_loses_nothing_durable() {
    let files = tempfile::tempdir().expect("tempdir");
    let secret = secret_in(files.path());
    let state = tempfile::tempdir().expect("state");
    let cfg = config(&secret, "");
    let mut agent = Agent::start_at(&cfg, state.path(), &[]);
    let mut storm = openloop(5_000_000, &secret);
    wait_logged(state.path(), &secret, 1000);
    agent.crash();
    let _ = storm.kill();
    let _ = storm.wait();

    let (code, out) = verify(state.path());
    assert_eq!(code, 0, "after the crash: {out}");

    let mut agent = Agent::start_at(&cfg, state.path(), &[]);
    assert!(openloop(10, &secret).wait().expect("openloop").success());
    std::thread::sleep(Duration::from_millis(1500));
    agent.stop();
    let (code, out) = verify(state.path());
    assert_eq!(code, 0, "after the restart: {out}");
    assert!(out.contains("2 epochs"), "{out}");
    let (_, table, _) = sensorctl(state.path(), &["events", "--kind", "epoch_start"]);
    assert!(
        table.contains("Crash"),
        "the second epoch says the first crashed: {table}"
    );
}

#[test]
fn a_full_disk_is_survived_and_the_gap_is_chained() {
    let files = tempfile::tempdir().expect("tempdir");
    let secret = secret_in(files.path());
    let state = tempfile::tempdir().expect("state");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(state.path())
        .status()
        .expect("mount");
    assert!(mounted.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.path().to_path_buf());

    let cfg = config(&secret, "[log]\nmax_pending_records = 500\n");
    let mut agent = Agent::start_at(&cfg, state.path(), &[]);
    // Fill the disk, then cause more events than the writer may hold in memory.
    let filler = state.path().join("filler");
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .args(["bs=64k", "status=none"])
        .status();
    const OPENS: u64 = 3000;
    assert!(openloop(OPENS, &secret).wait().expect("openloop").success());
    std::thread::sleep(Duration::from_secs(2));
    // Room again: the pending records are sealed and the gap is chained.
    std::fs::remove_file(&filler).expect("remove filler");
    std::thread::sleep(Duration::from_secs(3));
    agent.stop();

    let (code, out) = verify(state.path());
    assert_eq!(code, 0, "{out}");
    let logged = events(state.path(), "file_open").len() as u64;
    let lost: u64 = events(state.path(), "loss")
        .iter()
        .filter(|e| e["loss"]["source"] == "disk_full")
        .map(|e| e["loss"]["counts"]["file_open"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        lost > 0,
        "a full disk with a 500-record buffer must drop some of {OPENS} events"
    );
    assert_eq!(logged + lost, OPENS, "logged {logged} + lost {lost}");
}

/// `sensorctl status` judges liveness by the age of the newest batch in units of the agent's
/// own `batch_interval`, which the agent reports: an agent sealing every 8 s is running 6 s
/// after its last batch, not "NOT RECORDING" by a 1 s default.
#[test]
fn status_uses_the_agents_batch_interval() {
    let files = tempfile::tempdir().expect("tempdir");
    let secret = secret_in(files.path());
    let mut agent = Agent::start(&config(&secret, "[log]\nbatch_interval = \"8s\""));
    std::thread::sleep(Duration::from_secs(7));
    let (code, out, err) = sensorctl(&agent.state_dir, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("agent:       running"), "{out}");
    agent.stop();
}

/// The key found on disk at start (possibly copied while the agent was stopped, or pinned at
/// install) is replaced soon after start: the next key is announced under it, and its file is
/// destroyed; the log still verifies.
#[test]
fn the_start_key_is_rotated_soon_after_start() {
    let files = tempfile::tempdir().expect("tempdir");
    let secret = secret_in(files.path());
    let mut agent = Agent::start(&config(&secret, "[log]\nfirst_key_rotation = \"2s\""));
    let keys = agent.state_dir.join("keys");
    assert!(keys.join("ed25519-1.key").exists());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while keys.join("ed25519-1.key").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the start key was not rotated"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(keys.join("ed25519-2.key").exists());
    agent.stop();
    let (code, out, err) = sensorctl(&agent.state_dir, &["key", "show"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("key epoch:  2\n"), "{out}");
    let (code, out) = verify(&agent.state_dir);
    assert_eq!(code, 0, "{out}");
}
