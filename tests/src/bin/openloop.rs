//! Benchmark load: `openloop COUNT PATH [RATE]` opens and closes PATH COUNT times, as fast as
//! it can or at RATE opens per second, and prints the elapsed nanoseconds. When PATH is a
//! directory, the opens go round the files in it (by name), one file after the other.

use std::{
    ffi::CString,
    time::{Duration, Instant},
};

use rustix::fs::{open, Mode, OFlags};

fn main() {
    let usage = "usage: openloop COUNT PATH [RATE]";
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().and_then(|c| c.parse().ok()).expect(usage);
    let path = args.next().expect(usage);
    let paths: Vec<CString> = match std::fs::read_dir(&path) {
        Ok(entries) => {
            let mut names: Vec<_> = entries
                .map(|e| e.expect("directory entry").path())
                .filter(|p| p.is_file())
                .collect();
            names.sort();
            names
                .into_iter()
                .map(|p| CString::new(p.into_os_string().into_encoded_bytes()).expect("no NUL"))
                .collect()
        }
        Err(_) => vec![CString::new(path).expect("no NUL")],
    };
    assert!(!paths.is_empty(), "{usage}: no file to open");
    let rate: Option<u64> = args.next().map(|r| r.parse().expect(usage));
    let start = Instant::now();
    for i in 0..count {
        // Pace in steps of 1000 opens so the sleeps stay coarse.
        if let Some(rate) = rate.filter(|_| i % 1000 == 0) {
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        // The descriptor, if any, is closed at once.
        drop(open(
            paths[i as usize % paths.len()].as_c_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ));
    }
    println!("{}", start.elapsed().as_nanos());
}
