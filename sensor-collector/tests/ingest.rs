//! The collector's ingest rules on real logs written by the agent's `LogWriter` and handed
//! out by its outbox, stored in a real SQLite store: every batch is stored once however
//! often it is sent; a gap, a modified batch, a forged key, another host's batch and an
//! unenrolled host are refused with their reason while the collector goes on; a fork and a
//! wiped host are kept as evidence and raise their alarm. These call the ingest directly, as
//! a session does (the network side: `serve.rs`; with the real agent: `tests/tests/forward.rs`).

mod common;

use common::{collector, enroll, outbox, pg_collector, postgres, write};
use sensor_collector::ingest::{Collector, Greeting, Reply};
use sensor_collector::store::{Host, SqliteStore, Store};
use sensor_log::forward::{BatchMessage, Hello, RefuseCode};
use sensor_log::record::HostId;

fn refused(reply: Reply) -> (RefuseCode, u64, String) {
    match reply {
        Reply::Refuse(r) => (r.code, r.expected, r.reason),
        Reply::Ack(n) => panic!("batch {n} acknowledged"),
    }
}

fn alarms(c: &mut Collector, host: &HostId) -> Vec<String> {
    c.store()
        .alarms(host)
        .expect("alarms")
        .into_iter()
        .map(|a| a.kind)
        .collect()
}

fn every_batch_is_stored_once_however_often_it_is_sent(mut c: Collector) {
    let host_dir = tempfile::tempdir().expect("tempdir");
    write(host_dir.path(), 30, 100);
    let (host, key, messages) = outbox(host_dir.path());
    enroll(&mut c, host, key);
    for round in 0..3 {
        for (i, m) in messages.iter().enumerate() {
            let n = i as u64 + 1;
            assert_eq!(
                c.receive(&host, m).expect("store"),
                Reply::Ack(n),
                "round {round}"
            );
        }
    }
    let held = c.store().held(&host).expect("held");
    assert_eq!(held.len(), messages.len());
    assert!(held.iter().map(|(n, _)| *n).eq(1..=messages.len() as u64));
    let records: u64 = held.iter().map(|(_, count)| count).sum();
    assert!(
        records > 30,
        "{records} records for 30 events and the log's own"
    );
    assert!(alarms(&mut c, &host).is_empty());
}

fn bad_batches_are_refused_with_their_reason_and_the_collector_goes_on(mut c: Collector) {
    let host_dir = tempfile::tempdir().expect("tempdir");
    write(host_dir.path(), 20, 100);
    let (host, key, messages) = outbox(host_dir.path());

    // Not enrolled yet.
    let (code, _, _) = refused(c.receive(&host, &messages[0]).expect("refuse"));
    assert_eq!(code, RefuseCode::NotEnrolled);
    enroll(&mut c, host, key);
    assert_eq!(
        c.receive(&host, &messages[0]).expect("store"),
        Reply::Ack(1)
    );

    // A gap: batch 3 before 2.
    let (code, expected, _) = refused(c.receive(&host, &messages[2]).expect("refuse"));
    assert_eq!((code, expected), (RefuseCode::OutOfOrder, 2));

    // A record of batch 2 changed in transit or on the host.
    let mut modified = messages[1].clone();
    let last = modified.records[0].len() - 1;
    modified.records[0][last] ^= 1;
    let (code, expected, reason) = refused(c.receive(&host, &modified).expect("refuse"));
    assert_eq!((code, expected), (RefuseCode::Invalid, 2));
    assert!(reason.contains("modified"), "{reason}");

    // Signed by a key the host never announced.
    let mut forged = messages[1].clone();
    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let header = sensor_log::BatchHeader::decode(&forged.header).expect("header");
    forged.signature = header.seal(&other).expect("seal").signature.to_vec();
    let (code, _, reason) = refused(c.receive(&host, &forged).expect("refuse"));
    assert_eq!(code, RefuseCode::Invalid);
    assert!(reason.contains("bad signature"), "{reason}");

    // Another host's certificate.
    let (code, _, _) = refused(c.receive(&[0x22; 16], &messages[1]).expect("refuse"));
    assert_eq!(code, RefuseCode::HostMismatch);

    // Bytes that are no header at all.
    let mut garbage = messages[1].clone();
    garbage.header = vec![0xff; 3];
    let (code, expected, _) = refused(c.receive(&host, &garbage).expect("refuse"));
    assert_eq!((code, expected), (RefuseCode::Malformed, 2));

    // And it goes on: the genuine batches are stored.
    for (i, m) in messages.iter().enumerate().skip(1) {
        assert_eq!(
            c.receive(&host, m).expect("store"),
            Reply::Ack(i as u64 + 1)
        );
    }
    assert_eq!(alarms(&mut c, &host), ["invalid", "bad_signature"]);
    assert_eq!(alarms(&mut c, &[0x22; 16]), ["host_mismatch"]);
}

