//! One module per subcommand.

pub mod events;
pub mod export;
pub mod identities;
pub mod key;
pub mod status;
pub mod verify;

use std::path::Path;

use sensor_store::Store;

use crate::Failure;

/// Opens the store read-only; a missing directory or log is a usage error naming the dir.
pub fn open(state_dir: &Path) -> Result<Store, Failure> {
    if !state_dir.is_dir() {
        return Err(Failure::Usage(format!(
            "state directory {} does not exist: the agent has not run there (use --state-dir)",
            state_dir.display()
        )));
    }
    Ok(Store::open_read_only(state_dir)?)
}

/// Wall-clock nanoseconds as RFC 3339 UTC with seconds precision, for tables.
pub fn short_time(wall_ns: u64) -> String {
    let secs = std::time::UNIX_EPOCH + std::time::Duration::from_secs(wall_ns / 1_000_000_000);
    humantime::format_rfc3339_seconds(secs).to_string()
}

/// Prints rows with each column padded to its widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.to_string()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        outln!("{}", text.join("  "));
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
