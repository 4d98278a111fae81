//! Benchmark load: `openloop COUNT PATH` opens and closes PATH COUNT times as fast as it can
//! and prints the elapsed nanoseconds.

use std::{ffi::CString, time::Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args
        .next()
        .and_then(|c| c.parse().ok())
        .expect("usage: openloop COUNT PATH");
    let path = CString::new(args.next().expect("usage: openloop COUNT PATH")).expect("no NUL");
    let start = Instant::now();
    for _ in 0..count {
        // SAFETY: a valid C string; the descriptor is closed at once.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::close(fd);
            }
        }
    }
    println!("{}", start.elapsed().as_nanos());
}