fn a_restored_host_is_a_fork_and_a_wiped_one_a_new_log_both_kept(mut c: Collector) {
    // The host logs, its state directory is copied, it goes on; later the copy is put back
    // and logs on its own: two different batches under the same numbers.
    let host_dir = tempfile::tempdir().expect("tempdir");
    write(host_dir.path(), 8, 100);
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(host_dir.path()).expect("dir") {
        let entry = entry.expect("entry");
        let to = copy.path().join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir(&to).expect("mkdir");
            for f in std::fs::read_dir(entry.path()).expect("dir") {
                let f = f.expect("entry");
                std::fs::copy(f.path(), to.join(f.file_name())).expect("copy");
            }
        } else {
            std::fs::copy(entry.path(), &to).expect("copy");
        }
    }
    write(host_dir.path(), 8, 200);
    write(copy.path(), 8, 300);
    let (host, key, genuine) = outbox(host_dir.path());
    let (_, _, restored) = outbox(copy.path());

    enroll(&mut c, host, key);
    for m in &genuine {
        assert!(matches!(c.receive(&host, m).expect("store"), Reply::Ack(_)));
    }
    let first_different = restored
        .iter()
        .zip(&genuine)
        .position(|(a, b)| a != b)
        .expect("the copies diverge");
    let (code, _, reason) = refused(
        c.receive(&host, &restored[first_different])
            .expect("refuse"),
    );
    assert_eq!(code, RefuseCode::Fork, "{reason}");
    let number = first_different as u64 + 1;
    assert_eq!(c.store().forks(&host).expect("forks"), [number]);
    assert_eq!(alarms(&mut c, &host), ["fork"]);
    // The held batch was not overwritten.
    assert_eq!(
        c.receive(&host, &genuine[first_different]).expect("resend"),
        Reply::Ack(number)
    );

    // Wiped: a new log from scratch under the same host id (and certificate), a new key.
    let wiped = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        host_dir.path().join(sensor_store::writer::HOST_ID_FILE),
        wiped.path().join(sensor_store::writer::HOST_ID_FILE),
    )
    .expect("copy host id");
    write(wiped.path(), 3, 400);
    let (wiped_host, _, fresh) = outbox(wiped.path());
    assert_eq!(wiped_host, host);
    let (code, _, _) = refused(c.receive(&host, &fresh[0]).expect("refuse"));
    assert_eq!(code, RefuseCode::Fork);
    assert_eq!(alarms(&mut c, &host), ["fork", "new_log"]);
    // Any batch of it, not only its first, is told by its key: never seen for the host.
    let (code, _, _) = refused(c.receive(&host, &fresh[1]).expect("refuse"));
    assert_eq!(code, RefuseCode::Fork);
    assert_eq!(alarms(&mut c, &host), ["fork", "new_log", "new_log"]);
}

/// Continuity is the database's: a batch verified against a checkpoint that is no longer
/// the host's (another session moved it) is not stored, and nothing of it stays (`Stale`).
#[test]
fn a_batch_verified_against_a_moved_checkpoint_is_not_stored() {
    use sensor_collector::store::{Commit, Held, Verified};
    use sensor_log::{BatchHeader, Verifier};

    let host_dir = tempfile::tempdir().expect("tempdir");
    write(host_dir.path(), 12, 100);
    let (host, key, messages) = outbox(host_dir.path());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open(&dir.path().join("collector.db")).expect("open");
    // Verifies batch `i` from `from` and stores it as verified against `claimed`.
    let commit =
        |store: &mut SqliteStore, i: usize, from: Option<&Held>, claimed: Option<&Held>| {
            let m: &BatchMessage = &messages[i];
            let records: Vec<&[u8]> = m.records.iter().map(Vec::as_slice).collect();
            let mut v = match from {
                Some(cp) => Verifier::resume(&cp.log).expect("resume"),
                None => Verifier::new(key),
            };
            v.message(&m.header, &m.signature, &records)
                .expect("verifies");
            let after = Held {
                log: v.checkpoint().expect("checkpoint"),
                tpm: Default::default(),
            };
            let header = BatchHeader::decode(&m.header).expect("header");
            let result = store
                .commit(&Verified {
                    header: &header,
                    message: m,
                    digest: sensor_log::batch::digest(&m.header),
                    before: claimed,
                    after: &after,
                    replayed: None,
                })
                .expect("commit");
            (result, after)
        };
    let (first, cp1) = commit(&mut store, 0, None, None);
    assert_eq!(first, Commit::Stored);
    let mut moved = cp1.clone();
    moved.log.next_batch = 5;
    let (stale, _) = commit(&mut store, 1, Some(&cp1), Some(&moved));
    assert_eq!(stale, Commit::Stale);
    assert_eq!(
        store.held(&host).expect("held"),
        [(1, messages_count(&messages[0]))]
    );
    let (stored, _) = commit(&mut store, 1, Some(&cp1), Some(&cp1));
    assert_eq!(stored, Commit::Stored);
    let (again, _) = commit(&mut store, 1, Some(&cp1), Some(&cp1));
    assert_eq!(again, Commit::Duplicate);
}

