//! The record: the unit of the hash chain. Its bytes come from `codec` (docs/log-format.md
//! gives the layout an independent verifier decodes).

use serde::{Deserialize, Serialize};

use crate::codec;
pub use crate::codec::MAX_ENCODED_BYTES;
use crate::error::{Error, Result};
use crate::event::Event;

/// Version of the record layout every record is written in. Bumped on any change of bytes;
/// batch headers have their own (`batch::BATCH_VERSION`). Version 2 added `Event::detail`.
pub const FORMAT_VERSION: u16 = 2;

/// The first record layout, without `Event::detail`: a log keeps its records forever, so
/// version-1 records written before an upgrade are still read and verified.
pub const FORMAT_VERSION_1: u16 = 1;

/// Whether a reader knows the layout of records of `version`.
pub fn readable(version: u16) -> bool {
    (FORMAT_VERSION_1..=FORMAT_VERSION).contains(&version)
}

pub type Hash = [u8; 32];
pub type HostId = [u8; 16];

/// One link of the chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub header: RecordHeader,
    pub body: Body,
}

/// The fixed-size part of a record; the verifier decodes only this for event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordHeader {
    pub version: u16,
    pub host_id: HostId,
    /// Agent start this record belongs to; 1 for the first start.
    pub epoch: u64,
    /// Global, contiguous, never repeated; the first record is 1.
    pub seq: u64,
    pub wall_ns: u64,
    pub mono_ns: u64,
}

/// A log-internal body's kind name is the variant's name in snake case (derived).
#[derive(
    Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every record is an Event; boxing would add an allocation per record"
)]
pub enum Body {
    /// A credential access, or a `loss` event counting events that never reached the chain.
    Event(Event),
    EpochStart(EpochStart),
    KeyRotation(KeyRotation),
    Pruned(Pruned),
    /// What the TPM anchor did (docs/tpm.md): chained, so anchoring, its gaps and its alarms
    /// are part of the signed history.
    Tpm(TpmEntry),
}

/// First record of every epoch: links to the previous epoch and says how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStart {
    /// None for the very first epoch.
    pub previous_epoch: Option<u64>,
    /// Chain head after the last durable record of the previous epoch (genesis for the first).
    pub previous_head: Hash,
    pub reason: EndReason,
    /// `/proc/sys/kernel/random/boot_id` of this start, the evidence for `Reboot`.
    pub boot_id: String,
}

/// How the previous epoch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// No previous epoch.
    First,
    /// The previous agent wrote its clean-stop marker.
    CleanStop,
    /// No marker and the same boot: the agent died; up to one batch interval of events that
    /// were chained in memory but not yet sealed is lost, and their number is not knowable.
    Crash,
    /// The boot id changed since the previous epoch (the machine restarted).
    Reboot,
}

/// Announces the next signing key. Its batch is signed by the old key, which is then destroyed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotation {
    pub new_public_key: [u8; 32],
    pub key_epoch: u64,
}

/// Says that retention removed the oldest batches, so nothing disappears silently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    /// Last sequence number removed; the oldest retained record is `up_to_seq + 1`.
    pub up_to_seq: u64,
    pub records: u64,
    pub batches: u64,
}

/// A TPM anchoring entry. Batches from a base's `replay_from` on are extended into the PCR in
/// order, so a verifier replays their digests from the base's `pcr_value`.
/// Its kind name is `tpm_` and the variant's name in snake case (derived).
#[derive(
    Clone, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case", prefix = "tpm_")]
pub enum TpmEntry {
    /// Anchoring starts in this epoch (the agent started).
    Anchored(AnchorBase),
    /// Anchoring resumes after batches `gap_from..=gap_to` were sealed without a known extend
    /// (TPM failing, or the anchor queue full); the base re-reads the PCR.
    Resumed {
        gap_from: u64,
        gap_to: u64,
        base: AnchorBase,
    },
    /// The log is not anchored in a TPM (none found, or switched off).
    Unanchored { reason: String },
    /// Anchoring failed at `from_batch` (that batch may or may not be in the PCR); a
    /// `Resumed` entry follows when the TPM answers again.
    Failing { from_batch: u64, error: String },
    /// A self-quote of the anchor PCR with qualifying data `quote_binding(batch, digest of
    /// batch, zeros)`: the PCR value right after `batch` was extended.
    Quote(TpmQuote),
    /// The agent found at start that the log and the TPM disagree (e.g. `rolled back`): the
    /// state directory is an older copy, or belongs to another TPM.
    Alarm { reason: String, detail: String },
}

