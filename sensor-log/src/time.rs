//! Clock readings. Records carry both clocks: wall time for people and queries, the monotonic
//! clock (the one `bpf_ktime_get_ns` uses) for ordering and batch deadlines that must not jump.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    /// Nanoseconds since the Unix epoch.
    pub wall_ns: u64,
    /// CLOCK_MONOTONIC nanoseconds.
    pub mono_ns: u64,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp {
            wall_ns: wall_now_ns(),
            mono_ns: mono_now_ns(),
        }
    }
}

pub fn wall_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub fn mono_now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// RFC 3339 UTC with nanoseconds, the form `Event::time` uses.
pub fn rfc3339(wall_ns: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(wall_ns)).to_string()
}

/// Saturating conversion for durations given as options.
pub fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
