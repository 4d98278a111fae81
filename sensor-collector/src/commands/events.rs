//! `sensor-collector events`: the verified events of the fleet, with the filters of
//! `sensorctl events` (`sensor_view::events`, one definition for both) plus `--host`, as a
//! table or one JSON object per line (the agent's schema plus `host`), and `--follow`.
//!
//! The store's index columns narrow the batch rows read (host, time range, kinds); the
//! records decoded from the stored signed bytes decide, by the same `Filter::matches` as
//! `sensorctl`.

use std::time::Duration;

use sensor_collector::store::BatchQuery;
use sensor_collector::Store;
use sensor_log::forward::BatchMessage;
use sensor_log::record::HostId;
use sensor_log::{hex, Record};
use sensor_view::events::{to_json, FilterArgs, Selection};
use sensor_view::table::StreamedTable;
use serde_json::json;

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filters: FilterArgs,
    /// Only this host (32 hex digits).
    #[arg(long)]
    host: Option<String>,
    /// One JSON object per line: the event plus `seq` and `host`.
    #[arg(long)]
    json: bool,
    /// Keep printing verified events as collectors store them.
    #[arg(long)]
    follow: bool,
}

/// How often `--follow` looks for batches stored since its last look.
const POLL: Duration = Duration::from_millis(250);

pub fn run(store: &mut dyn Store, args: &Args) -> Result<(), Failure> {
    let selection = args.filters.selection()?;
    let query = BatchQuery {
        host: args.host.as_deref().map(crate::host_id).transpose()?,
        since_ns: selection.filter.since_ns,
        until_ns: selection.filter.until_ns,
        kinds: selection.filter.kinds.clone(),
    };
    let mut cursor = show(store, &query, &selection, None, args.json)?;
    if !args.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(POLL);
        cursor = show(store, &query, &selection, Some(cursor), args.json)?;
    }
}

/// Prints the matching events of the batches stored after `after`; returns the next cursor.
fn show(
    store: &mut dyn Store,
    query: &BatchQuery,
    selection: &Selection,
    after: Option<u64>,
    json: bool,
) -> Result<u64, Failure> {
    let mut columns = vec!["HOST"];
    columns.extend(sensor_view::events::COLUMNS);
    // Printed as they come: a long answer shows its first page at once.
    let mut table = StreamedTable::new(&columns);
    let cursor = store.batches_after(query, after, &mut |host, batch| {
        for record in decoded(host, &batch) {
            if !selection.matches(&record) {
                continue;
            }
            if json {
                let mut value = to_json(&record);
                if let Some(map) = value.as_object_mut() {
                    map.insert("host".to_string(), json!(hex::encode(host)));
                }
                outln!("{value}");
            } else {
                let mut row = vec![hex::encode(host)];
                row.extend(sensor_view::events::row(&record));
                table.push(row);
            }
        }
        Ok(())
    });
    table.flush();
    Ok(cursor?)
}

/// The batch's records, decoded. One that does not decode (it verified, so it is held: a
/// kind this build does not know) is named on stderr, never shown as something else.
fn decoded(host: &HostId, batch: &BatchMessage) -> Vec<Record> {
    batch
        .records
        .iter()
        .filter_map(|bytes| match Record::decode(bytes) {
            Ok(record) => Some(record),
            Err(e) => {
                let seq = sensor_log::record::peek(bytes).map_or(0, |(h, _)| h.seq);
                errln!(
                    "sensor-collector: host {}: record {seq} is held and verified but does not decode here ({e}): not shown",
                    hex::encode(host)
                );
                None
            }
        })
        .collect()
}
