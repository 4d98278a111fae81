//! The real agent anchored in a real swtpm, which each test starts itself: `verify --tpm`
//! passes while a storm runs; a cut tail, a restored older state directory, a TPM outage and
//! forged quotes are each told apart. Needs root and swtpm (`cargo xtask setup`).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rusqlite::Connection;
use sensor_log::{Store, Verdict};
use sensor_tests::{openloop, sensorctl, Agent};
use sensor_tpm::{quote_binding, replay, swtpm::Swtpm, verify_quote, AkPublic, Error, Quote};
use serde_json::Value;

/// A swtpm, the agent's state directory and a watched file, each in its own temp dir.
struct Setup {
    tpm: Swtpm,
    _tpm_dir: tempfile::TempDir,
    state: tempfile::TempDir,
    _files: tempfile::TempDir,
    secret: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tpm_dir = tempfile::tempdir().expect("tempdir");
        let tpm = Swtpm::start(tpm_dir.path())
            .unwrap_or_else(|e| panic!("cannot start swtpm ({e}): run `cargo xtask setup`"));
        let files = tempfile::tempdir().expect("tempdir");
        let secret = files
            .path()
            .canonicalize()
            .expect("canonical")
            .join("secret");
        std::fs::write(&secret, "k").expect("write secret");
        Setup {
            tpm,
            _tpm_dir: tpm_dir,
            state: tempfile::tempdir().expect("tempdir"),
            _files: files,
            secret,
        }
    }

    /// Quotes every second so the tests need not wait a minute; `extra` adds `[tpm]` keys.
    fn config(&self, extra: &str) -> String {
        format!(
            "[tpm]\ntcti = \"{}\"\nquote_period = \"1s\"\n{extra}\n[[watch]]\npath = \"{}\"\nkind = \"ssh-key\"\n",
            self.tpm.tcti(),
            self.secret.display()
        )
    }

    fn start(&self, extra: &str) -> Agent {
        Agent::start_at(&self.config(extra), self.state.path(), &[])
    }

    fn dir(&self) -> &Path {
        self.state.path()
    }

    /// `sensorctl verify --tpm TCTI`: (exit code, stdout and stderr).
    fn verify_tpm(&self) -> (i32, String) {
        let tcti = self.tpm.tcti();
        let (code, out, err) = sensorctl(self.dir(), &["verify", "--tpm", &tcti]);
        (code, format!("{out}{err}"))
    }

    fn storm(&self, opens: u64) {
        let status = openloop(opens, &self.secret).wait().expect("openloop");
        assert!(status.success());
    }
}

/// `sensorctl events --json` rows of `kind`.
fn entries(dir: &Path, kind: &str) -> Vec<Value> {
    let (code, out, err) = sensorctl(dir, &["events", "--json", "--kind", kind]);
    assert_eq!(code, 0, "sensorctl events: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Polls until an entry of `kind` is in the log.
fn wait_entry(dir: &Path, kind: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(e) = entries(dir, kind).pop() {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} entry within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Counts the agent's `file_open` events of `path` until none arrives for 3 s.
fn received(agent: &Agent, path: &Path) -> u64 {
    let path = path.to_str().unwrap_or_default().to_string();
    let mut n = 0;
    while agent
        .try_wait_for(
            |e| e["kind"] == "file_open" && e["file"]["path"] == path.as_str(),
            Duration::from_secs(3),
        )
        .is_some()
    {
        n += 1;
    }
    n
}

#[test]
fn anchors_during_a_storm_and_verifies() {
    let s = Setup::new();
    let mut agent = s.start("");
    s.storm(20_000);
    wait_entry(s.dir(), "tpm_quote", Duration::from_secs(10));
    // While the agent runs: the log may be ahead of the PCR, never behind.
    let (code, out) = s.verify_tpm();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("tpm: consistent"), "{out}");
    let (_, status, _) = sensorctl(s.dir(), &["status"]);
    assert!(
        status.contains("anchor:      anchored in the TPM"),
        "{status}"
    );
    agent.stop();
    let (code, out) = s.verify_tpm();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("0 newer not yet extended") && out.contains("stored quote of batch"),
        "after a clean stop every batch is in the PCR: {out}"
    );
    assert!(entries(s.dir(), "tpm_anchored").len() == 1);
}

#[test]
fn a_cut_tail_is_named_truncation() {
    let s = Setup::new();
    let mut agent = s.start("");
    s.storm(5_000);
    wait_entry(s.dir(), "tpm_quote", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    agent.stop();
    let conn = Connection::open(s.dir().join("log.db")).expect("open db");
    let last: i64 = conn
        .query_row("SELECT MAX(number) FROM batches", [], |r| r.get(0))
        .expect("last batch");
    conn.execute("DELETE FROM records WHERE batch > ?1", [last - 3])
        .expect("delete records");
    conn.execute("DELETE FROM batches WHERE number > ?1", [last - 3])
        .expect("delete batches");
    drop(conn);
    let (code, out, err) = sensorctl(s.dir(), &["verify"]);
    assert_eq!(code, 0, "a cut tail verifies offline: {out}{err}");
    let (code, out) = s.verify_tpm();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "tpm verification failed at batch {}: tail truncated",
            last - 2
        )),
        "{out}"
    );
}

