//! The built `sensor-collector serve` over real TLS on loopback, with certificates made by
//! the test: a host forwards its real log and the collector keeps it once; hosts without a
//! valid certificate are refused at the handshake; every kind of bad message is refused with
//! its reason while the session and the collector go on serving.

mod common;

use std::{path::Path, sync::Arc, time::Duration};

use collector_harness::{sample, scrape, CollectorProcess, CuttingProxy, Identity, Pki};
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

/// `sensor-collector verify` on the store in `dir` passes.
fn assert_verifies(dir: &Path) {
    let verify = cli(dir, &["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// `sensor-collector hosts` in `dir`, and its first host's columns.
fn host_row(dir: &Path) -> (String, Vec<String>) {
    let hosts = String::from_utf8_lossy(&cli(dir, &["hosts"]).stdout).into_owned();
    let row = hosts
        .lines()
        .nth(1)
        .expect("a host row")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    (hosts, row)
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

    assert_verifies(dir.path());
    let (hosts, row) = host_row(dir.path());
    let row: Vec<&str> = row.iter().map(String::as_str).collect();
    let n = log.batches.len().to_string();
    // host, key epoch, enrolled by, batches held, last batch, anchored, alarms: each batch
    // once; then when the collector last heard from it (just now).
    assert_eq!(
        row[..7],
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
    let heard: u64 = row[7].parse().expect("seconds");
    assert!(heard < 60 && row[8..] == ["s", "ago"], "{hosts}");
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
    let metrics = free_port();
    let c = start(
        &pki,
        dir.path(),
        &format!("enrollment = \"first_contact\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n[limits]\nmax_message = 65536"),
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
    // Sent again: refused again, but the same alarm is not raised (nor counted) twice.
    let (code, _) = refused(&send_all(&mut s, &forged.batches[2..3]).await[0]);
    assert_eq!(code, RefuseCode::Invalid);

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
    assert_verifies(dir.path());

    // Every refusal was counted by its reason, and the accepted batches and their records.
    let text = scrape(([127, 0, 0, 1], metrics).into());
    for (name, at_least) in [
        ("collector_rejected_total{reason=\"invalid\"}", 2.0),
        ("collector_rejected_total{reason=\"host_mismatch\"}", 2.0),
        ("collector_rejected_total{reason=\"oversized\"}", 1.0),
        ("collector_rejected_total{reason=\"malformed\"}", 1.0),
        (
            "collector_rejected_total{reason=\"protocol_violation\"}",
            2.0,
        ),
        (
            "collector_batches_accepted_total",
            log.batches.len() as f64 + 1.0,
        ),
        ("collector_ack_latency_seconds_count", 1.0),
    ] {
        let value = sample(&text, name);
        assert!(
            value >= at_least,
            "{name} = {value}, expected at least {at_least}"
        );
    }
    assert_eq!(
        sample(&text, "collector_alarms_total{kind=\"bad_signature\"}"),
        1.0,
        "{text}"
    );
}

/// A host whose disk limit pruned batches no collector had acknowledged says so in its
/// hello (its log begins later now): the collector takes its next batch across the gap, with
/// a `gap` alarm naming the batches that never arrived, and the store still verifies. The
/// same jump in a session whose hello did not say so is refused as out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_pruned_before_forwarding_are_a_gap_the_host_crosses_with_an_alarm() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(&pki, dir.path(), "enrollment = \"first_contact\"");
    let log = host_log(40, None);
    let n = log.batches.len() as u64;
    assert!(n >= 8, "{n} batches");
    let id = pki.host(&hex::encode(log.id));
    let mut s = connect(&c, &id, &pki, hello(&log)).await.expect("session");
    assert_eq!(
        send_all(&mut s, &log.batches[..3]).await,
        [Answer::Ack(1), Answer::Ack(2), Answer::Ack(3)]
    );
    let (code, reason) = refused(&send_all(&mut s, &log.batches[6..7]).await[0]);
    assert_eq!(code, RefuseCode::OutOfOrder, "{reason}");
    drop(s);

    // Batches 4 to 6 are gone from the host.
    let mut pruned = hello(&log);
    pruned.oldest = 7;
    let mut s = connect(&c, &id, &pki, pruned).await.expect("session");
    assert_eq!(s.welcome().next_batch, 4);
    assert_eq!(
        send_all(&mut s, &log.batches[6..]).await,
        (7..=n).map(Answer::Ack).collect::<Vec<_>>()
    );
    let out = cli(dir.path(), &["alarms", "--json"]);
    let alarms = String::from_utf8_lossy(&out.stdout);
    let gap: serde_json::Value = serde_json::from_str(alarms.trim()).expect("one alarm");
    assert_eq!(gap["kind"], "gap", "{alarms}");
    assert_eq!(gap["batch"], 7, "{alarms}");
    assert!(
        gap["detail"]
            .as_str()
            .is_some_and(|d| d.contains("batches 4 to 6")),
        "{alarms}"
    );
    assert_verifies(dir.path());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
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

/// Sends every batch from where the collector says, resending from `expected` after an
/// out-of-order or unavailable refusal (another collector advanced the host meanwhile), as
/// the agent does; returns (acks, refusals). Any other refusal is a failure.
async fn drive(s: &mut Session, batches: &[BatchMessage]) -> (u64, u64) {
    let (mut acks, mut refusals) = (0, 0);
    let mut next = s.welcome().next_batch.max(1);
    while next <= batches.len() as u64 {
        let end = (next + 8).min(batches.len() as u64 + 1);
        for n in next..end {
            s.send(&batches[n as usize - 1]).await.expect("send");
        }
        let mut resume = None;
        for _ in next..end {
            match s.answer().await.expect("answer") {
                Answer::Ack(_) => acks += 1,
                Answer::Refuse(r)
                    if matches!(r.code, RefuseCode::OutOfOrder | RefuseCode::Unavailable) =>
                {
                    refusals += 1;
                    resume.get_or_insert(r.expected.max(1));
                }
                Answer::Refuse(r) => panic!("refused: {r:?}"),
            }
        }
        next = resume.unwrap_or(end);
    }
    (acks, refusals)
}

/// Two collector processes against one PostgreSQL: the host's connection moves from one to
/// the other mid-stream, and then both receive the whole log at once. The database alone
/// keeps one continuous chain: each batch held once, none missing, verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_on_one_postgresql_keep_one_chain() {
    let Some(pg) = common::postgres() else { return };
    let url = pg.url();
    // The blocking PostgreSQL client runs its own runtime: not on this test's.
    let init = url.clone();
    std::thread::spawn(move || sensor_collector::store::init(&init, None))
        .join()
        .expect("init thread")
        .expect("schema");
    let pki = Pki::new();
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = CollectorProcess::start(Path::new(BIN), &pki, dir_a.path(), &url, "name = \"a\"");
    let b = CollectorProcess::start(Path::new(BIN), &pki, dir_b.path(), &url, "name = \"b\"");
    let log = host_log(240, None);
    let n = log.batches.len() as u64;
    assert!(n >= 40, "{n} batches");
    let host_hex = hex::encode(log.id);
    let approve = std::process::Command::new(BIN)
        .args([
            "--store",
            &url,
            "hosts",
            "approve",
            &host_hex,
            &hex::encode(log.key),
        ])
        .output()
        .expect("approve");
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    let id = pki.host(&host_hex);

    // Twenty batches to A, ten answers read, then the host moves to B mid-window.
    let mut sa = connect(&a, &id, &pki, hello(&log))
        .await
        .expect("session a");
    for batch in &log.batches[..20] {
        sa.send(batch).await.expect("send");
    }
    for _ in 0..10 {
        assert!(matches!(sa.answer().await.expect("answer"), Answer::Ack(_)));
    }
    drop(sa);
    let mut sb = connect(&b, &id, &pki, hello(&log))
        .await
        .expect("session b");
    let from = sb.welcome().next_batch;
    assert!((11..=21).contains(&from), "B expects batch {from}");
    drive(&mut sb, &log.batches[..30]).await;

    // Then the whole log to both at once, each session racing the other.
    let both = |c: &CollectorProcess| {
        let (addr, tls, h, batches) = (
            c.addr.clone(),
            client_config(&id.cert, &id.key, &pki.ca).expect("tls"),
            hello(&log),
            log.batches.clone(),
        );
        tokio::spawn(async move {
            let mut s = Session::connect(&addr, "localhost", tls, h)
                .await
                .expect("session");
            let mut total = (0, 0);
            // From batch 1: everything held is acknowledged again, as a resend.
            for chunk in [&batches[..], &batches[..]] {
                let (acks, refusals) = drive(&mut s, chunk).await;
                total = (total.0 + acks, total.1 + refusals);
            }
            total
        })
    };
    let (ta, tb) = (both(&a), both(&b));
    let (ra, rb) = (ta.await.expect("a"), tb.await.expect("b"));
    eprintln!("a: {ra:?} acks/refusals, b: {rb:?}");

    let held = pg
        .psql(&format!(
            "SELECT count(*), count(DISTINCT number), min(number), max(number) FROM batches WHERE host_id = '\\x{host_hex}'"
        ))
        .expect("psql");
    assert_eq!(held.trim(), format!("{n}|{n}|1|{n}"), "batches held");
    let verify = std::process::Command::new(BIN)
        .args(["--store", &url, "verify"])
        .output()
        .expect("verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// A stream of batches through a connection cut 1,000 times at random points (in the
/// handshake, the hello, inside a batch, inside an answer): the client resends from where
/// each new session's welcome says, at once, as the agent does after its back-off. The
/// collector holds every batch once, none missing, one verified chain, and it acknowledged
/// resends of batches it already held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cuts_leave_no_gap_and_no_duplicate() {
    const CUTS: u64 = 1000;
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(&pki, dir.path(), "enrollment = \"first_contact\"");
    let proxy = CuttingProxy::start(c.addr.clone(), CUTS, Duration::from_millis(40));
    let log = host_log(4000, None);
    let n = log.batches.len() as u64;
    let id = pki.host(&hex::encode(log.id));
    let tls = client_config(&id.cert, &id.key, &pki.ca).expect("tls");
    let (mut acks, mut sessions) = (0u64, 0u64);
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    // Until every batch is held and every cut has happened, keep (re)sending everything
    // from the collector's `next_batch`, and from batch 1 every tenth session (resends).
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "{} cuts, {acks} acks",
            proxy.cuts()
        );
        let Ok(mut s) = Session::connect(&proxy.addr, "localhost", tls.clone(), hello(&log)).await
        else {
            continue;
        };
        sessions += 1;
        let next = s.welcome().next_batch;
        if next == n + 1 && proxy.cuts() >= CUTS {
            break;
        }
        let from = if sessions % 10 == 0 { 1 } else { next.max(1) };
        let window = &log.batches[from as usize - 1..];
        let sent = async {
            for b in window.iter().take(64) {
                s.send(b).await?;
            }
            for _ in window.iter().take(64) {
                if let Answer::Refuse(r) = s.answer().await? {
                    panic!("refused: {r:?}");
                }
                acks += 1;
            }
            Ok::<_, sensor_forward::Error>(())
        };
        let _ = sent.await;
    }
    eprintln!(
        "{} cuts, {sessions} sessions, {acks} acks for {n} batches",
        proxy.cuts()
    );
    assert!(acks > n, "resends were acknowledged again");
    let (hosts, row) = host_row(dir.path());
    let row: Vec<&str> = row.iter().map(String::as_str).collect();
    assert_eq!(
        (row[3], row[4]),
        (n.to_string().as_str(), n.to_string().as_str()),
        "{hosts}"
    );
    assert_verifies(dir.path());
}
