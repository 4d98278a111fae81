//! The positive test vectors of `docs/log-format.md`: the records here, encoded, chained
//! and sealed by the test below with a fixed key, must appear in the document verbatim, so
//! the specification and the code cannot drift apart. Public so that other crates' tests
//! (the store's, a collector's) start from the documented records.
//!
//! The documented log is one an agent upgraded between its two epochs: batch 1 holds
//! version-1 records (a reader must accept them forever), batch 2 version-2 records.

use crate::chain::{chain_next, leaf_hash, GENESIS_HEAD};
use crate::event::{Detail, Event, FileAccess, Identity, Kind, Process};
use crate::record::{
    Body, EndReason, EpochStart, Record, RecordHeader, FORMAT_VERSION, FORMAT_VERSION_1,
};

fn header(version: u16, epoch: u64, seq: u64) -> RecordHeader {
    RecordHeader {
        version,
        host_id: [0x11; 16],
        epoch,
        seq,
        wall_ns: 1_700_000_000_000_000_000 + seq,
        mono_ns: 5_000_000_000 + seq,
    }
}

/// The documented version-1 records: an `EpochStart` (seq 1) and a `file_open` event (seq 2).
pub fn records() -> [Record; 2] {
    let start = Record {
        header: header(FORMAT_VERSION_1, 1, 1),
        body: Body::EpochStart(EpochStart {
            previous_epoch: None,
            previous_head: GENESIS_HEAD,
            reason: EndReason::First,
            boot_id: "b".to_string(),
        }),
    };
    let event = Record {
        header: header(FORMAT_VERSION_1, 1, 2),
        body: Body::Event(Event {
            kind: Kind::FileOpen,
            time: "t".to_string(),
            ok: true,
            errno: None,
            process: Some(Process {
                pid: 7,
                exe: "/x".to_string(),
                ..Process::default()
            }),
            identity: Some(Identity {
                user: "u".to_string(),
                human: true,
                ..Identity::default()
            }),
            file: Some(FileAccess {
                path: "/p".to_string(),
                ..FileAccess::default()
            }),
            target: None,
            syscall: None,
            loss: None,
            detail: None,
        }),
    };
    [start, event]
}

/// The documented version-2 records, epoch 2 after [`records`]: an `EpochStart` (seq 3), the
/// `file_open` event of seq 2 with a `Repeated` detail (seq 4), a `watch_overflow` event
/// (seq 5).
pub fn v2_records() -> [Record; 3] {
    let previous_head = records().iter().fold(GENESIS_HEAD, |head, r| {
        chain_next(&head, &leaf_hash(&r.encode().expect("a vector encodes")))
    });
    let start = Record {
        header: header(FORMAT_VERSION, 2, 3),
        body: Body::EpochStart(EpochStart {
            previous_epoch: Some(1),
            previous_head,
            reason: EndReason::CleanStop,
            boot_id: "b".to_string(),
        }),
    };
    let mut repeated = records()[1].clone();
    repeated.header = header(FORMAT_VERSION, 2, 4);
    if let Body::Event(e) = &mut repeated.body {
        e.detail = Some(Detail::Repeated {
            count: 2,
            first: "f".to_string(),
            last: "l".to_string(),
        });
    }
    let overflow = Record {
        header: header(FORMAT_VERSION, 2, 5),
        body: Body::Event(Event::watch_overflow("/d", "/d/*", 300, 256, 0)),
    };
    [start, repeated, overflow]
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::{records as vector_records, v2_records};
    use crate::batch::{BatchHeader, BATCH_VERSION};
    use crate::chain::{chain_next, leaf_hash, GENESIS_HEAD};
    use crate::hex;
    use crate::merkle;
    use crate::record::Record;

    #[test]
    fn documented_vectors() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut lines = vec![format!(
            "public key: {}",
            hex::encode(key.verifying_key().as_bytes())
        )];
        let (mut head, mut prev_digest) = (GENESIS_HEAD, [0; 32]);
        let batches = [(1, vector_records().to_vec()), (2, v2_records().to_vec())];
        for (number, records) in batches {
            let (first_seq, prev_head) = (records[0].header.seq, head);
            let mut leaves = Vec::new();
            for record in &records {
                let bytes = record.encode().expect("encodes");
                assert_eq!(Record::decode(&bytes).expect("decodes"), *record);
                let leaf = leaf_hash(&bytes);
                head = chain_next(&head, &leaf);
                leaves.push(leaf);
                let seq = record.header.seq;
                lines.push(format!("record {seq} bytes: {}", hex::encode(&bytes)));
                lines.push(format!("record {seq} leaf: {}", hex::encode(leaf)));
                lines.push(format!("record {seq} chain head: {}", hex::encode(head)));
            }
            let batch = BatchHeader {
                version: BATCH_VERSION,
                host_id: [0x11; 16],
                epoch: records[0].header.epoch,
                number,
                first_seq,
                count: records.len() as u64,
                merkle_root: merkle::root(&leaves),
                prev_digest,
                prev_head,
                chain_head: head,
                key_epoch: 1,
                wall_ns: 1_700_000_000_000_000_000 + number * 1_000_000_000,
                anchor: None,
            }
            .seal(&key)
            .expect("seals");
            prev_digest = batch.digest;
            // Batch 1's lines are unprefixed, as they were before batch 2 was documented.
            let prefix = if number == 1 {
                String::new()
            } else {
                format!("batch {number} ")
            };
            lines.push(format!(
                "{prefix}merkle root: {}",
                hex::encode(batch.header.merkle_root)
            ));
            lines.push(format!(
                "{prefix}header bytes: {}",
                hex::encode(&batch.header_bytes)
            ));
            lines.push(format!(
                "{prefix}header digest: {}",
                hex::encode(batch.digest)
            ));
            lines.push(format!(
                "{prefix}signature: {}",
                hex::encode(batch.signature)
            ));
        }
        lines.push(format!("empty root: {}", hex::encode(merkle::empty_root())));

        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/log-format.md"
        ))
        .expect("docs/log-format.md");
        let missing: Vec<&String> = lines.iter().filter(|l| !doc.contains(l.as_str())).collect();
        assert!(
            missing.is_empty(),
            "docs/log-format.md lacks these vector lines:\n{}",
            lines.join("\n")
        );
    }
}