/// A consistent copy of the state directory (SQLite's own snapshot of the live database).
fn snapshot(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("tempdir");
    let conn = Connection::open(dir.join("log.db")).expect("open db");
    conn.execute(
        "VACUUM INTO ?1",
        [copy.path().join("log.db").to_str().unwrap_or_default()],
    )
    .expect("snapshot");
    let keys = copy.path().join("keys");
    std::fs::create_dir(&keys).expect("mkdir");
    for entry in std::fs::read_dir(dir.join("keys")).expect("keys") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), keys.join(entry.file_name())).expect("copy key");
    }
    std::fs::copy(dir.join("host-id"), copy.path().join("host-id")).expect("copy host-id");
    copy
}

/// Puts `copy` back in place of `dir`'s log (the restored older snapshot).
fn restore(copy: &Path, dir: &Path) {
    for name in ["log.db", "log.db-wal", "log.db-shm"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    std::fs::copy(copy.join("log.db"), dir.join("log.db")).expect("restore log.db");
}

#[test]
fn a_restored_older_copy_is_a_rollback_for_verify_and_for_the_agent() {
    let s = Setup::new();
    // The counter advances every second, so the copy falls behind it quickly.
    let extra = "nv_interval = \"1s\"";
    let mut agent = s.start(extra);
    s.storm(2_000);
    wait_entry(s.dir(), "tpm_quote", Duration::from_secs(10));
    let old = snapshot(s.dir());
    std::thread::sleep(Duration::from_secs(4));
    agent.stop();
    restore(old.path(), s.dir());
    let (code, out, err) = sensorctl(s.dir(), &["verify"]);
    assert_eq!(code, 0, "the old copy verifies offline: {out}{err}");
    let (code, out) = s.verify_tpm();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(": rolled back to an older copy ("), "{out}");

    let mut agent = s.start(extra);
    let alarm = wait_entry(s.dir(), "tpm_alarm", Duration::from_secs(10));
    assert!(
        alarm["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("rolled back to an older copy: TPM counter")),
        "{alarm}"
    );
    assert!(
        agent
            .stderr
            .lock()
            .expect("lock")
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("rolled back to an older copy")),
        "an error-level line says so"
    );
    // The agent keeps running and logging.
    s.storm(10);
    agent.stop();
    let (code, out) = s.verify_tpm();
    assert_eq!(code, 1, "the recorded alarm stays: {out}");
    assert!(out.contains("rolled back to an older copy"), "{out}");
}

