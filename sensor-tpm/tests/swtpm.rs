//! Against a real swtpm each test starts on its own port; no mocks.

use std::time::{Duration, Instant};

use sensor_tpm::{
    classify, extend_pcr, replay, verify_quote, verify_quote_signed, BaseMark, Error,
    LogAnchorState, Outcome, TpmConfig, TpmState, TpmWorker, DEFAULT_PCR,
};
use swtpm_harness::Swtpm;

fn swtpm(dir: &tempfile::TempDir) -> Swtpm {
    match Swtpm::start(dir.path()) {
        Ok(s) => s,
        Err(e) => panic!("cannot start swtpm ({e}); run `cargo xtask setup` to install it"),
    }
}

fn worker(tpm: &Swtpm) -> TpmWorker {
    TpmWorker::start(TpmConfig {
        tcti: Some(tpm.tcti()),
        op_timeout: Duration::from_secs(3),
        ..TpmConfig::default()
    })
    .expect("worker starts")
}

fn digest(i: u8) -> [u8; 32] {
    [i; 32]
}

#[test]
fn extend_matches_software_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tpm = swtpm(&dir);
    let w = worker(&tpm);
    let info = w.connect().expect("connects");
    assert_eq!(info.pcr, DEFAULT_PCR);
    let initial = w.pcr_read().expect("reads");
    assert_eq!(
        initial, [0; 32],
        "PCR 13 starts at zero after Startup(CLEAR)"
    );
    let digests: Vec<[u8; 32]> = (1..=5).map(digest).collect();
    for d in &digests {
        w.extend(*d).expect("extends");
    }
    let expected = replay(initial, &digests).last().expect("5 values");
    assert_eq!(w.pcr_read().expect("reads"), expected);
    assert_eq!(
        expected,
        digests.iter().fold(initial, |p, d| extend_pcr(&p, d))
    );
}

#[test]
fn counter_is_defined_once_and_monotonic_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tpm = swtpm(&dir);
    let first = worker(&tpm);
    let info = first.connect().expect("connects");
    assert!(
        info.counter_defined && info.ak_created,
        "first start provisions"
    );
    let mut last = first.read_counter().expect("reads");
    for _ in 0..3 {
        let v = first.advance_counter().expect("advances");
        assert!(v > last, "{v} > {last}");
        last = v;
    }
    drop(first);

    // A new worker (agent restart) finds the same counter and AK.
    let second = worker(&tpm);
    let again = second.connect().expect("connects");
    assert!(
        !again.counter_defined && !again.ak_created,
        "nothing re-created"
    );
    assert_eq!(again.ak_public, info.ak_public);
    assert_eq!(second.read_counter().expect("reads"), last);
    let v = second.advance_counter().expect("advances");
    assert!(v > last);
    last = v;
    drop(second);

    // A TPM reset after a crash (no orderly shutdown): the counter is a plain one, so it
    // neither goes back nor jumps forward (an orderly counter jumps by up to 255 here, which
    // would hide a rollback of that many advances).
    tpm.restart().expect("swtpm restarts");
    let third = worker(&tpm);
    let after = third.connect().expect("connects");
    assert!(!after.counter_defined && !after.ak_created);
    assert_eq!(
        after.ak_public, info.ak_public,
        "AK persisted across TPM reset"
    );
    let v = third.read_counter().expect("reads");
    assert_eq!(
        v, last,
        "counter before the crash {last}, after the TPM reset {v}"
    );
}

/// `tpm2_*` from tpm2-tools against this swtpm; panics with its stderr when it fails.
fn tool(tpm: &Swtpm, args: &[&str]) {
    tpm.tpm2(args).unwrap_or_else(|e| panic!("{e}"));
}

/// Root replaces the persisted AK with an owner-hierarchy key of its own: the next connection
/// says so, and keeps quoting with the key the TPM derives, which a verifier pinned.
#[test]
fn a_replaced_attestation_key_is_reported_and_not_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tpm = swtpm(&dir);
    let first = worker(&tpm);
    let info = first.connect().expect("connects");
    assert!(info.ak_replaced.is_none());
    drop(first);
    let handle = format!("{:#x}", info.ak_handle);
    let ctx = dir.path().join("owner.ctx");
    let ctx = ctx.to_str().expect("utf-8 path");
    tool(&tpm, &["tpm2_evictcontrol", "-C", "o", "-c", &handle]);
    tool(
        &tpm,
        &["tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", ctx],
    );
    tool(&tpm, &["tpm2_evictcontrol", "-C", "o", "-c", ctx, &handle]);
    // No resource manager in front of swtpm: free the tools' transient objects.
    tool(&tpm, &["tpm2_flushcontext", "-t"]);

    let second = worker(&tpm);
    let again = second.connect().expect("connects");
    let why = again.ak_replaced.expect("the replaced key is reported");
    assert!(why.contains("replaced"), "{why}");
    assert_eq!(
        again.ak_public, info.ak_public,
        "the derived key, not the impostor"
    );
    let nonce = [7; 32];
    let quote = second.quote(nonce).expect("quotes");
    verify_quote(&quote, &info.ak_public, &nonce, &quote.pcr_value)
        .expect("signed by the pinned AK");
    // Reconnecting again does not leak the transient key's object slot.
    for _ in 0..4 {
        drop(second.connect());
    }
}

