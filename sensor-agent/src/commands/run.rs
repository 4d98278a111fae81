//! `sensor-agent run`: load the probes and run the pipeline until SIGINT or SIGTERM.

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use aya::maps::{PerCpuArray, RingBuf};
use sensor_common::{EVENTS, LOST_EVENTS};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};

use crate::{
    config::Config,
    pipeline::{
        enrich::Enricher,
        loss::LossStage,
        output::{OutputFormat, OutputStage},
        read::ReadStage,
        Counters, CHANNEL_BATCHES,
    },
    probes::{sync::MapSync, LoadOptions, Probes},
    watch::{WatchSet, Watcher},
    Error,
};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// TOML file that adds to or removes from the embedded defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the agent keeps its state (default from the config: /var/lib/sensor-agent).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where events go besides the log.
    #[arg(long, value_enum, default_value = "none")]
    pub output: OutputFormat,
}

/// How often kernel loss counters are turned into `loss` events.
const LOSS_PERIOD: Duration = Duration::from_secs(1);
/// How often the agent logs its counters.
const STATS_PERIOD: Duration = Duration::from_secs(30);

pub fn run(args: RunArgs) -> Result<(), Error> {
    let config = Config::load(args.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_pipeline(config, args))
}

async fn run_pipeline(config: Config, args: RunArgs) -> Result<(), Error> {
    let mut probes = Probes::load(&LoadOptions {
        ring_buffer_bytes: config.agent.ring_buffer_bytes,
        proc_files: config.proc_files_mask(),
        kernel_log_level: 0,
    })?;
    for s in &probes.status {
        match &s.note {
            None => {
                tracing::info!(probe = s.probe, mode = s.mode, hook = %s.hook, reports = s.reports, "probe attached")
            }
            Some(note) => {
                tracing::warn!(probe = s.probe, mode = s.mode, hook = %s.hook, reports = s.reports, %note, "probe not attached: this route is not reported")
            }
        }
    }

    let watch_sets = Watcher::spawn(config.rules()).map_err(|e| Error::Watch(e.to_string()))?;
    let mut sync = MapSync::take(&mut probes.ebpf)?;
    let first = watch_sets.borrow().clone();
    sync.apply(None, &first)?;
    tracing::info!(
        inodes = first.inodes().len(),
        dirs = first.dirs().len(),
        names = first.names().len(),
        "watched set loaded into the kernel"
    );
    tokio::spawn(keep_maps_in_sync(sync, first, watch_sets.clone()));

    let counters = Arc::new(Counters::default());
    let take = |ebpf: &mut aya::Ebpf, name: &'static str| {
        ebpf.take_map(name).ok_or(Error::MissingMap(name))
    };
    let ring = RingBuf::try_from(take(&mut probes.ebpf, EVENTS)?).map_err(|e| Error::Map {
        map: EVENTS,
        reason: e.to_string(),
    })?;
    let lost =
        PerCpuArray::try_from(take(&mut probes.ebpf, LOST_EVENTS)?).map_err(|e| Error::Map {
            map: LOST_EVENTS,
            reason: e.to_string(),
        })?;

    let (decoded_tx, mut decoded_rx) = mpsc::channel(CHANNEL_BATCHES);
    let (events_tx, events_rx) = mpsc::channel(CHANNEL_BATCHES);
    let (stop_tx, stop_rx) = watch::channel(false);

    let read =
        tokio::spawn(ReadStage::new(ring, counters.clone())?.run(decoded_tx, stop_rx.clone()));
    let loss = tokio::spawn(
        LossStage::new(lost, counters.clone(), LOSS_PERIOD).run(events_tx.clone(), stop_rx),
    );
    let mut enricher = Enricher::new(&config, watch_sets);
    let enrich_counters = counters.clone();
    let enrich = tokio::task::spawn_blocking(move || {
        while let Some(batch) = decoded_rx.blocking_recv() {
            let events: Vec<_> = batch.iter().filter_map(|d| enricher.enrich(d)).collect();
            enrich_counters
                .events_out
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            if !events.is_empty() && events_tx.blocking_send(events).is_err() {
                break;
            }
        }
    });
    let output = tokio::task::spawn_blocking(move || OutputStage::new(args.output).run(events_rx));
    tokio::spawn(log_stats(counters.clone()));

    tracing::info!(pid = std::process::id(), "sensor-agent ready");
    wait_for_stop().await?;
    tracing::info!("stopping");
    // Detach the programs first, so nothing new arrives; then the reader drains the ring
    // buffer and the loss stage makes a last poll before their channels close, and each
    // stage finishes what it holds.
    drop(probes);
    let _ = stop_tx.send(true);
    let _ = read.await;
    let _ = loss.await;
    let _ = enrich.await;
    let result = output
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
    tracing::info!(
        kernel_events = counters.kernel_events.load(Ordering::Relaxed),
        events_out = counters.events_out.load(Ordering::Relaxed),
        lost = counters.lost.load(Ordering::Relaxed),
        "stopped"
    );
    result
}

async fn keep_maps_in_sync(
    mut sync: MapSync,
    mut current: Arc<WatchSet>,
    mut sets: watch::Receiver<Arc<WatchSet>>,
) {
    while sets.changed().await.is_ok() {
        let next = sets.borrow_and_update().clone();
        match sync.apply(Some(&current), &next) {
            Ok(()) => {
                tracing::debug!(inodes = next.inodes().len(), "watched set updated");
                current = next;
            }
            Err(e) => tracing::error!("updating the kernel's watched set: {e}"),
        }
    }
}

async fn log_stats(counters: Arc<Counters>) {
    let mut tick = tokio::time::interval(STATS_PERIOD);
    tick.tick().await;
    loop {
        tick.tick().await;
        tracing::info!(
            kernel_events = counters.kernel_events.load(Ordering::Relaxed),
            events_out = counters.events_out.load(Ordering::Relaxed),
            lost = counters.lost.load(Ordering::Relaxed),
            "counters"
        );
    }
}

async fn wait_for_stop() -> Result<(), Error> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