/// The replay starting point of an anchored span, with the TPM state it was read in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorBase {
    /// The first batch extended from `pcr_value`.
    pub replay_from: u64,
    pub pcr_index: u32,
    /// PCR value read before batch `replay_from` was extended (not zero if anything extended
    /// it earlier in this TPM boot cycle).
    pub pcr_value: Hash,
    pub reset_count: u32,
    pub restart_count: u32,
    pub nv_counter: u64,
    pub nv_index: u32,
    pub ak_handle: u32,
    /// The attestation key's `TPMT_PUBLIC`, for a verifier to pin.
    pub ak_public: Vec<u8>,
}

impl AnchorBase {
    /// A short name for the attestation key: the first 8 bytes of SHA-256 over `ak_public`,
    /// in hex, so an operator can compare the keys of two bases at a glance.
    pub fn ak_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        crate::hex::encode(&Sha256::digest(&self.ak_public)[..8])
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmQuote {
    pub batch: u64,
    /// Marshalled `TPMS_ATTEST` and its ECDSA P-256 signature (`r || s`).
    pub attest: Vec<u8>,
    pub signature: Vec<u8>,
}

impl TpmEntry {
    pub fn kind_name(&self) -> &'static str {
        self.into()
    }
}

impl Body {
    /// The `kind` shown by queries: the event kind, or the log-internal entry's name.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Body::Event(e) => e.kind.as_str(),
            Body::Tpm(t) => t.kind_name(),
            internal => internal.into(),
        }
    }

    /// Names `kind_name` gives log-internal records, for error messages and queries.
    pub fn internal_kinds() -> impl Iterator<Item = &'static str> {
        use strum::VariantNames;
        Body::VARIANTS
            .iter()
            .filter(|name| !matches!(**name, "event" | "tpm"))
            .chain(TpmEntry::VARIANTS)
            .copied()
    }
}

/// Index of the `Event` variant in the body's u32 tag; other variants are log-internal.
pub const BODY_TAG_EVENT: u32 = 0;

/// Index of the `Tpm` variant in the body's u32 tag (declaration order of `Body`).
pub const BODY_TAG_TPM: u32 = 4;

/// Length of the encoded `RecordHeader`; the body's `u32` tag follows it.
const HEADER_LEN: usize = 50;

/// Reads the header and the body tag without decoding the body: the verifier's fast path.
/// The header has fixed-width fields only (docs/log-format.md), so they are read at their
/// offsets: through the codec this cost about 6 % of `verify`. `round_trip_and_deterministic`
/// checks it against the decoded header.
pub fn peek(bytes: &[u8]) -> Result<(RecordHeader, u32)> {
    let field = |at: usize, n: usize| {
        bytes
            .get(at..at + n)
            .ok_or_else(|| Error::malformed("record", "shorter than its header and body tag"))
    };
    let u64_at = |at| -> Result<u64> {
        Ok(u64::from_le_bytes(
            field(at, 8)?
                .try_into()
                .map_err(|_| Error::malformed("record", "header"))?,
        ))
    };
    let header = RecordHeader {
        version: u16::from_le_bytes([field(0, 1)?[0], field(1, 1)?[0]]),
        host_id: field(2, 16)?
            .try_into()
            .map_err(|_| Error::malformed("record", "header"))?,
        epoch: u64_at(18)?,
        seq: u64_at(26)?,
        wall_ns: u64_at(34)?,
        mono_ns: u64_at(42)?,
    };
    let tag = u32::from_le_bytes(
        field(HEADER_LEN, 4)?
            .try_into()
            .map_err(|_| Error::malformed("record", "body tag"))?,
    );
    Ok((header, tag))
}

/// The encoding of `Event::detail` = none: the last byte of a version-2 event record, which a
/// version-1 event record lacks. `Event` is the last field of the record and `detail` the last
/// of `Event`, so the two layouts differ in that byte alone.
const NO_DETAIL: u8 = 0;

