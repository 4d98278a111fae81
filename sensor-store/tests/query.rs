//! `Store::query` through the postings index gives exactly what a full scan with
//! `Filter::matches` gives, for every filter dimension and combinations of them.

mod common;

use sensor_log::{Record, Timestamp};
use sensor_store::{Filter, LogWriter, Store};

/// 300 events in batches of 16 with wall times 1000 ns apart, pids and paths varying.
fn written() -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = LogWriter::open(dir.path(), common::options(16)).expect("open");
    let base = Timestamp::now().wall_ns;
    for i in 0..300u64 {
        let mut e = common::event(i);
        if let Some(f) = e.file.as_mut() {
            if i % 11 == 0 {
                f.path = format!("/home/u{}/.aws/credentials", i % 3);
            }
        }
        let at = base + i * 1000;
        w.append(e, at, i).expect("append");
        w.seal_due(Timestamp {
            wall_ns: at,
            mono_ns: i,
        })
        .expect("seal");
    }
    w.close(Timestamp::now()).expect("close");
    (dir, base)
}

fn seqs(store: &Store, filter: &Filter) -> Vec<u64> {
    let mut out = Vec::new();
    store
        .query(filter, |r| {
            out.push(r.header.seq);
            Ok(true)
        })
        .expect("query");
    out
}

fn scan(store: &Store, filter: &Filter) -> Vec<u64> {
    let mut all: Vec<Record> = Vec::new();
    store
        .query(&Filter::default(), |r| {
            all.push(r);
            Ok(true)
        })
        .expect("scan");
    all.iter()
        .filter(|r| filter.matches(r))
        .map(|r| r.header.seq)
        .collect()
}

#[test]
fn indexed_queries_equal_a_full_scan() {
    let (dir, base) = written();
    let store = Store::open_read_only(dir.path()).expect("store");
    let all = seqs(&store, &Filter::default());
    assert_eq!(all, (1..=all.len() as u64).collect::<Vec<_>>());
    assert!(all.len() >= 301);
    let s = |v: &str| Some(v.to_string());
    let filters = [
        Filter {
            path_prefix: s("/home/"),
            ..Filter::default()
        },
        Filter {
            path_prefix: s("/home/u1/"),
            since_ns: Some(base + 50_000),
            until_ns: Some(base + 250_000),
            ..Filter::default()
        },
        Filter {
            path_prefix: s("/etc/shadow"),
            pid: Some(1003),
            ..Filter::default()
        },
        Filter {
            path_prefix: s(""),
            ..Filter::default()
        },
        Filter {
            path_prefix: s("/nowhere"),
            ..Filter::default()
        },
        Filter {
            kinds: vec!["ptrace".to_string(), "epoch_start".to_string()],
            ..Filter::default()
        },
        Filter {
            exe: s("/usr/bin/cat"),
            user: s("alice"),
            ..Filter::default()
        },
        Filter {
            unit: s("backup.service"),
            human: Some(false),
            after_seq: Some(150),
            ..Filter::default()
        },
        Filter {
            human: Some(true),
            until_ns: Some(base + 100_000),
            ..Filter::default()
        },
        Filter {
            container: s("none"),
            ..Filter::default()
        },
        Filter {
            since_ns: Some(base + 123_000),
            until_ns: Some(base + 124_000),
            ..Filter::default()
        },
        Filter {
            after_seq: Some(290),
            ..Filter::default()
        },
        Filter {
            since_ns: Some(u64::MAX / 2),
            ..Filter::default()
        },
    ];
    for filter in &filters {
        let mut expected = scan(&store, filter);
        assert_eq!(seqs(&store, filter), expected, "{filter:?}");
        let mut newest_first = Vec::new();
        store
            .query_newest_first(filter, |r| {
                newest_first.push(r.header.seq);
                Ok(true)
            })
            .expect("query newest first");
        expected.reverse();
        assert_eq!(newest_first, expected, "newest first: {filter:?}");
    }
    assert_eq!(
        seqs(
            &store,
            &Filter {
                since_ns: Some(base + 123_000),
                until_ns: Some(base + 124_000),
                ..Filter::default()
            }
        )
        .len(),
        2
    );
}

#[test]
fn queries_stop_when_the_visitor_says_so() {
    let (dir, _) = written();
    let store = Store::open_read_only(dir.path()).expect("store");
    for filter in [
        Filter::default(),
        Filter {
            path_prefix: Some("/".to_string()),
            ..Filter::default()
        },
    ] {
        let mut n = 0;
        store
            .query(&filter, |_| {
                n += 1;
                Ok(n < 3)
            })
            .expect("query");
        assert_eq!(n, 3);
    }
}

/// The first page of an answer comes from the batches the query reaches first, before it
/// reads the index of the rest: a query that stops after a page never reads the postings of
/// the far end of the log. Here the far end's postings are damaged (text, not a blob), which a query that
/// reads them stops at with an error, so reading them would show.
#[test]
fn the_first_page_comes_before_the_rest_of_the_index_is_read() {
    let broad = Filter {
        path_prefix: Some("/".to_string()),
        ..Filter::default()
    };
    let page = |store: &Store, newest_first: bool| {
        let mut n = 0;
        let visit = |_| {
            n += 1;
            Ok(n < 5)
        };
        let result = if newest_first {
            store.query_newest_first(&broad, visit)
        } else {
            store.query(&broad, visit)
        };
        result.map(|()| n)
    };
    for newest_first in [false, true] {
        let (dir, _) = written();
        let conn = common::db(dir.path());
        // Batch 1 holds only the EpochStart, which no path term indexes: the far end of
        // the newest-first answer is batch 2.
        let far_end = if newest_first {
            "(SELECT MIN(batch) + 1 FROM postings)"
        } else {
            "(SELECT MAX(batch) FROM postings)"
        };
        conn.execute(
            &format!("UPDATE postings SET offsets = 'damaged' WHERE batch = {far_end}"),
            [],
        )
        .expect("damage");
        let store = Store::open_read_only(dir.path()).expect("store");
        assert_eq!(
            page(&store, newest_first).expect("a page away from the damage"),
            5,
            "newest first: {newest_first}"
        );
        // The whole answer reaches the damage and says so.
        let whole = store.query(&broad, |_| Ok(true));
        let err = whole.expect_err("the damaged postings are reached");
        assert!(err.to_string().contains("are damaged"), "{err}");
    }
}

#[test]
fn pruned_batches_leave_no_postings_behind() {
    let (dir, _) = written();
    let mut w = LogWriter::open(dir.path(), common::options(16)).expect("reopen");
    let pruned = w
        .prune(Some(40_000), None, None, Timestamp::now())
        .expect("prune")
        .expect("pruned");
    w.close(Timestamp::now()).expect("close");
    let store = Store::open_read_only(dir.path()).expect("store");
    let filter = Filter {
        path_prefix: Some("/".to_string()),
        ..Filter::default()
    };
    let found = seqs(&store, &filter);
    assert!(found.iter().all(|&s| s > pruned.up_to_seq));
    assert_eq!(found, scan(&store, &filter));
    let conn = rusqlite::Connection::open(dir.path().join("log.db")).expect("db");
    let stale: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM postings WHERE batch NOT IN (SELECT number FROM batches)",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(stale, 0);
}