/// A verifier's connection (`provision: false`) creates and defines nothing: on a fresh TPM it
/// fails, and the agent's first connection afterwards still provisions.
#[test]
fn a_verifier_connection_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tpm = swtpm(&dir);
    let verifier = TpmWorker::start(TpmConfig {
        tcti: Some(tpm.tcti()),
        op_timeout: Duration::from_secs(3),
        provision: false,
        ..TpmConfig::default()
    })
    .expect("worker starts");
    match verifier.connect() {
        Err(Error::HandleConflict { reason, .. }) => {
            assert!(reason.contains("no attestation key"), "{reason}")
        }
        other => panic!("expected no AK, got {other:?}"),
    }
    drop(verifier);
    let agent = worker(&tpm).connect().expect("connects");
    assert!(
        agent.ak_created && agent.counter_defined,
        "nothing was created before"
    );
}

#[test]
fn quote_verifies_and_rejects_wrong_nonce_or_pcr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tpm = swtpm(&dir);
    let w = worker(&tpm);
    let info = w.connect().expect("connects");
    let digests: Vec<[u8; 32]> = (1..=3).map(digest).collect();
    for d in &digests {
        w.extend(*d).expect("extends");
    }
    let expected_pcr = replay([0; 32], &digests).last().expect("3 values");
    // Several quotes: ECDSA signatures with high and low S must both verify.
    for i in 0..8u8 {
        let nonce = [i.wrapping_mul(37).wrapping_add(1); 32];
        let quote = w.quote(nonce).expect("quotes");
        assert_eq!(quote.pcr_value, expected_pcr);
        let checked =
            verify_quote(&quote, &info.ak_public, &nonce, &expected_pcr).expect("quote verifies");
        assert_eq!(checked.qualifying_data, nonce);

        let mut wrong_nonce = nonce;
        wrong_nonce[0] ^= 1;
        assert!(matches!(
            verify_quote(&quote, &info.ak_public, &wrong_nonce, &expected_pcr),
            Err(Error::NonceMismatch)
        ));
        let mut tampered = quote.clone();
        tampered.pcr_value[0] ^= 1;
        assert!(matches!(
            verify_quote(&tampered, &info.ak_public, &nonce, &tampered.pcr_value),
            Err(Error::PcrMismatch)
        ));
        let mut forged = quote.clone();
        let last = forged.attest.len() - 1;
        forged.attest[last] ^= 1;
        assert!(matches!(
            verify_quote(&forged, &info.ak_public, &nonce, &expected_pcr),
            Err(Error::BadSignature)
        ));
    }
    // A PCR value one batch short (log truncated by one) does not verify either.
    let short = replay([0; 32], &digests[..2]).last().expect("2 values");
    let quote = w.quote([9; 32]).expect("quotes");
    assert!(matches!(
        verify_quote(&quote, &info.ak_public, &[9; 32], &short),
        Err(Error::PcrMismatch)
    ));
}

