//! `sensor-agent run`: load the probes and run the pipeline until SIGINT or SIGTERM, or until
//! a stage fails (then stop in order, record it, and exit non-zero).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use aya::maps::RingBuf;
use sensor_common::{BUDGET_LOST, EVENTS, FOLDS, KPROBE_MISSED, LOST_EVENTS};
use sensor_log::{Event, Timestamp};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, Signal, SignalKind},
    sync::{mpsc, watch},
};

use crate::{
    config::Config,
    pipeline::{
        anchor::{self, AnchorStage},
        chain::ChainStage,
        enrich::Enricher,
        fault,
        fold::FoldStage,
        forward::ForwardStage,
        loss::LossStage,
        metrics,
        output::{OutputFormat, OutputLink, OutputStage},
        read::ReadStage,
        status::StatusStage,
        supervise::{Outcome, Stage, Stages},
        Batch, Counters, CHANNEL_BATCHES,
    },
    probes::{preflight, sync::MapSync, take_map, LoadOptions, ModeChoice, Probes},
    watch::{Dropped, WatchSet, Watcher},
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
    /// How the probes attach: `auto` (the strongest hook the kernel loads, per probe), or
    /// `lsm`, `fentry`, `kprobe`, `tracepoint` to force one (overrides `[agent] probe_mode`).
    #[arg(long, value_name = "MODE")]
    pub probe_mode: Option<ModeChoice>,
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
    if let Some(listen) = config.agent.metrics_listen {
        metrics::install(listen);
    }
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
    // Forwarding's certificate must name this log's host: checked before any probe loads.
    let forward = config
        .forward
        .clone()
        .map(|f| ForwardStage::new(f, &state_dir, chain.host_id(), counters.clone()))
        .transpose()?;
    let mut probes = Probes::load(&LoadOptions {
        ring_buffer_bytes: config.agent.ring_buffer_bytes,
        proc_files: config.proc_files_mask(),
        budget_per_second: config.agent.budget_per_second,
        budget_burst: config.agent.budget_burst,
        fold_window: config.agent.fold_window,
        kernel_log_level: args.kernel_log as u8,
        mode: args.probe_mode.unwrap_or(config.agent.probe_mode),
    })?;
    for s in &probes.status {
        s.log();
    }
    if args.kernel_log != KernelLog::Off {
        tokio::spawn(forward_kernel_log(
            aya_log::EbpfLogger::init(&mut probes.ebpf).map_err(|e| Error::Load(e.to_string()))?,
        ));
    }

    let watch_sets = Watcher::spawn(config.rules()).map_err(|e| Error::Watch(e.to_string()))?;
    let mut sync = MapSync::take(&mut probes.ebpf)?;
    let first = watch_sets.borrow().clone();
    sync.apply(&first)?;
    tracing::info!(
        inodes = first.inodes().len(),
        dirs = first.dirs().len(),
        names = first.names().len(),
        "watched set loaded into the kernel"
    );
    let mut stop = StopSignals::new()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (decoded_tx, decoded_rx) = mpsc::channel(CHANNEL_BATCHES);
    let (events_tx, events_rx) = mpsc::channel(CHANNEL_BATCHES);
    let mut stages = Stages::default();
    stages.spawn(
        "watch",
        keep_maps_in_sync(
            sync,
            first,
            watch_sets.clone(),
            events_tx.clone(),
            stop_rx.clone(),
        ),
    );

    let ring: RingBuf<_> = take_map(&mut probes.ebpf, EVENTS)?;
    let lost = take_map(&mut probes.ebpf, LOST_EVENTS)?;
    let budget_lost = take_map(&mut probes.ebpf, BUDGET_LOST)?;
    let kprobe_missed = take_map(&mut probes.ebpf, KPROBE_MISSED)?;
    let folds = take_map(&mut probes.ebpf, FOLDS)?;

    stages.spawn(
        "fold",
        FoldStage::new(folds, counters.clone()).run(decoded_tx.clone(), stop_rx.clone()),
    );
    stages.spawn(
        "read",
        ReadStage::new(ring, counters.clone())?.run(decoded_tx, stop_rx.clone()),
    );
    stages.spawn(
        "loss",
        LossStage::new(
            lost,
            budget_lost,
            kprobe_missed,
            counters.clone(),
            LOSS_PERIOD,
        )?
        .run(events_tx.clone(), stop_rx.clone()),
    );
    let enricher = Enricher::new(&config, watch_sets);
    let (enrich_out, enrich_counters) = (events_tx.clone(), counters.clone());
    stages.spawn_blocking("enrich", move || {
        enricher.run(decoded_rx, enrich_out, enrich_counters);
        Ok(())
    });
    // The supervisor's own way into the log, to chain a stage's failure.
    let to_chain = events_tx;
    *counters.output.lock().unwrap_or_else(|p| p.into_inner()) = args.output.name().to_owned();
    let output_tx = match args.output {
        OutputFormat::Json => {
            let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
            let stage = OutputStage::new(args.output);
            stages.spawn_blocking(OUTPUT, move || stage.run(rx));
            Some(OutputLink::new(tx, counters.clone()))
        }
        OutputFormat::None => None,
    };
    let runtime = tokio::runtime::Handle::current();
    let (sealed_tx, sealed_rx) = mpsc::channel(anchor::QUEUE_BATCHES);
    let anchor_runtime = runtime.clone();
    stages.spawn_blocking("anchor", move || {
        anchor.run(anchor_runtime, sealed_rx);
        Ok(())
    });
    stages.spawn_blocking(CHAIN, move || {
        chain.run(runtime, events_rx, output_tx, Some(sealed_tx))
    });
    let status = StatusStage::new(
        state_dir,
        &probes.status,
        config.log.batch_interval,
        counters.clone(),
    );
    match forward {
        Some(forward) => stages.spawn(FORWARD, forward.run(stop_rx.clone())),
        None => tracing::info!("the log is not forwarded (no [forward] in the configuration)"),
    }
    stages.spawn("status", async move {
        status.run(stop_rx).await;
        Ok(())
    });
    tokio::spawn(log_stats(counters.clone()));

    fault::arm();
    tracing::info!(pid = std::process::id(), "sensor-agent ready");
    let failed = supervise(&mut stages, &mut stop, &counters).await;
    let mut result = match failed {
        None => {
            tracing::info!("stopping");
            Ok(())
        }
        Some((stage, reason)) => {
            tracing::error!(
                stage,
                "the {stage} stage ended unexpectedly ({reason}): stopping the agent"
            );
            record_failure(stage, &to_chain, &counters).await;
            Err(Error::Stage { stage, reason })
        }
    };
    // Detach the programs first, so nothing new arrives; then the reader drains the ring
    // buffer and the loss stage makes a last poll before their channels close, and each
    // stage finishes what it holds: the chain stage seals the last batch and marks a clean
    // stop, after which the anchor stage extends what is queued and ends.
    drop(probes);
    drop(to_chain);
    let _ = stop_tx.send(true);
    while let Some((stage, outcome)) = stages.next().await {
        let Outcome::Failed(reason) = outcome else {
            continue;
        };
        if stage == OUTPUT {
            output_stopped(&counters, &reason);
            continue;
        }
        tracing::error!(stage, "the {stage} stage failed while stopping: {reason}");
        if result.is_ok() {
            result = Err(Error::Stage { stage, reason });
        }
    }
    tracing::info!(
        kernel_events = counters.kernel_events.load(Ordering::Relaxed),
        events_out = counters.events_out.load(Ordering::Relaxed),
        lost = counters.total_lost(),
        folded = counters.folded.load(Ordering::Relaxed),
        "stopped"
    );
    result
}

