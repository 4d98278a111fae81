//! `sensorctl events`: filtered listing, `--json` lines, `--follow`.
//!
//! Everything shown is decoded from the signed record bytes; the store's index columns only
//! narrow the search (see `docs/sensorctl.md`). The filters and how a record is shown are
//! `sensor_view::events`, shared with `sensor-collector events`.

use std::path::Path;
use std::time::Duration;

use sensor_log::Record;
use sensor_view::events::{to_json, FilterArgs};

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filters: FilterArgs,
    /// One JSON object per line: the event plus `seq`.
    #[arg(long)]
    json: bool,
    /// Keep printing new records as the agent seals them.
    #[arg(long)]
    follow: bool,
    /// Show only the last N matching records.
    #[arg(long)]
    limit: Option<usize>,
}

pub fn run(state_dir: &Path, args: &Args) -> Result<(), Failure> {
    let selection = args.filters.selection()?;
    let mut filter = selection.filter.clone();
    let store = super::open(state_dir)?;
    let mut shown = Vec::new();
    match args.limit {
        // The last N: read from the newest end and stop at N.
        Some(limit) => {
            store.query_newest_first(&filter, |r| {
                if shown.len() < limit && selection.path_matches(&r) {
                    shown.push(r);
                }
                Ok(shown.len() < limit)
            })?;
            shown.reverse();
        }
        None => store.query(&filter, |r| {
            if selection.path_matches(&r) {
                shown.push(r);
            }
            Ok(true)
        })?,
    }
    filter.after_seq = shown.last().map(|r| r.header.seq).or(filter.after_seq);
    print(&shown, args.json);
    if !args.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let mut fresh = Vec::new();
        store.query(&filter, |r| {
            if selection.path_matches(&r) {
                fresh.push(r);
            }
            Ok(true)
        })?;
        if let Some(r) = fresh.last() {
            filter.after_seq = Some(r.header.seq);
        }
        print(&fresh, args.json);
    }
}

fn print(records: &[Record], json: bool) {
    if json {
        for r in records {
            outln!("{}", to_json(r));
        }
    } else if !records.is_empty() {
        let rows: Vec<Vec<String>> = records.iter().map(sensor_view::events::row).collect();
        super::print_table(&sensor_view::events::COLUMNS, &rows);
    }
}
