//! Fold stage: reports the accesses the kernel folded (`sensor-ebpf/src/flood.rs`).
//!
//! The kernel only ever adds to an entry's `folded` total; this stage reads the totals every
//! [`FOLD_PERIOD`] and sends the growth since its previous reading as a repeat of the access
//! the entry describes, into the enrich stage beside the ring buffer's events. No write from
//! user space races the kernel's adds, so each folded access is reported exactly once. An
//! entry whose process has exited is read a last time, then removed.

use std::{
    collections::HashMap as StdHashMap,
    path::Path,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use aya::maps::{HashMap, MapData, MapError};
use sensor_common::{syscall::AT_FDCWD, FileEvent, FoldKey, FoldValue, REQUESTED_LEN};
use tokio::sync::{mpsc, watch};

use super::{decode::Decoded, fault, Batch, Counters, BATCH_LEN};
use crate::Error;

/// How often folded counts are read: a flood shows in the log this soon.
pub const FOLD_PERIOD: Duration = Duration::from_secs(1);

/// Accesses the kernel folded into an earlier one of the same process, file and access.
#[derive(Clone, Copy)]
pub struct Repeat {
    /// The access repeated, as the kernel recorded it when it last sent one (`requested` is
    /// empty: the path string may have differed between repeats). `header.boot_ns` is `last_ns`.
    pub file: FileEvent,
    pub count: u64,
    /// No access of `count` happened before `first_ns` or after `last_ns`
    /// (`bpf_ktime_get_boot_ns`).
    pub first_ns: u64,
    pub last_ns: u64,
}

/// What the stage last reported of one entry.
struct Reported {
    total: u64,
    /// The earliest time an access not yet reported can have happened.
    since_ns: u64,
}

pub struct FoldStage {
    folds: HashMap<MapData, FoldKey, FoldValue>,
    reported: StdHashMap<FoldKey, Reported>,
    counters: Arc<Counters>,
}

impl FoldStage {
    pub fn new(folds: HashMap<MapData, FoldKey, FoldValue>, counters: Arc<Counters>) -> Self {
        FoldStage {
            folds,
            reported: StdHashMap::new(),
            counters,
        }
    }

    /// Reads every period until `out` closes (the enrich stage ended), and a last time when
    /// `stop` fires (the programs are detached by then, so that reading is final).
    pub async fn run(
        mut self,
        out: mpsc::Sender<Batch<Decoded>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let mut tick = tokio::time::interval(FOLD_PERIOD);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.changed() => true,
            };
            if fault::fails("fold") {
                return Err(fault::injected("fold"));
            }
            for batch in self.sweep()?.chunks(BATCH_LEN) {
                if out.send(batch.to_vec()).await.is_err() {
                    return Ok(());
                }
            }
            if stopping {
                return Ok(());
            }
        }
    }

    /// One reading of the map: the repeats not reported yet.
    fn sweep(&mut self) -> Result<Vec<Decoded>, Error> {
        let map_err = |e: aya::maps::MapError| Error::Map {
            map: sensor_common::FOLDS,
            reason: e.to_string(),
        };
        let entries: Vec<(FoldKey, FoldValue)> = self
            .folds
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err)?;
        let mut repeats = Vec::new();
        let mut folded = 0;
        let mut gone = Vec::new();
        for (key, value) in entries {
            // A process seen gone adds nothing more: a reading taken after seeing it gone is
            // final, and no add can tear it.
            let exited = !Path::new("/proc").join(key.tgid.to_string()).exists();
            let value = if exited {
                self.folds.get(&key, 0).unwrap_or(value)
            } else {
                value
            };
            let state = self.reported.entry(key).or_insert(Reported {
                total: 0,
                since_ns: value.window_start,
            });
            let mut total = value.folded;
            if !exited && total > state.total {
                // The kernel copies the value out with memcpy while other CPUs add to it: a
                // second reading bounds a torn one, and the smaller can only hold back part
                // of the count until the next reading, never report an access twice.
                if let Ok(again) = self.folds.get(&key, 0) {
                    total = total.min(again.folded);
                }
            }
            if total > state.total {
                let count = total - state.total;
                folded += count;
                repeats.push(Decoded::Repeat(Repeat {
                    file: file_event(&key, &value),
                    count,
                    first_ns: state.since_ns,
                    last_ns: value.last_ns,
                }));
                state.total = total;
                state.since_ns = value.last_ns;
            }
            if exited {
                gone.push(key);
            }
        }
        for key in gone {
            // Its process is gone, so the kernel adds nothing more to this entry. What was
            // reported of it is forgotten only with the entry: an entry that stays would
            // otherwise be reported again from zero.
            match self.folds.remove(&key) {
                Ok(()) => {
                    self.reported.remove(&key);
                }
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    self.reported.remove(&key);
                }
                Err(e) => tracing::warn!("removing a fold entry of an exited process: {e}"),
            }
        }
        self.counters.folded.fetch_add(folded, Ordering::Relaxed);
        Ok(repeats)
    }
}

/// The access an entry describes, as the kernel would have sent it.
fn file_event(key: &FoldKey, value: &FoldValue) -> FileEvent {
    let mut header = value.header;
    header.kind = key.kind;
    header.boot_ns = value.last_ns;
    FileEvent {
        header,
        ret: 0,
        flags: value.flags,
        ino: key.ino,
        dev: key.dev,
        rule: value.rule,
        target_tgid: value.target_tgid,
        dfd: AT_FDCWD,
        syscall: key.syscall,
        matched: value.matched,
        requested_truncated: 0,
        compat: value.compat,
        overlay_dev: 0,
        name: value.name,
        requested: [0; REQUESTED_LEN],
    }
}
