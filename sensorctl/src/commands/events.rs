//! `sensorctl events`: filtered listing, `--json` lines, `--follow`.
//!
//! Everything shown is decoded from the signed record bytes; the store's index columns only
//! narrow the search (see `docs/sensorctl.md`). The filters and how a record is shown are
//! `sensor_view::events`, shared with `sensor-collector events`.

use std::path::Path;
use std::time::Duration;

use sensor_log::Record;
use sensor_view::events::{to_json, FilterArgs};
use sensor_view::table::StreamedTable;

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
    let mut out = Printer::new(args.json);
    // Printed as the query finds them, never collected: the first page of a long answer
    // shows at once, and memory stays flat whatever the answer's size.
    let last_shown = std::cell::Cell::new(filter.after_seq);
    let show = |r: Record, out: &mut Printer| {
        if selection.path_matches(&r) {
            last_shown.set(Some(r.header.seq));
            out.show(&r);
        }
    };
    let shown = match args.limit {
        // The last N: read from the newest end and stop at N (at most N held, to print them
        // oldest first).
        Some(limit) => {
            let mut last = Vec::new();
            store.query_newest_first(&selection.filter, |r| {
                if last.len() < limit && selection.path_matches(&r) {
                    last.push(r);
                }
                Ok(last.len() < limit)
            })?;
            for r in last.into_iter().rev() {
                show(r, &mut out);
            }
            Ok(())
        }
        None => store.query(&selection.filter, |r| {
            show(r, &mut out);
            Ok(true)
        }),
    };
    out.flush();
    shown?;
    if !args.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(500));
        filter.after_seq = last_shown.get();
        let polled = store.query(&filter, |r| {
            show(r, &mut out);
            Ok(true)
        });
        out.flush();
        polled?;
    }
}

/// Where records go: JSON lines, or a table whose widths the first page sets.
enum Printer {
    Json,
    Table(StreamedTable<'static>),
}

impl Printer {
    fn new(json: bool) -> Printer {
        if json {
            Printer::Json
        } else {
            Printer::Table(StreamedTable::new(&sensor_view::events::COLUMNS))
        }
    }

    fn show(&mut self, r: &Record) {
        match self {
            Printer::Json => outln!("{}", to_json(r)),
            Printer::Table(table) => table.push(sensor_view::events::row(r)),
        }
    }

    fn flush(&mut self) {
        if let Printer::Table(table) = self {
            table.flush();
        }
    }
}