/// `sensorctl verify --tpm` quotes while the agent runs, and reads the PCR value beside its
/// quote: the agent may extend the next batch in between (one TPM, two connections, as
/// through the kernel's resource manager). The order is forced here on one connection:
/// quote, extend, read. The value read is then one batch ahead of the quote, which the
/// quote's digest rejects; the log's replay names the quoted value, and the log is
/// consistent with it, the last batch not yet extended when the TPM quoted.
#[test]
fn an_extend_between_quote_and_read_is_no_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tpm = swtpm(&dir);
    let w = worker(&tpm);
    let info = w.connect().expect("connects");
    let digests: Vec<[u8; 32]> = (1..=4).map(digest).collect();
    for d in &digests[..3] {
        w.extend(*d).expect("extends");
    }
    let nonce = [5; 32];
    let mut quote = w.quote(nonce).expect("quotes");
    w.extend(digests[3]).expect("extends");
    quote.pcr_value = w.pcr_read().expect("reads");
    assert!(
        matches!(
            verify_quote(&quote, &info.ak_public, &nonce, &quote.pcr_value),
            Err(Error::PcrMismatch)
        ),
        "the value read is not the one quoted"
    );

    let checked = verify_quote_signed(&quote, &info.ak_public, &nonce).expect("signed");
    let anchored: Vec<(u64, [u8; 32])> = digests
        .iter()
        .copied()
        .zip(1..)
        .map(|(d, n)| (n, d))
        .collect();
    let log = LogAnchorState {
        bases: vec![BaseMark {
            seq: 1,
            replay_from: 1,
            pcr_value: [0; 32],
        }],
        anchored: &anchored,
        newest_nv_counter: None,
        reset_count: checked.clock.reset_count,
        restart_count: checked.clock.restart_count,
    };
    let quoted = log.quoted_pcr(&checked.pcr_digest, quote.pcr_value);
    assert_eq!(
        quoted,
        replay([0; 32], &digests[..3]).last().expect("3 values")
    );
    let tpm_state = TpmState {
        pcr_value: quoted,
        covers_batch: None,
        nv_counter: None,
        reset_count: checked.clock.reset_count,
        restart_count: checked.clock.restart_count,
    };
    assert_eq!(
        classify(&log, &tpm_state),
        Outcome::Consistent {
            anchored: 3,
            unanchored: 1
        }
    );

    // A batch the log does not hold, extended before the quote, is still a cut tail.
    w.extend(digest(9)).expect("extends");
    let quote = w.quote(nonce).expect("quotes");
    let checked = verify_quote_signed(&quote, &info.ak_public, &nonce).expect("signed");
    let tpm_state = TpmState {
        pcr_value: log.quoted_pcr(&checked.pcr_digest, quote.pcr_value),
        ..tpm_state
    };
    assert!(
        matches!(classify(&log, &tpm_state), Outcome::TailTruncated { .. }),
        "{:?}",
        classify(&log, &tpm_state)
    );
}

#[test]
fn reset_and_restart_counts_are_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tpm = swtpm(&dir);
    let w = worker(&tpm);
    let before = w.clock_info().expect("clock info");
    eprintln!("clock info: {before:?}");
    tpm.restart().expect("swtpm restarts");
    // The old connection died with the TPM: the first call may fail, then it reconnects.
    let after = retry(|| w.clock_info()).expect("clock info after restart");
    eprintln!("clock info after TPM reset: {after:?}");
    assert_eq!(
        after.reset_count,
        before.reset_count + 1,
        "a TPM reset counts"
    );
    assert_eq!(after.restart_count, 0, "restart count clears on reset");
}

/// Retries for a couple of seconds: the first call after a TPM restart may hit the dead
/// connection.
fn retry<T>(mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn dead_tpm_fails_promptly_and_worker_reconnects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tpm = swtpm(&dir);
    let w = worker(&tpm);
    w.connect().expect("connects");
    w.extend(digest(1)).expect("extends");

    tpm.kill();
    for _ in 0..3 {
        let t = Instant::now();
        let r = w.extend(digest(2));
        let took = t.elapsed();
        assert!(r.is_err(), "extend without a TPM must fail");
        assert!(
            took < Duration::from_secs(2),
            "failed in {took:?}, not promptly"
        );
        eprintln!("with swtpm dead: {:?} after {took:?}", r.err());
    }

    tpm.restart().expect("swtpm restarts");
    let pcr = retry(|| w.pcr_read()).expect("reconnects");
    assert_eq!(pcr, [0; 32], "a restarted TPM starts a new PCR epoch");
    w.extend(digest(3)).expect("extends after reconnect");
    assert_eq!(
        w.pcr_read().expect("reads"),
        extend_pcr(&[0; 32], &digest(3))
    );
}

#[test]
fn hung_tpm_times_out_and_worker_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tpm = swtpm(&dir);
    let w = TpmWorker::start(TpmConfig {
        tcti: Some(tpm.tcti()),
        op_timeout: Duration::from_millis(500),
        ..TpmConfig::default()
    })
    .expect("worker starts");
    retry(|| w.connect()).expect("connects");

    tpm.pause(true).expect("SIGSTOP");
    let t = Instant::now();
    let r = w.pcr_read();
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(took < Duration::from_secs(2), "timed out after {took:?}");
    tpm.pause(false).expect("SIGCONT");

    retry(|| w.pcr_read()).expect("answers again after the TPM resumes");
    w.extend(digest(4)).expect("extends");
}

#[test]
fn no_tpm_is_reported_plainly() {
    let cfg = TpmConfig::default();
    if std::path::Path::new(sensor_tpm::DEFAULT_DEVICE).exists() {
        assert!(TpmWorker::start(cfg).is_ok());
    } else {
        let e = TpmWorker::start(cfg).err().expect("no TPM here");
        assert!(matches!(e, Error::NoTpm(_)));
        // The agent and sensorctl say "the log is NOT anchored in a TPM: <this>".
        assert!(e.to_string().contains("/dev/tpmrm0 does not exist"), "{e}");
    }
    let bad = TpmConfig {
        pcr: 16,
        tcti: Some("device:/dev/null".into()),
        ..TpmConfig::default()
    };
    assert!(matches!(TpmWorker::start(bad), Err(Error::Config(_))));
}
