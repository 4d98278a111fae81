//! Loss stage: turns the kernel's per-CPU counts of failed ring-buffer reservations, and the
//! agent's own rejected records, into `loss` events in the stream.

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, PerCpuArray};
use sensor_common::EventKind;
use sensor_log::{Event, Kind, Loss};
use tokio::sync::mpsc;

use super::{Batch, Counters};
use crate::Error;

pub struct LossStage {
    lost: PerCpuArray<MapData, u64>,
    counters: Arc<Counters>,
    /// Totals already reported, per kind index.
    reported: [u64; EventKind::COUNT as usize],
    decode_errors_reported: u64,
    period: Duration,
}

impl LossStage {
    pub fn new(lost: PerCpuArray<MapData, u64>, counters: Arc<Counters>, period: Duration) -> Self {
        LossStage {
            lost,
            counters,
            reported: [0; EventKind::COUNT as usize],
            decode_errors_reported: 0,
            period,
        }
    }

    /// Polls until `out` closes; a final poll runs when `stop` fires so nothing counted
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
        for kind in EventKind::ALL {
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
        if let Some(event) = loss_event("kernel_ringbuf", counts) {
            self.counters.lost.fetch_add(
                event.loss.as_ref().map_or(0, |l| l.total),
                Ordering::Relaxed,
            );
            events.push(event);
        }
        let decode_errors = self.counters.decode_errors.load(Ordering::Relaxed);
        let new = decode_errors - self.decode_errors_reported;
        if new > 0 {
            self.decode_errors_reported = decode_errors;
            let counts = BTreeMap::from([("undecodable".to_string(), new)]);
            events.extend(loss_event("agent_decode", counts));
        }
        Ok(events)
    }
}

fn loss_event(source: &str, counts: BTreeMap<String, u64>) -> Option<Event> {
    let total: u64 = counts.values().sum();
    if total == 0 {
        return None;
    }
    tracing::warn!(source, total, ?counts, "events lost");
    Some(Event {
        kind: Kind::Loss,
        time: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        ok: false,
        errno: None,
        process: None,
        identity: None,
        file: None,
        target: None,
        syscall: None,
        loss: Some(Loss {
            source: source.to_string(),
            counts,
            total,
        }),
    })
}
