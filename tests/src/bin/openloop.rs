//! Benchmark load: `openloop COUNT PATH [RATE [PER_PROCESS]]` opens and closes PATH COUNT
//! times, as fast as it can or at RATE opens per second (0: as fast as it can), and prints the
//! elapsed nanoseconds. When PATH is a directory, the opens go round the files in it (by
//! name), one file after the other. With PER_PROCESS, each run of that many opens is made by a
//! new child process (forked, one at a time), so the events come from many pids.

use std::{
    ffi::CString,
    time::{Duration, Instant},
};

use rustix::fs::{open, Mode, OFlags};

fn main() {
    let usage = "usage: openloop COUNT PATH [RATE [PER_PROCESS]]";
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
    let rate: Option<u64> = args
        .next()
        .map(|r| r.parse().expect(usage))
        .filter(|&r| r > 0);
    let per_process: Option<u64> = args.next().map(|n| n.parse().expect(usage));
    let start = Instant::now();
    match per_process.filter(|&n| n > 0) {
        None => open_range(0..count, &paths, rate, start),
        Some(n) => {
            for first in (0..count).step_by(n as usize) {
                let range = first..count.min(first + n);
                // SAFETY: this process has one thread, so the child may run any code.
                match unsafe { libc::fork() } {
                    0 => {
                        open_range(range, &paths, rate, start);
                        // SAFETY: `_exit` ends the child without running the parent's
                        // exit handlers twice.
                        unsafe { libc::_exit(0) };
                    }
                    -1 => panic!("fork: {}", std::io::Error::last_os_error()),
                    child => {
                        let mut status = 0;
                        // SAFETY: `status` is a valid place for the child's status.
                        let waited = unsafe { libc::waitpid(child, &mut status, 0) };
                        assert!(waited == child && status == 0, "child {child}: {status}");
                    }
                }
            }
        }
    }
    println!("{}", start.elapsed().as_nanos());
}

/// Opens the `range` of the loop's opens, paced from `start` at `rate` per second.
fn open_range(range: std::ops::Range<u64>, paths: &[CString], rate: Option<u64>, start: Instant) {
    for i in range {
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
}