fn messages_count(m: &BatchMessage) -> u64 {
    m.records.len() as u64
}

fn a_host_that_stops_sending_is_reported_silent(mut c: Collector) {
    const MINUTE: u64 = 60_000_000_000;
    let host_dir = tempfile::tempdir().expect("tempdir");
    write(host_dir.path(), 16, 100);
    let (host, key, messages) = outbox(host_dir.path());
    enroll(&mut c, host, key);
    let half = messages.len() / 2;
    // Sends `span`, then: heard now, silent two timeouts later.
    let speak_then_fall_silent = |c: &mut Collector, span: &[BatchMessage]| {
        for m in span {
            assert!(matches!(c.receive(&host, m).expect("store"), Reply::Ack(_)));
        }
        let now = sensor_log::time::wall_now_ns();
        assert!(c.sweep_silent(now, MINUTE).expect("sweep").is_empty());
        assert_eq!(
            c.sweep_silent(now + 2 * MINUTE, MINUTE).expect("sweep"),
            [host]
        );
        now
    };
    let now = speak_then_fall_silent(&mut c, &messages[..half]);
    // The same silence is one alarm, however often it is swept.
    c.sweep_silent(now + 3 * MINUTE, MINUTE).expect("sweep");
    let silences = |c: &mut Collector| {
        c.store()
            .alarms(&host)
            .expect("alarms")
            .into_iter()
            .filter(|a| a.kind == "silent")
            .map(|a| a.batch)
            .collect::<Vec<_>>()
    };
    assert_eq!(silences(&mut c), [half as u64]);
    // It speaks again, then falls silent again: a second alarm, at its new last batch.
    speak_then_fall_silent(&mut c, &messages[half..]);
    assert_eq!(silences(&mut c), [half as u64, messages.len() as u64]);
}

/// Two sessions (or collectors) enrolling one host on first contact at the same moment: the
/// key pinned first stays, the later enrollment is told so and is no error, and the later
/// hello is greeted as a known host.
fn the_first_key_pinned_stays_when_two_sessions_enroll_at_once(mut c: Collector) {
    let first = tempfile::tempdir().expect("tempdir");
    write(first.path(), 2, 100);
    let (host, key, _) = outbox(first.path());
    let other = tempfile::tempdir().expect("tempdir");
    write(other.path(), 2, 200);
    let (_, other_key, _) = outbox(other.path());
    let hello = |key: &ed25519_dalek::VerifyingKey| Hello {
        host_id: host,
        agent_version: "test".into(),
        oldest: 1,
        newest: 1,
        keys: vec![(1, key.to_bytes())],
    };
    assert!(matches!(
        c.hello(&host, &hello(&key), true).expect("hello"),
        Greeting::Enrolled(_)
    ));
    // The other session looked before the insert: its own insert now finds the host.
    let late = Host {
        host_id: host,
        key_epoch: 1,
        public_key: other_key,
    };
    assert!(!c.store().enroll(&late, "first_contact").expect("enroll"));
    assert_eq!(
        c.store().host(&host).expect("host").map(|h| h.public_key),
        Some(key)
    );
    assert_eq!(
        c.hello(&host, &hello(&other_key), true).expect("hello"),
        Greeting::Known { next_batch: 0 }
    );
}

/// The silence sweep runs every half heartbeat timeout on a store worker, which in SQLite is
/// the one writer: it must not read the batches, whose number only grows (docs/performance.md,
/// "Simulated fleet": reading them took 28 % of the writer at 2,000 hosts). With the batches
/// table moved away, a sweep that read it fails; this one still finds the host and its last
/// batch.
#[test]
fn the_silence_sweep_reads_no_batch() {
    const MINUTE: u64 = 60_000_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = collector(dir.path());
    let host_dir = tempfile::tempdir().expect("tempdir");
    write(host_dir.path(), 16, 100);
    let (host, key, messages) = outbox(host_dir.path());
    enroll(&mut c, host, key);
    for m in &messages {
        assert!(matches!(c.receive(&host, m).expect("store"), Reply::Ack(_)));
    }
    let now = sensor_log::time::wall_now_ns();
    rusqlite::Connection::open(dir.path().join("collector.db"))
        .expect("open")
        .execute_batch("ALTER TABLE batches RENAME TO batches_moved_away")
        .expect("move the batches away");
    assert!(c.sweep_silent(now, MINUTE).expect("sweep").is_empty());
    assert_eq!(
        c.sweep_silent(now + 2 * MINUTE, MINUTE).expect("sweep"),
        [host]
    );
    let silent: Vec<u64> = c
        .store()
        .alarms(&host)
        .expect("alarms")
        .into_iter()
        .filter(|a| a.kind == "silent")
        .map(|a| a.batch)
        .collect();
    assert_eq!(silent, [messages.len() as u64]);
}

