//! Tables: columns padded to their widest cell, and times at seconds precision.

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
        crate::line(format_args!("{}", text.join("  ")));
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
