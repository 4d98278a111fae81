//! The real agent anchored in a real swtpm, which each test starts itself: `verify --tpm`
//! passes while a storm runs; a cut tail, a restored older state directory, a TPM outage and
//! forged quotes are each told apart. Then the attacks of a local root who restarts the agent
//! (restored copies, cut tails with a forged clean-stop marker, a log cut back to an epoch's
//! first batch, a rollback across a TPM reset, a wiped state directory, a PCR extended by
//! someone else, a replaced attestation key, a TPM that answers late): each is named by the
//! agent at its next start and by `sensorctl verify --tpm`. Needs root, swtpm and tpm2-tools
//! (`cargo xtask setup`).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rusqlite::Connection;
use sensor_log::{Anchor, Timestamp, TpmEntry, Verdict};
use sensor_store::{LogWriter, Store, WriterOptions};
use sensor_tests::{
    assert_anchored_after_stop, assert_cut_tail_named, cut_log_after, events, last_batch, openloop,
    secret_in, sensorctl, wait_entry, wait_status, Agent, STORM,
};
use sensor_tpm::{quote_binding, replay, verify_quote, AkPublic, Error, Quote};
use serde_json::Value;
use swtpm_harness::Swtpm;

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
        let secret = secret_in(files.path());
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
            "[agent]\n{STORM}[tpm]\ntcti = \"{}\"\nquote_period = \"1s\"\n{extra}\n[[watch]]\npath = \"{}\"\nkind = \"ssh-key\"\n",
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
    wait_status(s.dir(), "anchor:      anchored in the TPM");
    agent.stop();
    assert_anchored_after_stop(s.dir(), &s.tpm.tcti());
}