impl Record {
    /// The bytes of the record in the layout of the version its header names (the writer
    /// always names `FORMAT_VERSION`; version 1 is for test vectors of older logs).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.encode_into(&mut bytes)?;
        Ok(bytes)
    }

    /// Appends the bytes of `encode` to `out` and returns their length; on error `out` is
    /// as it was.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<usize> {
        if self.header.version == FORMAT_VERSION_1 {
            if let Body::Event(event) = &self.body {
                if event.detail.is_some() {
                    return Err(Error::malformed(
                        "record",
                        "a version-1 event cannot carry a `detail`",
                    ));
                }
                // Version 1 has no `detail`: its encoding is version 2's without the last
                // byte (`None`).
                let len = codec::encode_into(self, out)?;
                out.pop();
                return Ok(len - 1);
            }
        }
        codec::encode_into(self, out)
    }

    /// Decodes a record in the layout of the version its header names, 1 or 2, with every
    /// rule of the codec (no trailing bytes, known variants, bounded lengths).
    pub fn decode(bytes: &[u8]) -> Result<Record> {
        let (header, tag) = peek(bytes)?;
        match header.version {
            FORMAT_VERSION_1 if tag == BODY_TAG_EVENT => decode_v1_event(bytes),
            FORMAT_VERSION if tag == BODY_TAG_EVENT => {
                codec::decode(bytes, "record").map_err(|e| {
                    if decode_v1_event(bytes).is_ok() {
                        Error::malformed(
                            "record",
                            "a version-2 event ends before its `detail` field",
                        )
                    } else {
                        e
                    }
                })
            }
            // Log-internal records have the same layout in both versions.
            v if readable(v) => codec::decode(bytes, "record"),
            v => Err(Error::malformed(
                "record",
                format!("unknown format version {v}"),
            )),
        }
    }
}

