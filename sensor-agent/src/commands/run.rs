//! `sensor-agent run`: load the probes and run the pipeline until SIGINT or SIGTERM.

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use aya::maps::{PerCpuArray, RingBuf};
use sensor_common::{EVENTS, LOST_EVENTS};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};

use crate::{
    config::Config,
    pipeline::{
        anchor::{self, AnchorStage},
        chain::ChainStage,
        enrich::Enricher,
        loss::LossStage,
        output::{OutputFormat, OutputStage},
        read::ReadStage,
        status::StatusStage,
        Counters, CHANNEL_BATCHES,
    },
    probes::{preflight, sync::MapSync, LoadOptions, Probes},
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
    /// In-kernel diagnostics (aya-log), off by default to keep them off the hot path.
    #[arg(long, value_enum, default_value = "off")]
    pub kernel_log: KernelLog,
}

/// aya-log levels, as the kernel programs compare them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[repr(u8)]
pub enum KernelLog {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

/// How often kernel loss counters are turned into `loss` events.
const LOSS_PERIOD: Duration = Duration::from_secs(1);
/// How often the agent logs its counters.
const STATS_PERIOD: Duration = Duration::from_secs(30);

pub fn run(args: RunArgs) -> Result<(), Error> {
    let config = Config::load(args.config.as_deref())?;
    if std::env::var_os("TSS2_LOG").is_none() {
        // libtss2 prints its own errors to stderr (e.g. while probing for the AK on a first
        // start); ours carry the response code and layer. Set before any thread exists.
        std::env::set_var("TSS2_LOG", "all+none");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_pipeline(config, args))
}

async fn run_pipeline(config: Config, args: RunArgs) -> Result<(), Error> {
    preflight::check()?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| config.agent.state_dir.clone());
    let counters = Arc::new(Counters::default());
    // The log first: a state directory that cannot be written stops the agent before any
    // probe is attached, and the new epoch is recorded before the first event.
    let mut chain = ChainStage::open(&state_dir, &config.log, counters.clone())?;
    // Then the TPM: the anchor stage checks the log against it on its own thread (a large
    // log takes a while to read) and anchors the batches from then on.
    let (anchor, link) = AnchorStage::start(
        config.tpm.clone(),
        state_dir.clone(),
        chain.next_batch(),
        counters.clone(),
    );
    chain.attach_anchor(link);
    let mut probes = Probes::load(&LoadOptions {
        ring_buffer_bytes: config.agent.ring_buffer_bytes,
        proc_files: config.proc_files_mask(),
        kernel_log_level: args.kernel_log as u8,
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
    if args.kernel_log != KernelLog::Off {
        tokio::spawn(forward_kernel_log(
            aya_log::EbpfLogger::init(&mut probes.ebpf).map_err(|e| Error::Load(e.to_string()))?,
        ));
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
        LossStage::new(lost, counters.clone(), LOSS_PERIOD).run(events_tx.clone(), stop_rx.clone()),
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
    let (output_tx, output) = match args.output {
        OutputFormat::Json => {
            let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
            let stage = OutputStage::new(args.output);
            (
                Some(tx),
                Some(tokio::task::spawn_blocking(move || stage.run(rx))),
            )
        }
        OutputFormat::None => (None, None),
    };
    let runtime = tokio::runtime::Handle::current();
    let (sealed_tx, sealed_rx) = mpsc::channel(anchor::QUEUE_BATCHES);
    let anchor_runtime = runtime.clone();
    let anchor = tokio::task::spawn_blocking(move || anchor.run(anchor_runtime, sealed_rx));
    let chain = tokio::task::spawn_blocking(move || {
        chain.run(runtime, events_rx, output_tx, Some(sealed_tx))
    });
    let status =
        tokio::spawn(StatusStage::new(state_dir, &probes.status, counters.clone()).run(stop_rx));
    tokio::spawn(log_stats(counters.clone()));

    // Parsing the kernel's BTF (twice: offsets, then aya's relocations) and the first /proc
    // scan leave tens of MiB of freed heap; hand it back so the resident size is the
    // agent's working set, not its start-up peak.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    tracing::info!(pid = std::process::id(), "sensor-agent ready");
    wait_for_stop().await?;
    tracing::info!("stopping");
    // Detach the programs first, so nothing new arrives; then the reader drains the ring
    // buffer and the loss stage makes a last poll before their channels close, and each
    // stage finishes what it holds: the chain stage seals the last batch and marks a clean
    // stop.
    drop(probes);
    let _ = stop_tx.send(true);
    let _ = read.await;
    let _ = loss.await;
    let _ = enrich.await;
    let chained = chain
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
    // The chain stage dropped its sender after the last batch: the anchor stage extends what
    // is queued and ends.
    let _ = anchor.await;
    let written = match output {
        Some(output) => output
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?,
        None => Ok(()),
    };
    let _ = status.await;
    tracing::info!(
        kernel_events = counters.kernel_events.load(Ordering::Relaxed),
        events_out = counters.events_out.load(Ordering::Relaxed),
        lost = counters.total_lost(),
        "stopped"
    );
    chained.and(written)
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

/// Passes kernel diagnostics to the agent's log whenever the kernel writes some.
async fn forward_kernel_log(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer map fd for its whole life.
    let Ok(mut fd) = (unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) })
    else {
        tracing::warn!("cannot poll the kernel log");
        return;
    };
    while let Ok(mut guard) = fd.readable_mut().await {
        guard.get_inner_mut().flush();
        guard.clear_ready();
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
            lost = counters.total_lost(),
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
