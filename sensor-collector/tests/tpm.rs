//! The collector as the remote verifier of TPM anchoring (docs/tpm.md, "The collector as
//! remote verifier"): logs written by the agent's `LogWriter` and anchored in a real swtpm the
//! way the agent's anchor stage does it (a base in the first batch, every sealed batch
//! extended, quotes of the newest extended batch chained into the next), ingested by a
//! collector over a real store. A genuine log raises no alarm, also when the collector
//! restarts mid-log; quotes and bases forged by someone who holds the host's signing key
//! (another TPM's quote, a quote over another header, a PCR extended behind the log's back,
//! a base naming another attestation key) are stored, since the host key signed them, and
//! each raises a `tpm` alarm naming what failed. Needs swtpm (`cargo xtask setup`): without
//! it every test fails.

mod common;

use std::path::Path;
use std::process::Command;

use common::{collector, enroll, outbox, pg_collector, postgres};
use sensor_collector::ingest::{Collector, Reply};
use sensor_collector::store::Alarm;
use sensor_log::record::{AnchorBase, Hash, TpmQuote};
use sensor_log::{Anchor, Body, Timestamp, TpmEntry};
use sensor_store::{LogWriter, WriterOptions};
use sensor_tpm::{quote_binding, TpmConfig, TpmInfo, TpmWorker};
use swtpm_harness::Swtpm;

/// A swtpm with the worker the host's anchor stage would own.
struct Tpm {
    worker: TpmWorker,
    info: TpmInfo,
    _swtpm: Swtpm,
    _dir: tempfile::TempDir,
}

fn tpm() -> Tpm {
    let dir = tempfile::tempdir().expect("tempdir");
    let swtpm = Swtpm::start(dir.path())
        .unwrap_or_else(|e| panic!("cannot start swtpm ({e}): run `cargo xtask setup`"));
    let worker = TpmWorker::start(TpmConfig {
        tcti: Some(swtpm.tcti()),
        ..TpmConfig::default()
    })
    .expect("worker");
    let info = worker.connect().expect("connect");
    Tpm {
        worker,
        info,
        _swtpm: swtpm,
        _dir: dir,
    }
}

/// What the host's writer does wrong, signed with the host key like the rest of its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forgery {
    None,
    /// The quote of batch `FORGED` comes from another TPM.
    OtherTpmQuote,
    /// The quote of batch `FORGED` was taken over another header for that batch.
    OtherHeader,
    /// Something extended the PCR before the quote of batch `FORGED`: it no longer is the
    /// replay of the log's batches.
    PcrExtendedBehindTheLog,
    /// A replay base after batch `FORGED` names another TPM's attestation key.
    BaseOfAnotherTpm,
}

/// The batch whose quote (or the base after it) is forged.
const FORGED: u64 = 6;
/// Batches written; a quote follows every third.
const BATCHES: u64 = 12;

fn event() -> sensor_log::Event {
    let Body::Event(event) = sensor_log::vectors::records()[1].body.clone() else {
        panic!("vector record 2 is an event")
    };
    event
}

/// Writes a log in `dir` anchored in `tpm` as docs/tpm.md ("The anchoring rule") says, with
/// `forgery` (which uses `other` for another TPM). Returns the batch that chains the forged
/// entry.
fn anchored_log(dir: &Path, tpm: &Tpm, other: &Tpm, forgery: Forgery) -> u64 {
    let mut writer = LogWriter::open(dir, WriterOptions::default()).expect("open log");
    let clock = tpm.worker.clock_info().expect("clock");
    let counter = tpm.worker.read_counter().expect("counter");
    let base = |t: &Tpm, replay_from: u64, pcr_value: Hash| AnchorBase {
        replay_from,
        pcr_index: t.info.pcr,
        pcr_value,
        reset_count: clock.reset_count,
        restart_count: clock.restart_count,
        nv_counter: counter,
        nv_index: t.info.nv_index,
        ak_handle: t.info.ak_handle,
        ak_public: t.info.ak_public.public_area.clone(),
    };
    writer.set_anchor(Some(Anchor {
        pcr_index: tpm.info.pcr,
        nv_counter: counter,
        reset_count: clock.reset_count,
        restart_count: clock.restart_count,
    }));
    let first = base(
        tpm,
        writer.next_batch(),
        tpm.worker.pcr_read().expect("pcr"),
    );
    writer
        .record_tpm(TpmEntry::Anchored(first), Timestamp::now())
        .expect("base");
    let mut forged_in = 0;
    let mut newest = (0, [0; 32]);
    for i in 1..=BATCHES {
        let now = Timestamp::now();
        writer
            .append(event(), now.wall_ns, now.mono_ns)
            .expect("append");
        for sealed in writer.seal(now).expect("seal") {
            tpm.worker.extend(sealed.digest).expect("extend");
            newest = (sealed.header.number, sealed.digest);
        }
        let forging = i == FORGED && forgery != Forgery::None;
        if forging {
            forged_in = writer.next_batch();
        }
        if forging && forgery == Forgery::BaseOfAnotherTpm {
            let pcr = tpm.worker.pcr_read().expect("pcr");
            let entry = TpmEntry::Anchored(base(other, writer.next_batch(), pcr));
            writer.record_tpm(entry, now).expect("base");
        }
        if i % 3 != 0 {
            continue;
        }
        let (number, digest) = newest;
        let mut by = tpm;
        let mut bound = digest;
        if forging {
            match forgery {
                Forgery::OtherTpmQuote => by = other,
                Forgery::OtherHeader => bound = [0xee; 32],
                Forgery::PcrExtendedBehindTheLog => tpm.worker.extend([0x66; 32]).expect("extend"),
                Forgery::None | Forgery::BaseOfAnotherTpm => {}
            }
        }
        let quote = by
            .worker
            .quote(quote_binding(number, &bound, &[0; 32]))
            .expect("quote");
        let entry = TpmEntry::Quote(TpmQuote {
            batch: number,
            attest: quote.attest,
            signature: quote.signature.to_vec(),
        });
        writer.record_tpm(entry, now).expect("quote");
    }
    for sealed in writer.close(Timestamp::now()).expect("close") {
        tpm.worker.extend(sealed.digest).expect("extend");
    }
    forged_in
}