/// A version-1 event record: its bytes followed by `NO_DETAIL` must be exactly a version-2
/// record whose `detail` is none, that byte included (anything else means the bytes hold
/// more than version 1 has).
fn decode_v1_event(bytes: &[u8]) -> Result<Record> {
    let mut as_v2 = Vec::with_capacity(bytes.len() + 1);
    as_v2.extend_from_slice(bytes);
    as_v2.push(NO_DETAIL);
    let (record, used): (Record, usize) = codec::decode_prefix(&as_v2, "record")?;
    let detail = matches!(&record.body, Body::Event(e) if e.detail.is_some());
    if used != as_v2.len() || detail {
        return Err(Error::malformed(
            "record",
            "a version-1 event has bytes after `loss`, its last field (`detail` is a version-2 field)",
        ));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    /// The names are part of the query interface (`sensorctl events --kind`) and of the
    /// store's kind column: derived, and pinned here so a renamed variant fails.
    #[test]
    fn internal_kind_names_are_derived_and_pinned() {
        assert_eq!(
            Body::internal_kinds().collect::<Vec<_>>(),
            [
                "epoch_start",
                "key_rotation",
                "pruned",
                "tpm_anchored",
                "tpm_resumed",
                "tpm_unanchored",
                "tpm_failing",
                "tpm_quote",
                "tpm_alarm",
            ]
        );
        let alarm = TpmEntry::Alarm {
            reason: String::new(),
            detail: String::new(),
        };
        assert_eq!(Body::Tpm(alarm).kind_name(), "tpm_alarm");
        let pruned = Body::Pruned(Pruned {
            up_to_seq: 1,
            records: 1,
            batches: 1,
        });
        assert_eq!(pruned.kind_name(), "pruned");
    }

    use super::*;
    use crate::event::Detail;
    use crate::vectors::{records as vector_records, v2_records};

    #[test]
    fn round_trip_and_deterministic() {
        for record in vector_records().into_iter().chain(v2_records()) {
            let bytes = record.encode().expect("encodes");
            assert_eq!(
                record.encode().expect("encodes again"),
                bytes,
                "same value, same bytes"
            );
            assert_eq!(Record::decode(&bytes).expect("decodes"), record);
            let (header, tag) = peek(&bytes).expect("peeks");
            assert_eq!(header, record.header);
            assert_eq!(tag == BODY_TAG_EVENT, matches!(record.body, Body::Event(_)));
        }
    }

    #[test]
    fn rejects_trailing_and_truncated_bytes() {
        let mut bytes = vector_records()[1].encode().expect("encodes");
        bytes.push(0);
        assert!(Record::decode(&bytes).is_err());
        bytes.truncate(bytes.len() - 2);
        assert!(Record::decode(&bytes).is_err());
        assert!(peek(&bytes[..HEADER_LEN + 3]).is_err(), "no whole body tag");
        assert!(peek(&bytes[..HEADER_LEN - 1]).is_err(), "no whole header");
        assert!(peek(&bytes[..HEADER_LEN + 4]).is_ok());
    }

    /// The documented version-1 event with its header set to `version`, encoded in the
    /// version-2 layout (the `detail` byte included, whatever the header says).
    fn event_in_v2_layout(version: u16, detail: Option<Detail>) -> Vec<u8> {
        let mut record = vector_records()[1].clone();
        record.header.version = version;
        if let Body::Event(e) = &mut record.body {
            e.detail = detail;
        }
        codec::encode(&record).expect("encodes")
    }

    fn refusal(bytes: &[u8]) -> String {
        match Record::decode(bytes) {
            Ok(r) => panic!("decoded {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn version_1_event_is_version_2_without_the_detail_byte() {
        let v1 = vector_records()[1].encode().expect("encodes");
        let v2 = event_in_v2_layout(FORMAT_VERSION_1, None);
        assert_eq!(v2.split_last(), Some((&NO_DETAIL, &v1[..])));
        let Body::Event(e) = Record::decode(&v1).expect("decodes").body else {
            panic!("an event")
        };
        assert_eq!(e.detail, None);
    }

    #[test]
    fn version_1_event_with_a_detail_field_is_refused() {
        let repeated = Detail::Repeated {
            count: 2,
            first: "a".into(),
            last: "b".into(),
        };
        for detail in [None, Some(repeated.clone())] {
            let why = refusal(&event_in_v2_layout(FORMAT_VERSION_1, detail));
            assert!(why.contains("`detail` is a version-2 field"), "{why}");
        }
        let mut record = vector_records()[1].clone();
        if let Body::Event(e) = &mut record.body {
            e.detail = Some(repeated);
        }
        assert!(record.encode().is_err(), "version 1 cannot encode a detail");
    }

    #[test]
    fn version_2_event_without_its_detail_field_is_refused() {
        let mut bytes = event_in_v2_layout(FORMAT_VERSION, None);
        assert!(Record::decode(&bytes).is_ok());
        bytes.pop();
        let why = refusal(&bytes);
        assert!(why.contains("ends before its `detail` field"), "{why}");
    }

    #[test]
    fn unknown_detail_variant_is_refused() {
        let first = "t".to_string();
        let detail = Detail::Repeated {
            count: 1,
            first: first.clone(),
            last: first,
        };
        let mut bytes = event_in_v2_layout(FORMAT_VERSION, Some(detail));
        // From the end: `last` and `first` (8 + 1 bytes each), `count` (8), the variant index.
        let at = bytes.len() - 9 - 9 - 8 - 4;
        assert_eq!(bytes[at..at + 4], [0, 0, 0, 0], "Repeated's index");
        assert!(Record::decode(&bytes).is_ok());
        // Far past the last variant, so that appending variants keeps it unknown.
        bytes[at] = 0xff;
        let why = refusal(&bytes);
        assert!(why.contains("variant index"), "{why}");
    }

    #[test]
    fn unknown_format_version_is_refused() {
        for version in [0, 3, u16::MAX] {
            let why = refusal(&event_in_v2_layout(version, None));
            assert!(
                why.contains(&format!("unknown format version {version}")),
                "{why}"
            );
        }
    }

    #[test]
    fn huge_length_prefix_is_refused_before_allocating() {
        let mut bytes = vector_records()[0].encode().expect("encodes");
        // The boot id's u64 length prefix sits 8 bytes before its 1-byte content at the end.
        let at = bytes.len() - 9;
        bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Record::decode(&bytes).is_err());
    }
}
