//! Loss stage: turns the kernel's per-CPU counts of failed ring-buffer reservations, its
//! per-identity counts of events over budget, its counts of calls kprobe mode's kretprobes
//! missed, and the agent's own rejected records, into `loss` events in the stream.

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use aya::maps::{HashMap, MapData, PerCpuArray};
use sensor_common::{EventKind, IDENTITY_CGROUP, IDENTITY_OTHER};
use sensor_log::{Event, Timestamp};
use tokio::sync::mpsc;

use super::{fault, Batch, Counters};
use crate::Error;

/// Per kind index: the kernel's loss counts of one source.
type KindCounts = [u64; EventKind::COUNT as usize];

pub struct LossStage {
    lost: PerCpuArray<MapData, u64>,
    budget_lost: HashMap<MapData, u64, KindCounts>,
    /// Calls whose return kprobe mode's kretprobes missed (`sensor-ebpf/src/inflight.rs`).
    kprobe_missed: PerCpuArray<MapData, u64>,
    counters: Arc<Counters>,
    /// Totals already reported, per kind index.
    reported: KindCounts,
    kprobe_missed_reported: KindCounts,
    /// The same, per identity over budget.
    budget_reported: std::collections::HashMap<u64, KindCounts>,
    decode_errors_reported: u64,
    chain_errors_reported: u64,
    period: Duration,
}

impl LossStage {
    /// Makes the `IDENTITY_OTHER` entry of `budget_lost`, where the kernel counts the losses
    /// of identities a full map has no room for.
    pub fn new(
        lost: PerCpuArray<MapData, u64>,
        mut budget_lost: HashMap<MapData, u64, KindCounts>,
        kprobe_missed: PerCpuArray<MapData, u64>,
        counters: Arc<Counters>,
        period: Duration,
    ) -> Result<Self, Error> {
        budget_lost
            .insert(IDENTITY_OTHER, [0; EventKind::COUNT as usize], 0)
            .map_err(|e| Error::Map {
                map: sensor_common::BUDGET_LOST,
                reason: e.to_string(),
            })?;
        Ok(LossStage {
            lost,
            budget_lost,
            kprobe_missed,
            counters,
            reported: [0; EventKind::COUNT as usize],
            kprobe_missed_reported: [0; EventKind::COUNT as usize],
            budget_reported: std::collections::HashMap::new(),
            decode_errors_reported: 0,
            chain_errors_reported: 0,
            period,
        })
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
        for (source, map, name, reported) in [
            (
                "kernel_ringbuf",
                &self.lost,
                sensor_common::LOST_EVENTS,
                &mut self.reported,
            ),
            (
                "kprobe_missed",
                &self.kprobe_missed,
                sensor_common::KPROBE_MISSED,
                &mut self.kprobe_missed_reported,
            ),
        ] {
            let totals = per_kind_totals(map, name)?;
            let counts = new_counts(&totals, reported);
            events.extend(loss_event(&self.counters, source, counts));
        }
        let budgets: Vec<(u64, KindCounts)> = self
            .budget_lost
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Map {
                map: sensor_common::BUDGET_LOST,
                reason: e.to_string(),
            })?;
        for (identity, mut totals) in budgets {
            // As in the fold stage: a second reading bounds one torn by concurrent adds.
            if let Ok(again) = self.budget_lost.get(&identity, 0) {
                for (total, again) in totals.iter_mut().zip(again) {
                    *total = (*total).min(again);
                }
            }
            let reported = self
                .budget_reported
                .entry(identity)
                .or_insert([0; EventKind::COUNT as usize]);
            let counts = new_counts(&totals, reported);
            events.extend(loss_event(&self.counters, &budget_source(identity), counts));
        }
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

/// A per-CPU array of counts indexed by kind, summed over the CPUs.
fn per_kind_totals(
    map: &PerCpuArray<MapData, u64>,
    name: &'static str,
) -> Result<KindCounts, Error> {
    let mut totals = [0; EventKind::COUNT as usize];
    for &kind in EventKind::ALL {
        let per_cpu = map.get(&(kind as u32), 0).map_err(|e| Error::Map {
            map: name,
            reason: e.to_string(),
        })?;
        totals[kind as usize] = per_cpu.iter().sum();
    }
    Ok(totals)
}

/// The growth of each kind's total since `reported`, by kind name; `reported` catches up.
/// The kernel's counts only grow (atomic adds, never reset), so a difference is new loss.
fn new_counts(totals: &KindCounts, reported: &mut KindCounts) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for &kind in EventKind::ALL {
        let i = kind as usize;
        if totals[i] > reported[i] {
            counts.insert(kind.name().to_string(), totals[i] - reported[i]);
            reported[i] = totals[i];
        }
    }
    counts
}

/// The loss source of an identity over budget: `budget:uid=1000`, `budget:cgroup=4242`, or
/// `budget:other` for identities the kernel's map had no room for.
fn budget_source(identity: u64) -> String {
    if identity == IDENTITY_OTHER {
        "budget:other".to_owned()
    } else if identity & IDENTITY_CGROUP != 0 {
        format!("budget:cgroup={}", identity & !IDENTITY_CGROUP)
    } else {
        format!("budget:uid={identity}")
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

#[cfg(test)]
mod tests {
    use sensor_common::identity;

    use super::*;

    #[test]
    fn budget_sources_name_the_identity() {
        assert_eq!(budget_source(identity(1000, 77)), "budget:uid=1000");
        assert_eq!(budget_source(identity(0, 4242)), "budget:cgroup=4242");
        assert_eq!(budget_source(IDENTITY_OTHER), "budget:other");
    }

    /// Only growth is reported, once; a total that did not grow says nothing.
    #[test]
    fn counts_are_the_growth_since_the_last_report() {
        let mut reported = [0; EventKind::COUNT as usize];
        let mut totals = reported;
        totals[EventKind::FileOpen as usize] = 5;
        totals[EventKind::Exec as usize] = 2;
        let counts = new_counts(&totals, &mut reported);
        assert_eq!(
            counts,
            BTreeMap::from([("exec".to_owned(), 2), ("file_open".to_owned(), 5)])
        );
        assert!(new_counts(&totals, &mut reported).is_empty());
        totals[EventKind::FileOpen as usize] = 7;
        assert_eq!(
            new_counts(&totals, &mut reported),
            BTreeMap::from([("file_open".to_owned(), 2)])
        );
    }
}
