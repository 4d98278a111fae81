//! Tables: columns padded to their widest cell, and times at seconds precision.

/// Wall-clock nanoseconds as RFC 3339 UTC with seconds precision, for tables.
pub fn short_time(wall_ns: u64) -> String {
    let secs = std::time::UNIX_EPOCH + std::time::Duration::from_secs(wall_ns / 1_000_000_000);
    humantime::format_rfc3339_seconds(secs).to_string()
}

/// Prints rows with each column padded to its widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let widths = widths(header, rows);
    line(&widths, header);
    for row in rows {
        line(&widths, row);
    }
}

/// Each column's widest cell, the header's included.
fn widths(header: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

/// A table printed as its rows come, for listings that may be long: the first
/// [`StreamedTable::PAGE`] rows set the column widths and print, the rest print as they
/// arrive with those widths (a wider cell later shifts its own line only). A listing of a
/// million records then starts after one page instead of after reading them all.
pub struct StreamedTable<'h> {
    header: &'h [&'h str],
    widths: Option<Vec<usize>>,
    held: Vec<Vec<String>>,
}

impl<'h> StreamedTable<'h> {
    /// Rows that set the column widths.
    pub const PAGE: usize = 100;

    pub fn new(header: &'h [&'h str]) -> StreamedTable<'h> {
        StreamedTable {
            header,
            widths: None,
            held: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        match &self.widths {
            Some(widths) => line(widths, &row),
            None => {
                self.held.push(row);
                if self.held.len() >= Self::PAGE {
                    self.flush();
                }
            }
        }
    }

    /// Prints the rows held back (the header before the first row); prints nothing for a
    /// table that never had a row.
    pub fn flush(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let widths = self.widths.get_or_insert_with(|| {
            let widths = widths(self.header, &self.held);
            line(&widths, self.header);
            widths
        });
        for row in self.held.drain(..) {
            line(widths, &row);
        }
    }
}

/// One line of cells, each but the last padded to its column's width.
fn line(widths: &[usize], cells: &[impl AsRef<str>]) {
    let last = cells.len().saturating_sub(1);
    let text: Vec<String> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let c = c.as_ref();
            match widths.get(i) {
                Some(&w) if i < last => format!("{c:<w$}"),
                _ => c.to_string(),
            }
        })
        .collect();
    crate::line(format_args!("{}", text.join("  ")));
}
