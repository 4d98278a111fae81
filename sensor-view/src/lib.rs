//! What the command-line tools (`sensorctl`, `sensor-collector`) share to show the log:
//! writing to stdout and stderr without `println!`'s panic on a closed pipe, tables, and the
//! `events` filters and rendering of a record.

pub mod events;
pub mod table;

use std::fmt;
use std::io::{self, Write};

/// Exit status for a closed stdout: what a shell shows for a tool ended by SIGPIPE (128 + 13).
const CLOSED_PIPE_STATUS: i32 = 141;

/// Writes one line of command output. When the reader has gone (`sensorctl events | head -1`)
/// there is nobody left to tell: the process ends at once, quietly, with status 141 (never 0,
/// so `verify | true` cannot pass for a verified log). Other write errors end it with status 1.
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(CLOSED_PIPE_STATUS);
        }
        error_line(format_args!("{}: writing output: {e}", program()));
        std::process::exit(1);
    }
}

/// Writes one line to stderr; a closed stderr is ignored (the exit status still tells).
pub fn error_line(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}

/// The running program's name, for messages.
pub fn program() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .map_or_else(
            || "sensor".to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
}

/// `println!` through [`line`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::line(format_args!($($arg)*))
    };
}

/// `eprintln!` through [`error_line`].
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::error_line(format_args!($($arg)*))
    };
}
