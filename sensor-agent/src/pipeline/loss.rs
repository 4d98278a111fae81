//! Loss stage: turns the kernel's per-CPU counts of failed ring-buffer reservations, and the
//! agent's own rejected records, into `loss` events in the stream.

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use aya::maps::{MapData, PerCpuArray};
use sensor_common::EventKind;
use sensor_log::{Event, Timestamp};
use tokio::sync::mpsc;

use super::{fault, Batch, Counters};
use crate::Error;

pub struct LossStage {
    lost: PerCpuArray<MapData, u64>,
    counters: Arc<Counters>,
    /// Totals already reported, per kind index.
    reported: [u64; EventKind::COUNT as usize],
    decode_errors_reported: u64,
    chain_errors_reported: u64,
    period: Duration,
}

impl LossStage {
    pub fn new(lost: PerCpuArray<MapData, u64>, counters: Arc<Counters>, period: Duration) -> Self {
        LossStage {
            lost,
            counters,
            reported: [0; EventKind::COUNT as usize],
            decode_errors_reported: 0,
            chain_errors_reported: 0,
            period,
        }
    }

    /// Polls until `out` closes (`Ok`, the consequence of the chain stage's end) or reading
    /// the counters fails (an error); a final poll runs when `stop` fires so nothing counted
    /// before shutdown goes unreported.
    pub async fn run(
        mut self,
        out: mpsc::Sender<Batch<Event>>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let mut tick = tokio::time::interval(self.period);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.changed() => true,
            };
            if fault::fails("loss") {
                return Err(fault::injected("loss"));
            }
            let events = self.poll()?;
            if !events.is_empty() && out.send(events).await.is_err() {
                return Ok(());
            }
            if stopping {
                return Ok(());
            }
        }
    }

    fn poll(&mut self) -> Result<Vec<Event>, Error> {
        let mut events = Vec::new();
        let mut counts = BTreeMap::new();
        for &kind in EventKind::ALL {
            let index = kind as u32;
            let per_cpu = self.lost.get(&index, 0).map_err(|e| Error::Map {
                map: sensor_common::LOST_EVENTS,
                reason: e.to_string(),
            })?;
            let total: u64 = per_cpu.iter().sum();
            let new = total.saturating_sub(self.reported[index as usize]);
            if new > 0 {
                counts.insert(kind.name().to_string(), new);
                self.reported[index as usize] = total;
            }
        }
        events.extend(loss_event(&self.counters, "kernel_ringbuf", counts));
        for (source, counter, reported) in [
            (
                "agent_decode",
                &self.counters.decode_errors,
                &mut self.decode_errors_reported,
            ),
            (
                "agent_chain",
                &self.counters.chain_errors,
                &mut self.chain_errors_reported,
            ),
        ] {
            let total = counter.load(Ordering::Relaxed);
            if total > *reported {
                let counts = BTreeMap::from([("events".to_string(), total - *reported)]);
                *reported = total;
                events.extend(loss_event(&self.counters, source, counts));
            }
        }
        Ok(events)
    }
}

fn loss_event(counters: &Counters, source: &str, counts: BTreeMap<String, u64>) -> Option<Event> {
    let total: u64 = counts.values().sum();
    if total == 0 {
        return None;
    }
    counters.count_loss(source, total);
    tracing::warn!(source, total, ?counts, "events lost");
    Some(Event::loss(source, counts, Timestamp::now().wall_ns))
}
