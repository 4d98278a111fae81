//! Read stage: drains the kernel ring buffer and hands decoded batches downstream.
//!
//! When downstream is slower than the kernel, this stage waits on the bounded channel, the
//! ring buffer fills, and the kernel counts what it cannot reserve: loss is always counted
//! at one place (see [`super::loss`]), never dropped silently here.
//!
//! The kernel wakes this stage at most once per [`WAKEUP_NS`] unless a
//! [`sensor_common::WAKEUP_SHARE`]th of the ring buffer is waiting; the events it submits in between are picked up by a second look that long
//! after each wake.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use sensor_common::WAKEUP_NS;
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::{mpsc, watch},
    time::Instant,
};

/// When to look again after a wake: past the kernel's [`WAKEUP_NS`], with a margin for the
/// submits that read the clock just before that wake's.
const LOOK_AGAIN: Duration = Duration::from_nanos(WAKEUP_NS + 1_000_000);

use super::{decode, fault, Batch, Counters, BATCH_LEN};
use crate::Error;

pub struct ReadStage {
    ring: AsyncFd<RingBuf<MapData>>,
    counters: Arc<Counters>,
}

impl ReadStage {
    pub fn new(ring: RingBuf<MapData>, counters: Arc<Counters>) -> Result<ReadStage, Error> {
        // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns the RingBuf,
        // and always reports that same fd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| Error::Io(e.into()))?;
        Ok(ReadStage { ring, counters })
    }

    /// Runs until `stop` fires (after the programs were detached), then drains what is
    /// left in the ring buffer, so a clean stop loses nothing. Ends early only when polling
    /// fails (an error) or downstream has gone (`Ok`, the consequence of another stage's end).
    pub async fn run(
        mut self,
        out: mpsc::Sender<Batch<decode::Decoded>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        // Every submit between a wake and `WAKEUP_NS` after it was left unannounced, so
        // each wake, and each second look that found events, is followed by another look.
        let mut look_again: Option<Instant> = None;
        loop {
            let second_look = async move {
                match look_again {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ready = self.ring.readable_mut() => {
                    let mut guard = ready?;
                    if fault::fails("read") {
                        return Err(fault::injected("read"));
                    }
                    if drain(guard.get_inner_mut(), &self.counters, &out).await.is_none() {
                        return Ok(());
                    }
                    guard.clear_ready();
                    look_again = Some(Instant::now() + LOOK_AGAIN);
                }
                _ = second_look => {
                    let Some(found) = drain(self.ring.get_mut(), &self.counters, &out).await else {
                        return Ok(());
                    };
                    look_again = (found > 0).then(|| Instant::now() + LOOK_AGAIN);
                }
                _ = stop.changed() => {
                    drain(self.ring.get_mut(), &self.counters, &out).await;
                    return Ok(());
                }
            }
        }
    }
}

/// One ring-buffer record decoded, or counted as a decode error and logged.
fn accept(record: &[u8], counters: &Counters) -> Option<decode::Decoded> {
    decode::decode(record)
        .inspect_err(|e| {
            counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("rejected a kernel record: {e}");
        })
        .ok()
}

/// Reads until the ring buffer is empty: how many records it read, or `None` when
/// downstream has gone.
async fn drain(
    ring: &mut RingBuf<MapData>,
    counters: &Counters,
    out: &mpsc::Sender<Batch<decode::Decoded>>,
) -> Option<usize> {
    let mut read = 0;
    loop {
        let mut batch = Vec::with_capacity(BATCH_LEN);
        let before = read;
        while batch.len() < BATCH_LEN {
            let Some(item) = ring.next() else { break };
            read += 1;
            batch.extend(accept(&item, counters));
        }
        if read == before {
            return Some(read);
        }
        if batch.is_empty() {
            continue;
        }
        counters
            .kernel_events
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        out.send(batch).await.ok()?;
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use sensor_common::{EventKind, ExecEvent, ForkEvent};

    use super::*;

    /// A record cut one byte short of its kind's layout, or of a kind whose layout is longer
    /// than its bytes, is rejected and counted; the whole one decodes.
    #[test]
    fn short_and_wrong_kind_records_are_counted() {
        let counters = Counters::default();
        let mut fork = vec![0u8; size_of::<ForkEvent>()];
        fork[0] = EventKind::Fork as u8;
        assert!(accept(&fork[..fork.len() - 1], &counters).is_none());
        assert_eq!(counters.decode_errors.load(Ordering::Relaxed), 1);
        // A fork record labelled exec: too short for an exec.
        let mut exec = fork.clone();
        exec[0] = EventKind::Exec as u8;
        assert!(size_of::<ExecEvent>() > exec.len());
        assert!(accept(&exec, &counters).is_none());
        assert!(accept(&[0xff; 64], &counters).is_none());
        assert!(accept(&[], &counters).is_none());
        assert_eq!(counters.decode_errors.load(Ordering::Relaxed), 4);
        assert!(matches!(
            accept(&fork, &counters),
            Some(decode::Decoded::Fork(_))
        ));
        assert_eq!(counters.decode_errors.load(Ordering::Relaxed), 4);
    }
}
