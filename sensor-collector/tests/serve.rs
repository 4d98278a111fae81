//! The built `sensor-collector serve` over real TLS on loopback, with certificates made by
//! the test: a host forwards its real log and the collector keeps it once; hosts without a
//! valid certificate are refused at the handshake; every kind of bad message is refused with
//! its reason while the session and the collector go on serving.

mod common;

use std::{path::Path, sync::Arc, time::Duration};

use collector_harness::{CollectorProcess, Identity, Pki};
use common::{outbox, write};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use sensor_forward::client::{Answer, Session};
use sensor_forward::tls::client_config;
use sensor_log::forward::{self, BatchMessage, Hello, RefuseCode, TAG_BATCH};
use sensor_log::hex;
use sensor_log::record::HostId;

const BIN: &str = env!("CARGO_BIN_EXE_sensor-collector");

/// A host's log written by the agent's own writer: its id, key and outbox.
struct HostLog {
    _dir: tempfile::TempDir,
    id: HostId,
    key: [u8; 32],
    batches: Vec<BatchMessage>,
}

fn host_log(events: u64, host_id: Option<&HostId>) -> HostLog {
    let dir = tempfile::tempdir().expect("tempdir");
    if let Some(id) = host_id {
        std::fs::write(dir.path().join("host-id"), format!("{}\n", hex::encode(id)))
            .expect("host-id");
    }
    write(dir.path(), events, 100);
    let (id, key, batches) = outbox(dir.path());
    HostLog {
        _dir: dir,
        id,
        key: key.to_bytes(),
        batches,
    }
}

fn hello(log: &HostLog) -> Hello {
    Hello {
        host_id: log.id,
        agent_version: "test".into(),
        oldest: 1,
        newest: log.batches.len() as u64,
        keys: vec![(1, log.key)],
    }
}

async fn connect(
    c: &CollectorProcess,
    id: &Identity,
    pki: &Pki,
    hello: Hello,
) -> sensor_forward::Result<Session> {
    let tls = client_config(&id.cert, &id.key, &pki.ca).expect("client TLS");
    Session::connect(&c.addr, "localhost", tls, hello).await
}

fn start(pki: &Pki, dir: &Path, extra: &str) -> CollectorProcess {
    let db = dir.join("collector.db");
    CollectorProcess::start(
        Path::new(BIN),
        pki,
        dir,
        &format!("sqlite:{}", db.display()),
        extra,
    )
}

fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .arg("--store")
        .arg(format!("sqlite:{}", dir.join("collector.db").display()))
        .args(args)
        .output()
        .expect("run sensor-collector")
}

async fn send_all(session: &mut Session, batches: &[BatchMessage]) -> Vec<Answer> {
    for b in batches {
        session.send(b).await.expect("send");
    }
    let mut answers = Vec::new();
    for _ in batches {
        answers.push(session.answer().await.expect("answer"));
    }
    answers
}

