//! Writing to stdout and stderr without `println!`'s panic on a closed pipe.

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
        error_line(format_args!("sensorctl: writing output: {e}"));
        std::process::exit(1);
    }
}

/// Writes one line to stderr; a closed stderr is ignored (the exit status still tells).
pub fn error_line(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}

/// `println!` through [`line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

/// `eprintln!` through [`error_line`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::error_line(format_args!($($arg)*))
    };
}