#[test]
fn a_tpm_outage_loses_no_event_and_the_gap_is_recorded() {
    let mut s = Setup::new();
    let mut agent = s.start("op_timeout = \"2s\"");
    s.storm(3_000);
    wait_entry(s.dir(), "tpm_quote", Duration::from_secs(10));
    s.tpm.kill();
    s.storm(3_000);
    let failing = wait_entry(s.dir(), "tpm_failing", Duration::from_secs(10));
    // status.json is rewritten every 2 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status, _) = sensorctl(s.dir(), &["status"]);
        if status.contains("anchor:      FAILING since batch") {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    s.tpm.restart().expect("swtpm restarts");
    let resumed = wait_entry(s.dir(), "tpm_resumed", Duration::from_secs(15));
    s.storm(3_000);
    assert_eq!(received(&agent, &s.secret), 9_000, "no event lost");
    assert!(
        entries(s.dir(), "loss").is_empty(),
        "nothing counted as lost"
    );
    let detail = resumed["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("anchoring resumed after a gap (batches "),
        "{resumed} after {failing}"
    );
    // The restarted swtpm is a TPM reset: the resumed span records the new reset count and
    // replays from the PCR value read then.
    let anchored = entries(s.dir(), "tpm_anchored").pop().expect("anchored");
    let resets = |e: &Value| reset_count(e["detail"].as_str().unwrap_or_default());
    assert_eq!(resets(&resumed), resets(&anchored) + 1, "{resumed}");
    agent.stop();
    let (code, out) = s.verify_tpm();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("tpm: consistent"), "{out}");
}

/// The `reset count N` an anchoring entry's detail names.
fn reset_count(detail: &str) -> u32 {
    detail
        .split("reset count ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no reset count in {detail}"))
}

#[test]
fn stored_quotes_fail_with_a_wrong_nonce_or_a_tampered_pcr() {
    let s = Setup::new();
    let mut agent = s.start("");
    s.storm(1_000);
    wait_entry(s.dir(), "tpm_quote", Duration::from_secs(10));
    agent.stop();
    let store = Store::open_read_only(s.dir()).expect("store");
    let Verdict::Intact(summary) = sensor_log::verify(&store, None).expect("verifies") else {
        panic!("the agent's log does not verify");
    };
    let trail = summary.anchor;
    let base = trail.base.expect("anchored");
    let stored = trail.quote.expect("a stored quote");
    let index = usize::try_from(stored.batch - base.replay_from).expect("index");
    let pcr = replay(base.pcr_value, &trail.digests[..=index])
        .last()
        .expect("replayed");
    let ak = AkPublic {
        public_area: base.ak_public.clone(),
    };
    let quote = Quote {
        attest: stored.attest.clone(),
        signature: stored.signature.as_slice().try_into().expect("64 bytes"),
        pcr_index: base.pcr_index,
        pcr_value: pcr,
        ak_public: ak.clone(),
    };
    let binding = quote_binding(stored.batch, &trail.digests[index], &[0; 32]);
    verify_quote(&quote, &ak, &binding, &pcr).expect("the agent's quote verifies");
    let wrong_nonce = quote_binding(stored.batch, &trail.digests[index], &[1; 32]);
    assert!(matches!(
        verify_quote(&quote, &ak, &wrong_nonce, &pcr),
        Err(Error::NonceMismatch)
    ));
    let other_header = quote_binding(stored.batch, &[0xee; 32], &[0; 32]);
    assert!(matches!(
        verify_quote(&quote, &ak, &other_header, &pcr),
        Err(Error::NonceMismatch)
    ));
    let mut tampered = pcr;
    tampered[0] ^= 1;
    assert!(matches!(
        verify_quote(&quote, &ak, &binding, &tampered),
        Err(Error::PcrMismatch)
    ));
    // One batch short of what the quote covers.
    if index > 0 {
        let short = replay(base.pcr_value, &trail.digests[..index])
            .last()
            .expect("replayed");
        assert!(matches!(
            verify_quote(&quote, &ak, &binding, &short),
            Err(Error::PcrMismatch)
        ));
    }
}