fn refused(answer: &Answer) -> (RefuseCode, String) {
    match answer {
        Answer::Refuse(r) => (r.code, r.reason.clone()),
        Answer::Ack(n) => panic!("batch {n} acknowledged"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_forwards_its_log_and_the_collector_keeps_it_once() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(&pki, dir.path(), "enrollment = \"first_contact\"");
    let log = host_log(30, None);
    let id = pki.host(&hex::encode(log.id));

    let mut session = connect(&c, &id, &pki, hello(&log)).await.expect("session");
    assert_eq!(session.welcome().next_batch, 0, "nothing held yet");
    let answers = send_all(&mut session, &log.batches).await;
    let expected: Vec<Answer> = (1..=log.batches.len() as u64).map(Answer::Ack).collect();
    assert_eq!(answers, expected);
    session.bye().await.expect("bye");
    assert!(c
        .wait_for("enrolled on first contact", Duration::from_secs(5))
        .is_some());

    // A new session learns where to go on; a resend is acknowledged and stored once.
    let mut again = connect(&c, &id, &pki, hello(&log)).await.expect("session");
    assert_eq!(again.welcome().next_batch, log.batches.len() as u64 + 1);
    assert_eq!(
        send_all(&mut again, &log.batches[..2]).await,
        vec![Answer::Ack(1), Answer::Ack(2)]
    );

    let verify = cli(dir.path(), &["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let hosts = String::from_utf8_lossy(&cli(dir.path(), &["hosts"]).stdout).into_owned();
    let row: Vec<&str> = hosts
        .lines()
        .nth(1)
        .expect("a host row")
        .split_whitespace()
        .collect();
    let n = log.batches.len().to_string();
    // host, key epoch, enrolled by, batches held, last batch, anchored, alarms: each batch
    // once.
    assert_eq!(
        row,
        [
            hex::encode(log.id).as_str(),
            "1",
            "first_contact",
            &n,
            &n,
            "no",
            "0"
        ],
        "{hosts}"
    );
}

/// A client configuration that trusts the collector but presents no certificate.
fn anonymous(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki.ca).expect("CA"))
        .expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_without_a_valid_certificate_are_refused_at_the_handshake() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(&pki, dir.path(), "enrollment = \"first_contact\"");
    let log = host_log(4, None);
    let host_hex = hex::encode(log.id);

    let attempts = [
        ("no certificate", anonymous(&pki)),
        ("another CA", {
            let id = pki.untrusted_host(&host_hex);
            client_config(&id.cert, &id.key, &pki.ca).expect("tls")
        }),
        ("self-signed", {
            let id = pki.self_signed_host(&host_hex);
            client_config(&id.cert, &id.key, &pki.ca).expect("tls")
        }),
        ("no host id in the name", {
            let id = pki.host("not a host id");
            client_config(&id.cert, &id.key, &pki.ca).expect("tls")
        }),
    ];
    for (what, tls) in attempts {
        let result = Session::connect(&c.addr, "localhost", tls, hello(&log)).await;
        assert!(result.is_err(), "{what}: a session was opened");
        assert!(
            c.wait_for("refused at the handshake", Duration::from_secs(5))
                .is_some(),
            "{what}: the collector did not log the refusal"
        );
    }
    // The collector goes on serving hosts with valid certificates.
    let id = pki.host(&host_hex);
    let mut session = connect(&c, &id, &pki, hello(&log)).await.expect("session");
    assert_eq!(
        send_all(&mut session, &log.batches[..1]).await,
        vec![Answer::Ack(1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_refused_with_their_reason_and_serving_goes_on() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(
        &pki,
        dir.path(),
        "enrollment = \"first_contact\"\n[limits]\nmax_message = 65536",
    );
    let log = host_log(40, None);
    assert!(log.batches.len() >= 6, "{} batches", log.batches.len());
    let id = pki.host(&hex::encode(log.id));
    let mut s = connect(&c, &id, &pki, hello(&log)).await.expect("session");
    assert_eq!(
        send_all(&mut s, &log.batches[..2]).await,
        vec![Answer::Ack(1), Answer::Ack(2)]
    );

    // A record changed in transit.
    let mut modified = log.batches[2].clone();
    let last = modified.records[0].len() - 1;
    modified.records[0][last] ^= 1;
    let (code, reason) = refused(&send_all(&mut s, &[modified]).await[0]);
    assert_eq!(code, RefuseCode::Invalid, "{reason}");
    assert!(
        reason.contains("batch 3") || reason.contains("seq"),
        "{reason}"
    );

    // The same host id, but signed by a key the host never announced.
    let forged = host_log(40, Some(&log.id));
    let (code, reason) = refused(&send_all(&mut s, &forged.batches[2..3]).await[0]);
    assert_eq!(code, RefuseCode::Invalid, "{reason}");
    assert!(reason.contains("signature"), "{reason}");

    // Another host's batch on this host's certificate.
    let other = host_log(4, None);
    let (code, _) = refused(&send_all(&mut s, &other.batches[..1]).await[0]);
    assert_eq!(code, RefuseCode::HostMismatch);

    // A frame over the collector's limit, and a batch whose items do not parse: each refused,
    // the stream stays in step.
    let mut huge = vec![TAG_BATCH];
    huge.extend_from_slice(&100_000u32.to_le_bytes());
    huge.extend_from_slice(&vec![0x55; 100_000]);
    s.send_raw(huge).await.expect("send");
    let (code, reason) = refused(&s.answer().await.expect("answer"));
    assert_eq!(code, RefuseCode::Oversized, "{reason}");
    let mut bad_items = Vec::new();
    forward::encode_batch(&log.batches[2], &mut bad_items).expect("encode");
    bad_items[forward::FRAME_HEADER] = 7;
    s.send_raw(bad_items).await.expect("send");
    let (code, reason) = refused(&s.answer().await.expect("answer"));
    assert_eq!(code, RefuseCode::Malformed, "{reason}");

    // After all that, the same session stores the genuine next batch.
    assert_eq!(
        send_all(&mut s, &log.batches[2..3]).await,
        vec![Answer::Ack(3)]
    );

    // Random bytes end the session with the reason; the host comes back at once.
    s.send_raw(vec![0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5])
        .await
        .expect("send");
    let end = s.answer().await.expect_err("the session ends");
    assert!(end.to_string().contains("protocol_violation"), "{end}");

    // A message cut short by the end of the stream.
    let mut s = connect(&c, &id, &pki, hello(&log)).await.expect("session");
    let mut cut = Vec::new();
    forward::encode_batch(&log.batches[3], &mut cut).expect("encode");
    cut.truncate(cut.len() / 2);
    s.send_raw(cut).await.expect("send");
    s.close_sending();
    let end = s.answer().await.expect_err("the session ends");
    assert!(end.to_string().contains("ends inside a message"), "{end}");

    // A hello that names another host than the certificate.
    let mut lie = hello(&log);
    lie.host_id = other.id;
    let end = connect(&c, &id, &pki, lie).await.err().expect("refused");
    assert!(end.to_string().contains("host_mismatch"), "{end}");

    let mut s = connect(&c, &id, &pki, hello(&log)).await.expect("session");
    assert_eq!(s.welcome().next_batch, 4);
    assert_eq!(
        send_all(&mut s, &log.batches[3..]).await.len(),
        log.batches.len() - 3
    );
    // And another host is served meanwhile.
    let other_id = pki.host(&hex::encode(other.id));
    let mut o = connect(&c, &other_id, &pki, hello(&other))
        .await
        .expect("session");
    assert_eq!(
        send_all(&mut o, &other.batches[..1]).await,
        vec![Answer::Ack(1)]
    );
    let verify = cli(dir.path(), &["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_waits_for_an_operator_when_enrollment_needs_approval() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(&pki, dir.path(), "");
    let log = host_log(4, None);
    let host_hex = hex::encode(log.id);
    let id = pki.host(&host_hex);
    let mut s = connect(&c, &id, &pki, hello(&log)).await.expect("session");
    let (code, _) = refused(&send_all(&mut s, &log.batches[..1]).await[0]);
    assert_eq!(code, RefuseCode::NotEnrolled);

    let approve = cli(
        dir.path(),
        &["hosts", "approve", &host_hex, &hex::encode(log.key)],
    );
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    assert_eq!(
        send_all(&mut s, &log.batches[..1]).await,
        vec![Answer::Ack(1)]
    );
}