/// Each case against the SQLite store and against a real PostgreSQL server.
macro_rules! on_both_stores {
    ($($case:ident),*) => {
        mod sqlite {
            $(#[test]
            fn $case() {
                let dir = tempfile::tempdir().expect("tempdir");
                super::$case(super::collector(dir.path()));
            })*
        }
        mod postgresql {
            $(#[test]
            fn $case() {
                let Some(pg) = super::postgres() else { return };
                super::$case(super::pg_collector(&pg.url()));
            })*
        }
    };
}

on_both_stores!(
    every_batch_is_stored_once_however_often_it_is_sent,
    bad_batches_are_refused_with_their_reason_and_the_collector_goes_on,
    a_restored_host_is_a_fork_and_a_wiped_one_a_new_log_both_kept,
    a_host_that_stops_sending_is_reported_silent,
    the_first_key_pinned_stays_when_two_sessions_enroll_at_once
);

/// Two collectors against one PostgreSQL database, the host's connection moving from one
/// to the other and back mid-stream, with resends on both: every batch is stored exactly
/// once and the chain held for the host is continuous.
#[test]
fn two_collectors_share_one_postgresql_without_duplicates_or_gaps() {
    let Some(pg) = postgres() else { return };
    let host_dir = tempfile::tempdir().expect("tempdir");
    write(host_dir.path(), 60, 100);
    let (host, key, messages) = outbox(host_dir.path());
    let mut a = pg_collector(&pg.url());
    let mut b = pg_collector(&pg.url());
    enroll(&mut a, host, key);
    // A takes 1..=5, B takes 4..=9 (4 and 5 are resends), A takes 8..=12 (8 and 9 resent),
    // B the rest; each answers every batch with an ack.
    let spans = [
        (true, 0..5),
        (false, 3..9),
        (true, 7..12),
        (false, 11..messages.len()),
    ];
    for (on_a, span) in spans {
        let c = if on_a { &mut a } else { &mut b };
        for i in span {
            assert_eq!(
                c.receive(&host, &messages[i]).expect("store"),
                Reply::Ack(i as u64 + 1)
            );
        }
    }
    let held = b.store().held(&host).expect("held");
    assert!(
        held.iter().map(|(n, _)| *n).eq(1..=messages.len() as u64),
        "{held:?}"
    );
    let checkpoint = a.store().checkpoint(&host).expect("read").expect("held");
    assert_eq!(checkpoint.log.next_batch, messages.len() as u64 + 1);
    assert_eq!(b.store().checkpoint(&host).expect("read"), Some(checkpoint));
    assert!(alarms(&mut a, &host).is_empty());
}

/// The collectors' role adds and reads but cannot change or remove an event row; the owner
/// cannot either while the append-only trigger stands.
#[test]
fn event_rows_are_append_only_for_the_collector_role_and_the_owner() {
    let Some(pg) = postgres() else { return };
    pg.psql("CREATE ROLE collector_rw LOGIN").expect("role");
    sensor_collector::PostgresStore::init(&pg.url(), Some("collector_rw")).expect("init");
    let as_role = pg.url().replace("user=sensor_test", "user=collector_rw");
    let host_dir = tempfile::tempdir().expect("tempdir");
    write(host_dir.path(), 6, 100);
    let (host, key, messages) = outbox(host_dir.path());
    let mut c = sensor_collector::Collector::new(Box::new(
        sensor_collector::PostgresStore::connect(&as_role).expect("connect as the role"),
    ));
    enroll(&mut c, host, key);
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(
            c.receive(&host, m).expect("store"),
            Reply::Ack(i as u64 + 1)
        );
    }
    let mut role = postgres::Client::connect(&as_role, postgres::NoTls).expect("connect");
    for sql in [
        "UPDATE batches SET count = 0",
        "DELETE FROM batches",
        "DELETE FROM forks",
        "TRUNCATE batches",
    ] {
        let e = role.batch_execute(sql).expect_err(sql);
        let e = e
            .as_db_error()
            .map_or(e.to_string(), |d| d.message().to_string());
        assert!(e.contains("permission denied"), "{sql}: {e}");
    }
    for sql in [
        "UPDATE batches SET count = 0",
        "DELETE FROM batches",
        "TRUNCATE batches",
    ] {
        let e = pg.psql(sql).expect_err(sql).to_string();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    assert_eq!(
        pg.psql("SELECT COUNT(*) FROM batches").expect("count"),
        messages.len().to_string()
    );
}
