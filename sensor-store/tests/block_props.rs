//! Any edit of a stored record block (a flipped byte, a cut, bytes appended, the block
//! replaced by arbitrary bytes) either leaves its records as they were or makes `verify`
//! name a record of that block or an earlier one; and neither `verify` nor a query panics
//! on it (the block limit itself: `block.rs`'s unit tests).
//!
//! `PROPTEST_CASES=2000 cargo test --release -p sensor-store --test block_props` searches longer.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use sensor_log::{Position, Verdict};
use sensor_store::{block, verify, Filter, Store};

/// A store of 1 + 40 records in batches of 16 (blocks of at most 16), written once.
fn template() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        common::write_log(dir.path(), 40, 16);
        dir
    })
    .path()
}

#[derive(Clone, Debug)]
enum Edit {
    Flip { at: usize, bit: u8 },
    Cut { to: usize },
    Append(Vec<u8>),
    Replace(Vec<u8>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 0..8u8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        2 => any::<usize>().prop_map(|to| Edit::Cut { to }),
        1 => proptest::collection::vec(any::<u8>(), 1..64).prop_map(Edit::Append),
        1 => proptest::collection::vec(any::<u8>(), 0..256).prop_map(Edit::Replace),
    ]
}

fn apply(edit: &Edit, data: &mut Vec<u8>) {
    match edit {
        Edit::Flip { at, bit } => {
            let at = at % data.len();
            data[at] ^= 1 << bit;
        }
        Edit::Cut { to } => data.truncate(to % data.len()),
        Edit::Append(more) => data.extend_from_slice(more),
        Edit::Replace(bytes) => *data = bytes.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn an_edited_block_is_found_or_changes_nothing(which in 0..3usize, edit in edit()) {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["log.db", "host-id"] {
            std::fs::copy(template().join(name), dir.path().join(name)).expect("copy");
        }
        let conn = common::db(dir.path());
        let blocks: Vec<(i64, Vec<u8>)> = conn
            .prepare("SELECT first_seq, data FROM blocks ORDER BY first_seq")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .expect("blocks");
        let (first, original) = &blocks[which % blocks.len()];
        let mut data = original.clone();
        apply(&edit, &mut data);
        conn.execute(
            "UPDATE blocks SET data = ?1 WHERE first_seq = ?2",
            rusqlite::params![data, first],
        )
        .expect("update");

        let store = Store::open_read_only(dir.path()).expect("open");
        let verdict = verify(&store, None).expect("verify runs");
        let unchanged = block::decode(&data).ok() == block::decode(original).ok();
        match verdict {
            Verdict::Intact(_) => prop_assert!(unchanged, "{edit:?} was not found"),
            Verdict::Tampered(f) => {
                prop_assert!(!unchanged, "{edit:?} changed nothing, yet: {f:?}");
                let last = u64::try_from(*first).expect("seq")
                    + block::decode(original).expect("original").len() as u64;
                match f.position {
                    Position::Seq(seq) => prop_assert!(seq <= last, "{edit:?}: {f:?}"),
                    Position::Batch(_) => {}
                }
            }
        }
        // A query answers or stops with an error; it never panics.
        let _ = store.query(&Filter::default(), |_| Ok(true));
    }
}
