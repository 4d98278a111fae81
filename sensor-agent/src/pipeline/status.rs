//! Status stage: publishes `status.json` in the state directory for `sensorctl status`.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use sensor_log::{time::rfc3339, Timestamp};
use sensor_store::{AgentStatus, Executable};
use tokio::sync::watch;

use super::Counters;
use crate::probes::ProbeStatus;

/// How often `status.json` is rewritten.
const PERIOD: Duration = Duration::from_secs(2);

pub struct StatusStage {
    state_dir: PathBuf,
    status: AgentStatus,
    counters: Arc<Counters>,
}

impl StatusStage {
    /// `batch_interval` goes into the file: `sensorctl status` judges liveness by how old the
    /// newest batch is in those units.
    pub fn new(
        state_dir: PathBuf,
        probes: &[ProbeStatus],
        batch_interval: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        let probe_modes: BTreeMap<String, String> = probes
            .iter()
            .map(|p| (p.probe.to_owned(), format!("{} ({})", p.mode, p.hook)))
            .collect();
        let started = rfc3339(Timestamp::now().wall_ns);
        let exe = Executable::of_process("self")
            .inspect_err(|e| tracing::warn!("status.json will not name the executable: {e}"))
            .ok();
        let status = AgentStatus {
            pid: std::process::id(),
            started,
            probe_modes,
            exe,
            batch_interval_ms: Some(u64::try_from(batch_interval.as_millis()).unwrap_or(u64::MAX)),
            ..AgentStatus::default()
        };
        StatusStage {
            state_dir,
            status,
            counters,
        }
    }

    /// Rewrites the file every [`PERIOD`], and once more when `stop` fires.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(PERIOD);
        loop {
            tokio::select! {
                _ = tick.tick() => self.write(),
                _ = stop.changed() => return self.write(),
            }
        }
    }

    fn write(&mut self) {
        self.status.updated = rfc3339(Timestamp::now().wall_ns);
        self.status.events = self
            .counters
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.status.losses = self
            .counters
            .losses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.status.output = self
            .counters
            .output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.status.output_missed = self.counters.output_missed.load(Ordering::Relaxed);
        self.status.anchor = Some(
            self.counters
                .anchor
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        );
        self.status.forward = self
            .counters
            .forward
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        super::metrics::export(&self.status);
        if let Err(e) = self.status.write(&self.state_dir) {
            tracing::warn!("writing status.json: {e}");
        }
    }
}