const OUTPUT: Stage = "output";
const CHAIN: Stage = "chain";
const FORWARD: Stage = "forward";
/// How long a stage that returned on its own waits for the failure that caused it (its
/// neighbour's end closed its channel) to be reported, so the error names the cause.
const CAUSE_WAIT: Duration = Duration::from_millis(500);

/// Runs until SIGINT or SIGTERM (`None`), or until a stage other than the output ends: then
/// the stage and why, and the agent stops in order and exits non-zero; systemd restarts it
/// into a new epoch within seconds. No stage is restarted in place: the reader and the loss
/// stage own the ring buffer and the kernel's loss counters, which end with them; the chain
/// stage owns the log writer; an enrich or anchor panic is a bug that would recur and loop;
/// and a fresh process is the one state known to be whole. The output only copies events for
/// whoever reads stdout: its end is reported once, and the log goes on.
async fn supervise(
    stages: &mut Stages,
    stop: &mut StopSignals,
    counters: &Counters,
) -> Option<(Stage, String)> {
    let mut consequence = None;
    loop {
        tokio::select! {
            _ = stop.recv() => return consequence,
            Some((stage, outcome)) = stages.next() => match outcome {
                Outcome::Failed(reason) if stage == OUTPUT => output_stopped(counters, &reason),
                Outcome::Returned if stage == OUTPUT => output_stopped(counters, "it ended"),
                Outcome::Failed(reason) => return Some((stage, reason)),
                Outcome::Returned => {
                    consequence.get_or_insert((stage, "it ended on its own".to_owned()));
                }
            },
            _ = tokio::time::sleep(CAUSE_WAIT), if consequence.is_some() => return consequence,
        }
    }
}

