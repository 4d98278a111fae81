//! Kernel event stamps (`CLOCK_BOOTTIME`) to wall-clock time.

use std::time::{Duration, SystemTime};

use rustix::time::{clock_gettime, ClockId};

/// Converts `CLOCK_BOOTTIME` event stamps to wall-clock time. The offset is re-measured
/// every second of event time so an NTP step is followed.
pub(super) struct Clock {
    offset_ns: i128,
    next_measure_ns: u64,
}

const CLOCK_REMEASURE_NS: u64 = 1_000_000_000;

fn clock_ns(id: ClockId) -> i128 {
    let ts = clock_gettime(id);
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    pub(super) fn new() -> Clock {
        Clock {
            offset_ns: Self::measure(),
            next_measure_ns: 0,
        }
    }

    fn measure() -> i128 {
        clock_ns(ClockId::Realtime) - clock_ns(ClockId::Boottime)
    }

    pub(super) fn rfc3339(&mut self, boot_ns: u64) -> String {
        if boot_ns >= self.next_measure_ns {
            self.offset_ns = Self::measure();
            self.next_measure_ns = boot_ns.saturating_add(CLOCK_REMEASURE_NS);
        }
        let unix_ns = (boot_ns as i128 + self.offset_ns).clamp(0, u64::MAX as i128) as u64;
        let time = SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_ns);
        humantime::format_rfc3339_nanos(time).to_string()
    }
}