/// Ingests the log in `host_dir` batch by batch, every batch acknowledged: a forged anchor
/// does not cost the host's validly signed history. `restart_at`: the batches from there on
/// go to a second collector on the same store, as after a restart.
fn ingest(
    host_dir: &Path,
    first: &mut Collector,
    second: impl FnOnce() -> Collector,
    restart_at: usize,
) -> (Collector, [u8; 16]) {
    let (host, key, messages) = outbox(host_dir);
    enroll(first, host, key);
    for (i, m) in messages.iter().enumerate().take(restart_at) {
        assert_eq!(
            first.receive(&host, m).expect("store"),
            Reply::Ack(i as u64 + 1)
        );
    }
    let mut c = second();
    for (i, m) in messages.iter().enumerate().skip(restart_at) {
        assert_eq!(
            c.receive(&host, m).expect("store"),
            Reply::Ack(i as u64 + 1)
        );
    }
    (c, host)
}

fn tpm_alarms(c: &mut Collector, host: &[u8; 16]) -> Vec<Alarm> {
    c.store()
        .alarms(host)
        .expect("alarms")
        .into_iter()
        .filter(|a| a.kind == "tpm")
        .collect()
}

/// `sensor-collector ARGS` on the SQLite store `db`: (success, stdout and stderr).
fn cli(db: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sensor-collector"))
        .arg("--store")
        .arg(format!("sqlite:{}", db.display()))
        .args(args)
        .output()
        .expect("run sensor-collector");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `ANCHORED` column `sensor-collector hosts` shows for the only host of `db`.
fn anchored_column(db: &Path) -> String {
    let (ok, text) = cli(db, &["hosts"]);
    assert!(ok, "{text}");
    let header = text.lines().next().unwrap_or_default();
    let at = header.find("ANCHORED").unwrap_or_else(|| panic!("{text}"));
    let row = text.lines().nth(1).unwrap_or_else(|| panic!("{text}"));
    row.get(at..)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_genuine_anchored_log_raises_no_alarm_across_a_collector_restart() {
    let (a, b) = (tpm(), tpm());
    let host_dir = tempfile::tempdir().expect("tempdir");
    anchored_log(host_dir.path(), &a, &b, Forgery::None);
    let dir = tempfile::tempdir().expect("tempdir");
    // The second half is checked by a new collector: the replay comes from the store.
    let (mut c, host) = ingest(
        host_dir.path(),
        &mut collector(dir.path()),
        || collector(dir.path()),
        5,
    );
    assert!(c.store().alarms(&host).expect("alarms").is_empty());
    let hosts = c.store().hosts().expect("hosts");
    assert!(hosts[0].anchored, "{hosts:?}");
    let db = dir.path().join("collector.db");
    assert_eq!(anchored_column(&db), "yes");
    let (ok, out) = cli(&db, &["verify"]);
    assert!(
        ok && out.contains("TPM quotes and bases consistent"),
        "{out}"
    );
}

/// Each forgery, in a log whose every batch its host key signed: the batch is held, and a
/// `tpm` alarm names what failed at the batch that chains the forged entry.
fn forged(forgery: Forgery, expected: &str) {
    let (a, b) = (tpm(), tpm());
    let host_dir = tempfile::tempdir().expect("tempdir");
    let at = anchored_log(host_dir.path(), &a, &b, forgery);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, host) = ingest(
        host_dir.path(),
        &mut collector(dir.path()),
        || collector(dir.path()),
        usize::MAX,
    );
    let alarms = tpm_alarms(&mut c, &host);
    let first = alarms
        .first()
        .unwrap_or_else(|| panic!("no tpm alarm for {forgery:?}"));
    assert_eq!(first.batch, at, "{alarms:?}");
    assert!(first.detail.contains(expected), "{forgery:?}: {alarms:?}");
    let db = dir.path().join("collector.db");
    assert_eq!(anchored_column(&db), "alarm");
    let (ok, out) = cli(&db, &["verify"]);
    assert!(ok && out.contains("each with its alarm"), "{out}");
}

/// Whoever can write the collector's database removes the alarm, or swaps the attestation
/// key pinned in the host's checkpoint for the one that signed the forged quote: `verify`
/// replays the stored batches and names both.
#[test]
fn verify_names_a_removed_tpm_alarm_and_a_repinned_key() {
    let (a, b) = (tpm(), tpm());
    let host_dir = tempfile::tempdir().expect("tempdir");
    let at = anchored_log(host_dir.path(), &a, &b, Forgery::OtherTpmQuote);
    let dir = tempfile::tempdir().expect("tempdir");
    ingest(
        host_dir.path(),
        &mut collector(dir.path()),
        || collector(dir.path()),
        usize::MAX,
    );
    let db = dir.path().join("collector.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    let state: String = conn
        .query_row("SELECT state FROM checkpoints", [], |r| r.get(0))
        .expect("checkpoint");
    let mine = format!("{:?}", a.info.ak_public.public_area).replace(' ', "");
    let theirs = format!("{:?}", b.info.ak_public.public_area).replace(' ', "");
    assert!(state.contains(&mine), "{state}");
    let repinned = state.replace(&mine, &theirs);
    conn.execute("UPDATE checkpoints SET state = ?1", [&repinned])
        .expect("repin");
    let (ok, out) = cli(&db, &["verify"]);
    assert!(
        !ok && out.contains("checkpoint held for the host is not where its batches lead"),
        "{out}"
    );
    conn.execute("UPDATE checkpoints SET state = ?1", [&state])
        .expect("restore");
    let removed = conn
        .execute("DELETE FROM alarms WHERE kind = 'tpm' AND batch = ?1", [at])
        .expect("delete");
    assert_eq!(removed, 1);
    let (ok, out) = cli(&db, &["verify"]);
    assert!(
        !ok && out.contains(&format!(
            "a TPM check fails at batch {at} and no tpm alarm says so"
        )),
        "{out}"
    );
}

#[test]
fn a_quote_by_another_tpm_raises_a_tpm_alarm() {
    forged(
        Forgery::OtherTpmQuote,
        "is not signed by the attestation key pinned for this host",
    );
}

#[test]
fn a_quote_over_another_header_raises_a_tpm_alarm() {
    forged(
        Forgery::OtherHeader,
        "taken over a different header for that batch",
    );
}

#[test]
fn a_pcr_that_is_not_the_replay_raises_a_tpm_alarm() {
    forged(
        Forgery::PcrExtendedBehindTheLog,
        "its PCR differs from the replay of batches",
    );
}

#[test]
fn a_base_naming_another_attestation_key_raises_a_tpm_alarm() {
    forged(
        Forgery::BaseOfAnotherTpm,
        "not the one pinned for this host",
    );
}

/// On PostgreSQL, where several collectors share the replay state: a genuine log split
/// between two collectors raises nothing, a forged quote is named.
#[test]
fn postgres_checks_quotes_across_collectors() {
    let Some(pg) = postgres() else { return };
    let (a, b) = (tpm(), tpm());
    let url = pg.url();
    let genuine = tempfile::tempdir().expect("tempdir");
    anchored_log(genuine.path(), &a, &b, Forgery::None);
    let (mut c, host) = ingest(
        genuine.path(),
        &mut pg_collector(&url),
        || pg_collector(&url),
        5,
    );
    assert!(c.store().alarms(&host).expect("alarms").is_empty());
    assert!(c.store().hosts().expect("hosts")[0].anchored);

    let (a, b) = (tpm(), tpm());
    let forged_dir = tempfile::tempdir().expect("tempdir");
    let at = anchored_log(forged_dir.path(), &a, &b, Forgery::OtherTpmQuote);
    let (mut c, host) = ingest(
        forged_dir.path(),
        &mut pg_collector(&url),
        || pg_collector(&url),
        5,
    );
    let alarms = tpm_alarms(&mut c, &host);
    assert_eq!(alarms.first().map(|a| a.batch), Some(at), "{alarms:?}");
}
