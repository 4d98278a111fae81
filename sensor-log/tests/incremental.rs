//! The incremental verifier a collector runs (`Verifier::message`, a batch and its records at
//! a time, resumed from a serialized `Checkpoint` before every batch) reaches the same verdict
//! as `verify` over the whole log, on every vector of the negative corpus: the collector and
//! `sensorctl verify` cannot disagree on what is valid.
//!
//! The corpus files are split into messages by the grammar of docs/log-format.md ("Batch
//! files"), read here independently of `BatchFile`: each batch item with the record items
//! that follow it.

use std::path::PathBuf;

use sensor_log::batch_file::{BatchFile, ITEM_BATCH, ITEM_RECORD, MAGIC};
use sensor_log::{BatchHeader, BatchSource, Checkpoint, Failure, Verdict, Verifier};

struct Message {
    header: Vec<u8>,
    signature: Vec<u8>,
    records: Vec<Vec<u8>>,
}

/// The messages of a batch file, or `None` when its framing does not parse (those vectors
/// are about the file, not about the log).
fn messages(bytes: &[u8]) -> Option<Vec<Message>> {
    let mut at = MAGIC.len() + 2;
    let take = |at: &mut usize, n: usize| -> Option<Vec<u8>> {
        let out = bytes.get(*at..at.checked_add(n)?)?.to_vec();
        *at += n;
        Some(out)
    };
    let u32_at = |at: &mut usize| -> Option<usize> {
        let b = take(at, 4)?;
        usize::try_from(u32::from_le_bytes(b.try_into().ok()?)).ok()
    };
    let keys = u32_at(&mut at)?;
    at += keys * 40;
    let mut out: Vec<Message> = Vec::new();
    let mut loose = Vec::new();
    while at < bytes.len() {
        let tag = take(&mut at, 1)?[0];
        let n = u32_at(&mut at)?;
        let field = take(&mut at, n)?;
        match tag {
            ITEM_BATCH => {
                let n = u32_at(&mut at)?;
                out.push(Message {
                    header: field,
                    signature: take(&mut at, n)?,
                    records: Vec::new(),
                });
            }
            ITEM_RECORD => match out.last_mut() {
                Some(m) => m.records.push(field),
                None => loose.push(field),
            },
            _ => return None,
        }
    }
    // Records before any batch belong to no message; the first message carries them.
    if let Some(first) = out.first_mut() {
        loose.append(&mut first.records);
        first.records = loose;
    }
    Some(out)
}

/// Verifies the messages one at a time, the checkpoint serialized and the verifier resumed
/// from it before every batch after the first.
fn incremental(bytes: &[u8], messages: &[Message]) -> Result<(), Failure> {
    let first = BatchHeader::decode(&messages[0].header).ok();
    let mut file = BatchFile::read(bytes, bytes).expect("file reads");
    let key = first
        .and_then(|h| file.public_key(h.key_epoch).ok().flatten())
        .expect("the file carries the first batch's key");
    let mut verifier = Verifier::new(key);
    for m in messages {
        if let Some(checkpoint) = verifier.checkpoint() {
            let json = serde_json::to_string(&checkpoint).expect("serializes");
            let back: Checkpoint = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, checkpoint);
            verifier = Verifier::resume(&back)?;
        }
        verifier.message(&m.header, &m.signature, &records(m))?;
    }
    verifier.end().map(|_| ())
}

fn vectors() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("vectors dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "batches"))
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&p).expect("read"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn incremental_verification_agrees_with_the_whole_walk_on_every_vector() {
    let mut compared = 0;
    for (name, bytes) in vectors() {
        let whole = BatchFile::read(bytes.as_slice(), bytes.as_slice())
            .and_then(|mut f| sensor_log::verify(&mut f, None));
        let Some(messages) = messages(&bytes) else {
            assert!(
                whole.is_err(),
                "{name}: framing fails here but not in BatchFile"
            );
            continue;
        };
        let whole = match whole {
            Ok(v) => v,
            // A framing error: nothing for a message verifier to compare.
            Err(_) => continue,
        };
        // Without a batch, or without the key for it, a collector has nothing to verify
        // with: enrollment pins a key first (issue "Forward signed batches").
        if messages.is_empty()
            || messages[0].header.len() < 8
            || matches!(&whole, Verdict::Tampered(f) if f.detail.contains("no public key"))
        {
            continue;
        }
        let got = incremental(&bytes, &messages);
        match (&whole, &got) {
            (Verdict::Intact(_), Ok(_)) => {}
            (Verdict::Tampered(w), Err(i)) => assert_eq!(
                (w.position, w.reason),
                (i.position, i.reason),
                "{name}: whole walk {w}, incremental {i}"
            ),
            _ => panic!("{name}: whole walk {whole:?}, incremental {got:?}"),
        }
        compared += 1;
    }
    assert!(compared >= 25, "only {compared} vectors compared");
}

fn records(m: &Message) -> Vec<&[u8]> {
    m.records.iter().map(Vec::as_slice).collect()
}

/// A collector refuses a forged batch and, resumed from what it held, accepts the genuine
/// one that follows.
#[test]
fn a_refused_batch_leaves_the_checkpoint_to_go_on_from() {
    let vectors = vectors();
    let bytes = &vectors
        .iter()
        .find(|(n, _)| n == "intact.batches")
        .expect("intact vector")
        .1;
    let messages = messages(bytes).expect("parses");
    let first = BatchHeader::decode(&messages[0].header).expect("header");
    let mut file = BatchFile::read(bytes.as_slice(), bytes.as_slice()).expect("reads");
    let key = file
        .public_key(first.key_epoch)
        .expect("reads")
        .expect("key");
    let mut verifier = Verifier::new(key);
    let m = &messages[0];
    verifier
        .message(&m.header, &m.signature, &records(m))
        .expect("batch 1");
    let held = verifier.checkpoint().expect("checkpoint");

    let m = &messages[1];
    let mut forged = records(m);
    forged.pop();
    let refused = verifier
        .message(&m.header, &m.signature, &forged)
        .expect_err("a batch missing a record");
    assert_eq!(refused.reason, sensor_log::Reason::Deleted, "{refused}");
    let mut signature = m.signature.clone();
    signature[0] ^= 1;
    let mut verifier = Verifier::resume(&held).expect("resume");
    let refused = verifier
        .message(&m.header, &signature, &records(m))
        .expect_err("a forged signature");
    assert_eq!(refused.reason, sensor_log::Reason::BadSignature);

    let mut verifier = Verifier::resume(&held).expect("resume");
    let header = verifier
        .message(&m.header, &m.signature, &records(m))
        .expect("the genuine batch 2");
    assert_eq!(header.number, 2);
    assert_eq!(verifier.checkpoint().expect("checkpoint").next_batch, 3);
}
