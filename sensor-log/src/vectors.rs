//! The positive test vectors of `docs/log-format.md`: the records here, encoded, chained
//! and sealed by the test below with a fixed key, must appear in the document verbatim, so
//! the specification and the code cannot drift apart. Public so that other crates' tests
//! (the store's, a collector's) start from the documented records.

use crate::chain::GENESIS_HEAD;
use crate::event::{Event, FileAccess, Identity, Kind, Process};
use crate::record::{Body, EndReason, EpochStart, Record, RecordHeader, FORMAT_VERSION};

fn header(seq: u64) -> RecordHeader {
    RecordHeader {
        version: FORMAT_VERSION,
        host_id: [0x11; 16],
        epoch: 1,
        seq,
        wall_ns: 1_700_000_000_000_000_000 + seq,
        mono_ns: 5_000_000_000 + seq,
    }
}

/// The documented records: an `EpochStart` (seq 1) and a `file_open` event (seq 2).
pub fn records() -> [Record; 2] {
    let start = Record {
        header: header(1),
        body: Body::EpochStart(EpochStart {
            previous_epoch: None,
            previous_head: GENESIS_HEAD,
            reason: EndReason::First,
            boot_id: "b".to_string(),
        }),
    };
    let event = Record {
        header: header(2),
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
        }),
    };
    [start, event]
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::records as vector_records;
    use crate::batch::BatchHeader;
    use crate::chain::{chain_next, leaf_hash, GENESIS_HEAD};
    use crate::hex;
    use crate::merkle;
    use crate::record::{Record, FORMAT_VERSION};

    #[test]
    fn documented_vectors() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let records = vector_records();
        let mut lines = vec![format!(
            "public key: {}",
            hex::encode(key.verifying_key().as_bytes())
        )];
        let mut head = GENESIS_HEAD;
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
            version: FORMAT_VERSION,
            host_id: [0x11; 16],
            epoch: 1,
            number: 1,
            first_seq: 1,
            count: 2,
            merkle_root: merkle::root(&leaves),
            prev_digest: [0; 32],
            prev_head: GENESIS_HEAD,
            chain_head: head,
            key_epoch: 1,
            wall_ns: 1_700_000_001_000_000_000,
            anchor: None,
        }
        .seal(&key)
        .expect("seals");
        lines.push(format!(
            "merkle root: {}",
            hex::encode(batch.header.merkle_root)
        ));
        lines.push(format!(
            "header bytes: {}",
            hex::encode(&batch.header_bytes)
        ));
        lines.push(format!("header digest: {}", hex::encode(batch.digest)));
        lines.push(format!("signature: {}", hex::encode(batch.signature)));
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