/// Chains a `stage_<name>` loss event: what the stage would have handled from its failure
/// until the next epoch is missing, and its amount is unknown (no counts). The chain stage
/// cannot record its own end; the next epoch's start then says the previous one crashed.
async fn record_failure(stage: Stage, to_chain: &mpsc::Sender<Batch<Event>>, counters: &Counters) {
    if stage == CHAIN {
        tracing::error!("the log cannot record this: its chain stage is the one that ended");
        return;
    }
    let source = format!("stage_{stage}");
    counters.count_loss(&source, 0);
    let event = Event::loss(&source, BTreeMap::new(), Timestamp::now().wall_ns);
    if to_chain.send(vec![event]).await.is_err() {
        tracing::error!("the log cannot record this: the chain stage has ended too");
    }
}

/// The output ended (its reader closed stdout, or writing failed): said once, shown in
/// `status.json`, and the log goes on. Events it could not write are in the log, so they
/// are not counted as lost.
fn output_stopped(counters: &Counters, reason: &str) {
    tracing::warn!(
        "the output stopped ({reason}): events are no longer written to stdout; the log \
         goes on recording them"
    );
    *counters.output.lock().unwrap_or_else(|p| p.into_inner()) = format!("stopped: {reason}");
}

/// How soon map updates that failed are retried when no new set comes first.
const SYNC_RETRY: Duration = Duration::from_secs(1);

/// The watch stage: puts each watched set the refresh thread publishes into the kernel's
/// maps until `stop` fires, retrying failed updates, and chains a `watch_overflow` event
/// whenever a directory starts or stops overflowing (the first set's overflows included).
/// The refresh thread ending is a failure: new and replaced credential files would no longer
/// be watched.
async fn keep_maps_in_sync(
    mut sync: MapSync,
    first: Arc<WatchSet>,
    mut sets: watch::Receiver<Arc<WatchSet>>,
    to_chain: mpsc::Sender<Batch<Event>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut current = Arc::new(WatchSet::default());
    let mut next = first;
    let mut synced = true;
    loop {
        let overflows = overflow_events(&current, &next);
        if !overflows.is_empty() && to_chain.send(overflows).await.is_err() {
            // The chain stage ended: its own failure is what stops the agent.
            return Ok(());
        }
        let dropped = next.dropped();
        if dropped != current.dropped() && dropped != Dropped::default() {
            tracing::error!(
                inodes = dropped.inodes,
                dirs = dropped.dirs,
                names = dropped.names,
                "the watched set exceeds the kernel's maps: entries left out, user \
                 directories' first (docs/probes.md, \"The watched set's budget\")"
            );
        }
        current = next;
        tokio::select! {
            changed = sets.changed() => if changed.is_err() {
                return Err(Error::Watch("the watched-set refresh thread ended".into()));
            },
            _ = tokio::time::sleep(SYNC_RETRY), if !synced => {},
            _ = stop.changed() => return Ok(()),
        }
        next = sets.borrow_and_update().clone();
        synced = match sync.apply(&next) {
            Ok(()) => {
                tracing::debug!(inodes = next.inodes().len(), "watched set updated");
                true
            }
            Err(e) => {
                tracing::error!("updating the kernel's watched set: {e}");
                false
            }
        };
    }
}

/// `watch_overflow` events for the directories whose overflow started or ended from `old`
/// to `new`.
fn overflow_events(old: &WatchSet, new: &WatchSet) -> Vec<Event> {
    let wall_ns = Timestamp::now().wall_ns;
    new.overflow_changes(old)
        .into_iter()
        .map(|o| {
            if o.watched < o.files {
                tracing::warn!(
                    directory = o.directory,
                    rule = o.rule,
                    files = o.files,
                    watched = o.watched,
                    "a watched directory holds more files than are watched by inode; the \
                     others are watched by directory and name"
                );
            } else {
                tracing::info!(
                    directory = o.directory,
                    files = o.files,
                    "watch overflow ended"
                );
            }
            Event::watch_overflow(&o.directory, &o.rule, o.files, o.watched, wall_ns)
        })
        .collect()
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
            folded = counters.folded.load(Ordering::Relaxed),
            lost = counters.total_lost(),
            "counters"
        );
    }
}

/// SIGTERM (systemd) and SIGINT (a terminal), registered before the stages start, so that a
/// stop sent while they start, or right after the agent says it is ready, is not lost.
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    fn new() -> Result<StopSignals, Error> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}