#[test]
fn a_cut_tail_is_named_truncation() {
    let s = Setup::new();
    let mut agent = s.start("");
    s.storm(5_000);
    wait_entry(s.dir(), "tpm_quote", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    agent.stop();
    assert_cut_tail_named(s.dir(), &s.tpm.tcti());
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
fn a_restored_older_copy_is_named_by_verify_and_by_the_agent() {
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
    assert!(
        out.contains(": tail truncated (") && out.contains("restored older copy"),
        "{out}"
    );

    let mut agent = s.start(extra);
    let alarm = alarm_at_start(&agent, "tail truncated");
    assert!(alarm.contains("restored older copy"), "{alarm}");
    // The agent keeps running and logging.
    s.storm(10);
    agent.stop();
    let (code, out) = s.verify_tpm();
    assert_eq!(code, 1, "the recorded alarm stays: {out}");
    assert!(out.contains("tail truncated"), "{out}");
}

/// Waits for the agent's `tpm_alarm` entry and its ERROR line, and checks the alarm names
/// `reason`; returns the entry's detail.
fn alarm_at_start(agent: &Agent, reason: &str) -> String {
    let alarm = wait_entry(&agent.state_dir, "tpm_alarm", Duration::from_secs(15));
    let detail = alarm["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.starts_with(&format!("{reason}: ")), "{alarm}");
    assert!(
        agent.log_lines("ERROR", reason) > 0,
        "an error-level line says {reason}"
    );
    detail
}

/// `sensorctl verify --tpm` fails naming `reason`.
fn verify_tpm_fails(s: &Setup, reason: &str) -> String {
    let (code, out) = s.verify_tpm();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("tpm verification failed at ") && out.contains(&format!(": {reason}")),
        "expected {reason}: {out}"
    );
    out
}

/// Restored copy, then restart, with the default counter schedule (the counter advances only
/// hourly and at stops): within the TPM boot the PCR still holds the extends of the batches the
/// copy lacks. Cleanly stopped and killed alike; the whole state directory and only `log.db`.
#[test]
fn a_restored_copy_is_caught_at_restart_within_the_boot() {
    for (crash, whole_dir) in [(false, false), (true, true)] {
        let s = Setup::new();
        let mut agent = s.start("");
        wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
        s.storm(5);
        wait_entry(s.dir(), "tpm_quote", Duration::from_secs(10));
        let old = snapshot(s.dir());
        // The read the attacker wants gone.
        s.storm(1);
        std::thread::sleep(Duration::from_secs(2));
        if crash {
            agent.crash();
        } else {
            agent.stop();
        }
        restore(old.path(), s.dir());
        if whole_dir {
            let keys = s.dir().join("keys");
            std::fs::remove_dir_all(&keys).expect("rm keys");
            std::fs::create_dir(&keys).expect("mkdir keys");
            for entry in std::fs::read_dir(old.path().join("keys")).expect("keys") {
                let entry = entry.expect("entry");
                std::fs::copy(entry.path(), keys.join(entry.file_name())).expect("copy key");
            }
        }
        let mut agent = s.start("");
        alarm_at_start(&agent, "tail truncated");
        agent.stop();
        verify_tpm_fails(&s, "tail truncated");
    }
}

/// Kill -9, delete the last batches, forge the clean-stop marker for the new last batch,
/// restart: the marker is not believed; the PCR holds the cut batches.
#[test]
fn a_cut_tail_with_a_forged_clean_stop_marker_is_caught() {
    let s = Setup::new();
    let mut agent = s.start("");
    wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
    s.storm(200);
    std::thread::sleep(Duration::from_secs(3));
    agent.crash();
    let last = last_batch(s.dir());
    cut_log_after(s.dir(), last - 2);
    let conn = Connection::open(s.dir().join("log.db")).expect("open db");
    conn.execute(
        "INSERT OR REPLACE INTO meta (name, value) VALUES ('clean_stop', (SELECT digest FROM batches WHERE number = ?1))",
        [last - 2],
    )
    .expect("forge the marker");
    drop(conn);
    let mut agent = s.start("");
    let start = wait_entry(s.dir(), "epoch_start", Duration::from_secs(10));
    drop(start);
    alarm_at_start(&agent, "tail truncated");
    agent.stop();
    let out = verify_tpm_fails(&s, "tail truncated");
    assert!(out.contains("seq "), "named at the alarm's seq: {out}");
}

/// After several starts, everything after the first batch of an earlier epoch is deleted
/// (that batch carries no anchor): the newest anchored state the log still holds is far
/// behind the TPM.
#[test]
fn a_log_cut_back_to_an_epochs_first_batch_is_caught() {
    let s = Setup::new();
    let mut epoch_first = 0;
    for round in 0..3 {
        let mut agent = s.start("");
        wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
        if round == 1 {
            let conn = Connection::open(s.dir().join("log.db")).expect("open db");
            epoch_first = conn
                .query_row("SELECT MIN(number) FROM batches WHERE epoch = 2", [], |r| {
                    r.get(0)
                })
                .expect("epoch 2's first batch");
        }
        s.storm(3);
        std::thread::sleep(Duration::from_secs(2));
        agent.stop();
    }
    cut_log_after(s.dir(), epoch_first);
    let mut agent = s.start("");
    alarm_at_start(&agent, "tail truncated");
    agent.stop();
    verify_tpm_fails(&s, "tail truncated");
}

/// Across a TPM reset (an unclean reboot: the PCR starts over) only the NV counter remembers:
/// a copy older than the last advance (here: the clean stops after it) is a rollback. Before,
/// a hybrid counter was allowed to have jumped 256 advances ahead after a reset.
#[test]
fn a_rollback_across_a_tpm_reset_is_caught_by_the_counter() {
    let mut s = Setup::new();
    let mut agent = s.start("");
    wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
    s.storm(3);
    std::thread::sleep(Duration::from_secs(2));
    agent.stop();
    let old = snapshot(s.dir());
    let mut agent = s.start("");
    wait_entry(s.dir(), "tpm_quote", Duration::from_secs(10));
    s.storm(3);
    std::thread::sleep(Duration::from_secs(2));
    agent.crash();
    restore(old.path(), s.dir());
    s.tpm.kill();
    s.tpm.restart().expect("swtpm restarts: a TPM reset");
    let mut agent = s.start("");
    alarm_at_start(&agent, "rolled back to an older copy");
    agent.stop();
    verify_tpm_fails(&s, "rolled back to an older copy");
}

/// The whole state directory deleted, the agent started again on the same TPM: the TPM's
/// counter shows a log existed, so the fresh log starts with an alarm.
#[test]
fn a_wiped_state_directory_raises_an_alarm() {
    let s = Setup::new();
    let mut agent = s.start("");
    wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
    s.storm(3);
    agent.stop();
    for entry in std::fs::read_dir(s.dir()).expect("state dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("rm");
        } else {
            std::fs::remove_file(&path).expect("rm");
        }
    }
    let mut agent = s.start("");
    let detail = alarm_at_start(&agent, "log wiped");
    assert!(detail.contains("NV counter"), "{detail}");
    agent.stop();
    verify_tpm_fails(&s, "log wiped");
}

/// Root extends the anchor PCR with garbage while the agent runs: the agent notices at its next
/// extend, says so, and `verify --tpm` fails with that reason.
#[test]
fn a_pcr_extended_by_someone_else_is_noticed_at_the_next_extend() {
    let s = Setup::new();
    let mut agent = s.start("");
    wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
    s.storm(3);
    tool(
        &s,
        &["tpm2_pcrextend", &format!("13:sha256={}", "ab".repeat(32))],
    );
    alarm_at_start(&agent, "PCR extended by another party");
    // Anchoring goes on from the PCR as it is.
    s.storm(3);
    agent.stop();
    verify_tpm_fails(&s, "PCR extended by another party");
}

/// `tpm2_*` from tpm2-tools against the test's swtpm.
fn tool(s: &Setup, args: &[&str]) -> String {
    s.tpm.tpm2(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Root replaces the attestation key at its handle with an owner-hierarchy key of its own
/// while the agent is stopped: the agent says so at start and keeps the key the log pinned
/// (it does not adopt the new one); `verify --tpm` names the mismatch.
#[test]
fn a_replaced_attestation_key_is_not_adopted() {
    let s = Setup::new();
    let mut agent = s.start("");
    let first = wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
    agent.stop();
    let ctx = s._tpm_dir.path().join("owner.ctx");
    let ctx = ctx.to_str().expect("utf-8 path");
    tool(&s, &["tpm2_evictcontrol", "-C", "o", "-c", "0x81015e01"]);
    tool(
        &s,
        &["tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", ctx],
    );
    tool(
        &s,
        &["tpm2_evictcontrol", "-C", "o", "-c", ctx, "0x81015e01"],
    );
    tool(&s, &["tpm2_flushcontext", "-t"]);
    let mut agent = s.start("");
    let detail = alarm_at_start(&agent, "TPM state mismatch");
    assert!(detail.contains("replaced"), "{detail}");
    let second = wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
    agent.stop();
    let ak = |e: &Value| {
        e["detail"]
            .as_str()
            .and_then(|d| d.split("AK ").nth(1))
            .map(str::to_string)
    };
    let anchored = events(s.dir(), "tpm_anchored");
    assert_eq!(anchored.len(), 2, "{first} {second}");
    assert_eq!(ak(&anchored[0]), ak(&anchored[1]), "the pinned key stays");
    verify_tpm_fails(&s, "TPM state mismatch");
}

/// `sensorctl verify --tpm` against another (fresh) TPM fails and creates nothing there.
#[test]
fn verify_creates_no_key_on_the_tpm_it_checks() {
    let s = Setup::new();
    let mut agent = s.start("");
    wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
    agent.stop();
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = Swtpm::start(other_dir.path()).expect("another swtpm");
    let (code, out, err) = sensorctl(s.dir(), &["verify", "--tpm", &other.tcti()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("TPM state mismatch"), "{err}");
    let handles = std::process::Command::new("tpm2_getcap")
        .args(["-T", &other.tcti(), "handles-persistent"])
        .output()
        .expect("tpm2_getcap");
    assert!(handles.status.success());
    assert!(
        String::from_utf8_lossy(&handles.stdout).trim().is_empty(),
        "verify persisted a key: {}",
        String::from_utf8_lossy(&handles.stdout)
    );
}

/// The TPM answers only after the agent started (a resource manager still coming up): once it
/// does, anchoring starts with the full start check, which here finds a rolled-back log.
#[test]
fn a_tpm_that_answers_late_gets_the_full_start_check() {
    let mut s = Setup::new();
    let mut agent = s.start("");
    wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
    let old = snapshot(s.dir());
    s.storm(3);
    std::thread::sleep(Duration::from_secs(2));
    agent.stop();
    restore(old.path(), s.dir());
    s.tpm.kill();
    let mut agent = s.start("op_timeout = \"2s\"");
    wait_entry(s.dir(), "tpm_failing", Duration::from_secs(10));
    s.tpm.restart().expect("swtpm starts");
    alarm_at_start(&agent, "rolled back to an older copy");
    wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
    s.storm(3);
    agent.stop();
    verify_tpm_fails(&s, "rolled back to an older copy");
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
    wait_status(s.dir(), "anchor:      FAILING since batch");
    s.tpm.restart().expect("swtpm restarts");
    let resumed = wait_entry(s.dir(), "tpm_resumed", Duration::from_secs(15));
    s.storm(3_000);
    assert_eq!(received(&agent, &s.secret), 9_000, "no event lost");
    assert!(
        events(s.dir(), "loss").is_empty(),
        "nothing counted as lost"
    );
    let detail = resumed["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("anchoring resumed after a gap (batches "),
        "{resumed} after {failing}"
    );
    // The restarted swtpm is a TPM reset: the resumed span records the new reset count and
    // replays from the PCR value read then.
    let anchored = events(s.dir(), "tpm_anchored").pop().expect("anchored");
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
    let Verdict::Intact(summary) = sensor_store::verify(&store, None).expect("verifies") else {
        panic!("the agent's log does not verify");
    };
    let trail = summary.anchor;
    let base = trail.base().expect("anchored").clone();
    let stored = trail.quote.clone().expect("a stored quote");
    let digests: Vec<[u8; 32]> = trail.anchored.iter().map(|(_, d)| *d).collect();
    let index = trail
        .anchored
        .iter()
        .position(|(n, _)| *n == stored.batch)
        .expect("the quoted batch is anchored");
    let pcr = replay(base.pcr_value, &digests[..=index])
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
    let binding = quote_binding(stored.batch, &digests[index], &[0; 32]);
    verify_quote(&quote, &ak, &binding, &pcr).expect("the agent's quote verifies");
    let wrong_nonce = quote_binding(stored.batch, &digests[index], &[1; 32]);
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
        let short = replay(base.pcr_value, &digests[..index])
            .last()
            .expect("replayed");
        assert!(matches!(
            verify_quote(&quote, &ak, &binding, &short),
            Err(Error::PcrMismatch)
        ));
    }
}

/// A root who holds the signing key restores an older copy and appends a batch of its own with
/// a replay base recording the live PCR, so that replay from that base matches: the agent
/// replays the whole boot cycle from its first base, and the forged base does not continue it.
#[test]
fn a_forged_replay_base_does_not_hide_a_restored_copy() {
    let s = Setup::new();
    let mut agent = s.start("");
    wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
    s.storm(3);
    let old = snapshot(s.dir());
    s.storm(1);
    std::thread::sleep(Duration::from_secs(2));
    agent.stop();
    restore(old.path(), s.dir());

    let live = pcr13(&s);
    let trail = Store::open_read_only(s.dir())
        .expect("store")
        .newest_anchor_trail()
        .expect("trail");
    let genuine = trail.base().expect("a base").clone();
    let (_, newest) = trail.last_anchor.expect("anchored");
    let mut writer = LogWriter::open(s.dir(), WriterOptions::default()).expect("writer");
    let mut forged = genuine.clone();
    forged.replay_from = writer.next_batch();
    forged.pcr_value = live;
    // The clean stop advanced the TPM's counter once past the copy: forge that too.
    forged.nv_counter = newest.nv_counter + 1;
    writer.set_anchor(Some(Anchor {
        nv_counter: forged.nv_counter,
        ..newest
    }));
    writer
        .record_tpm(
            TpmEntry::Resumed {
                gap_from: forged.replay_from,
                gap_to: forged.replay_from,
                base: forged,
            },
            Timestamp::now(),
        )
        .expect("chain the forged base");
    writer.close(Timestamp::now()).expect("seal it");

    let mut agent = s.start("");
    alarm_at_start(&agent, "tail truncated");
    agent.stop();
    verify_tpm_fails(&s, "tail truncated");
}

/// PCR 13 as the TPM reads it now.
fn pcr13(s: &Setup) -> [u8; 32] {
    let out = tool(s, &["tpm2_pcrread", "sha256:13"]);
    let hex = out
        .split("0x")
        .nth(1)
        .map(|h| h.trim().to_ascii_lowercase())
        .unwrap_or_else(|| panic!("no PCR value in {out}"));
    let mut pcr = [0u8; 32];
    for (i, byte) in pcr.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    pcr
}

/// A TPM that hangs for a while within the same boot (SIGSTOP): batches sealed meanwhile are
/// extended from the store once it answers, so after a clean stop every batch of the cycle is
/// in the PCR and the replay is one unbroken span; no event is lost.
#[test]
fn a_hung_tpm_is_caught_up_from_the_store() {
    let s = Setup::new();
    let mut agent = s.start("op_timeout = \"1s\"");
    wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
    s.tpm.pause(true).expect("SIGSTOP swtpm");
    s.storm(2_000);
    wait_entry(s.dir(), "tpm_failing", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    s.tpm.pause(false).expect("SIGCONT swtpm");
    wait_entry(s.dir(), "tpm_resumed", Duration::from_secs(15));
    s.storm(2_000);
    assert_eq!(received(&agent, &s.secret), 4_000, "no event lost");
    agent.stop();
    let (code, out) = s.verify_tpm();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("0 newer not yet extended"),
        "every batch of the cycle, the late ones included, is in the PCR: {out}"
    );
}

/// The `ANCHORED` and `ALARMS` columns of the collector's `hosts` row for `host`.
fn collector_anchored(dir: &Path, host: &str) -> (String, String) {
    let out = std::process::Command::new(sensor_tests::collector_bin())
        .arg("--store")
        .arg(format!("sqlite:{}", dir.join("collector.db").display()))
        .arg("hosts")
        .output()
        .expect("run sensor-collector");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with(host))
        .unwrap_or_else(|| panic!("no host row: {text}"))
        .split_whitespace()
        .collect();
    (row[5].to_string(), row[6].to_string())
}

/// Waits until the collector holds the newest batch the agent sealed.
fn wait_collected(s: &Setup, cdir: &Path, host: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sealed = Store::open_read_only(s.dir())
            .expect("store")
            .last_batch()
            .expect("read")
            .map_or(0, |b| b.number);
        let out = std::process::Command::new(sensor_tests::collector_bin())
            .arg("--store")
            .arg(format!("sqlite:{}", cdir.join("collector.db").display()))
            .arg("hosts")
            .output()
            .expect("run sensor-collector");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let held = text
            .lines()
            .find(|l| l.starts_with(host))
            .and_then(|l| l.split_whitespace().nth(4))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if held >= sealed && sealed > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the collector holds {held} of {sealed} batches"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The real agent, anchored in swtpm, forwards to a real collector, the remote verifier its
/// quotes were made for: every quote is checked as its batch arrives, nothing is raised, the
/// host shows as anchored and `verify` replays it, also after the agent restarts in the same
/// TPM boot cycle (a second base). Started again on another TPM, its log names
/// another attestation key than the one the collector pinned: a `tpm` alarm.
#[test]
fn a_collector_checks_the_agents_quotes_as_they_arrive() {
    use collector_harness::{CollectorProcess, Pki};
    const HOST: &str = "7e7e7e7e00112233445566778899aabb";
    let s = Setup::new();
    std::fs::write(s.dir().join("host-id"), format!("{HOST}\n")).expect("host-id");
    let pki = Pki::new();
    let cdir = tempfile::tempdir().expect("collector dir");
    let store = format!("sqlite:{}", cdir.path().join("collector.db").display());
    let c = CollectorProcess::start(
        &sensor_tests::collector_bin(),
        &pki,
        cdir.path(),
        &store,
        "enrollment = \"first_contact\"",
    );
    let id = pki.host(HOST);
    let forward = format!(
        "[forward]\ncollectors = [\"{}\"]\nclient_cert = \"{}\"\nclient_key = \"{}\"\nca = \"{}\"\n",
        c.addr,
        id.cert.display(),
        id.key.display(),
        pki.ca.display()
    );
    let config = |tcti: &str| {
        format!(
            "{forward}[tpm]\ntcti = \"{tcti}\"\nquote_period = \"1s\"\n[[watch]]\npath = \"{}\"\nkind = \"ssh-key\"\n",
            s.secret.display()
        )
    };
    let mut agent = Agent::start_at(&config(&s.tpm.tcti()), s.dir(), &[]);
    s.storm(2_000);
    wait_entry(s.dir(), "tpm_quote", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    wait_collected(&s, cdir.path(), HOST);
    assert!(events(s.dir(), "tpm_quote").len() >= 2);
    assert_eq!(
        collector_anchored(cdir.path(), HOST),
        ("yes".to_string(), "0".to_string())
    );
    agent.stop();
    let out = std::process::Command::new(sensor_tests::collector_bin())
        .args(["--store", &store, "verify"])
        .output()
        .expect("verify");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("TPM quotes and bases consistent"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Started again in the same TPM boot cycle: the new base continues the replay.
    let mut agent = Agent::start_at(&config(&s.tpm.tcti()), s.dir(), &[]);
    s.storm(500);
    std::thread::sleep(Duration::from_secs(3));
    wait_collected(&s, cdir.path(), HOST);
    agent.stop();
    assert_eq!(events(s.dir(), "tpm_anchored").len(), 2);
    assert_eq!(
        collector_anchored(cdir.path(), HOST),
        ("yes".to_string(), "0".to_string())
    );

    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = Swtpm::start(other_dir.path()).expect("another swtpm");
    let mut agent = Agent::start_at(&config(&other.tcti()), s.dir(), &[]);
    wait_entry(s.dir(), "tpm_anchored", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    wait_collected(&s, cdir.path(), HOST);
    agent.stop();
    let (anchored, alarms) = collector_anchored(cdir.path(), HOST);
    assert_eq!(anchored, "alarm", "{alarms} alarms");
}
