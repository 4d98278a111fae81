//! `sensorctl status`: whether the agent runs and records (checked against the process and
//! the log, not taken from `status.json`), what it last reported, and the store's head.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sensor_log::hex;
use sensor_store::{AgentStatus, Executable};

use crate::Failure;

/// A live agent seals a batch at least every `batch_interval` (a heartbeat when idle): the
/// log is stale, and the agent not recording, when its newest batch is older than this many
/// intervals, and at least `MIN_STALE`.
const STALE_INTERVALS: u32 = 5;
const MIN_STALE: Duration = Duration::from_secs(5);
/// The agent's default `batch_interval`, assumed when status.json does not say.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

pub fn run(state_dir: &Path) -> Result<(), Failure> {
    let store = super::open(state_dir)?;
    let last = store.last_batch()?;
    let now = SystemTime::now();
    match AgentStatus::read(state_dir)? {
        Some(status) => {
            let newest = last.as_ref().map(|b| at(b.header.wall_ns));
            let (running, judgement) = agent(&status, newest, now);
            outln!("agent:       {judgement}");
            outln!("started:     {}", status.started);
            let updated = humantime::parse_rfc3339_weak(&status.updated)
                .map(|t| format!(" ({})", ago(now, t)))
                .unwrap_or_default();
            outln!("updated:     {}{updated}", status.updated);
            // Everything below comes from status.json: the agent's last word, not a fact now.
            let reported = if running { "" } else { "(last reported) " };
            for (probe, mode) in &status.probe_modes {
                outln!("probe:       {reported}{probe} = {mode}");
            }
            outln!("events:      {reported}{}", counts(&status.events));
            outln!("losses:      {reported}{}", counts(&status.losses));
            if !status.output.is_empty() {
                outln!(
                    "output:      {reported}{}{}",
                    status.output,
                    match status.output_missed {
                        0 => String::new(),
                        n => format!(" ({n} events not copied: the reader was too slow; they are in the log)"),
                    }
                );
            }
            match &status.anchor {
                Some(a) if a.state == "anchored" => outln!(
                    "anchor:      {reported}anchored in the TPM ({}, PCR {}), last extended batch {}, last quote of batch {}, NV counter {}, {} gap{}, {} TPM commands",
                    a.detail,
                    a.pcr.map_or("?".into(), |p| p.to_string()),
                    opt(a.last_extended_batch),
                    opt(a.last_quoted_batch),
                    opt(a.nv_counter),
                    a.gaps,
                    if a.gaps == 1 { "" } else { "s" },
                    a.tpm_commands,
                ),
                Some(a) if a.state == "failing" => outln!(
                    "anchor:      {reported}FAILING since batch {}: {} (events are still logged; the gap is recorded)",
                    opt(a.last_extended_batch.map(|b| b + 1)),
                    a.detail
                ),
                Some(a) if a.state == "starting" => outln!(
                    "anchor:      {reported}starting: {} (the start check runs once the TPM answers)",
                    a.detail
                ),
                Some(a) => outln!("anchor:      {reported}the log is NOT anchored in a TPM: {}", a.detail),
                None => outln!("anchor:      unknown (the agent does not report it)"),
            }
            match &status.forward {
                None => outln!("forwarding:  {reported}the log is NOT forwarded to a collector (no [forward] in the configuration)"),
                Some(f) => {
                    outln!(
                        "forwarding:  {reported}{} {}, last acknowledged batch {}, {} batches ({} records) behind{}",
                        if f.connected { "connected to" } else { "NOT connected; last collector" },
                        if f.collector.is_empty() { "(none yet)" } else { &f.collector },
                        opt(f.last_acked),
                        f.batches_behind,
                        f.records_behind,
                        f.oldest_unacked_age_s
                            .map(|s| format!(", oldest unacknowledged sealed {s} s ago"))
                            .unwrap_or_default(),
                    );
                    if let Some(r) = &f.last_refusal {
                        outln!("refused:     {reported}{r}");
                    }
                    if let (false, Some(e)) = (f.connected, &f.last_error) {
                        outln!("connection:  {reported}{e}");
                    }
                }
            }
        }
        None => outln!("agent:       no status.json (the agent has not reported)"),
    }
    outln!("records:     {}", store.record_count()?);
    match last {
        Some(b) => {
            outln!("chain head:  {}", hex::encode(b.header.chain_head));
            outln!(
                "last batch:  {} (epoch {}, {} records, sealed {}, {})",
                b.number,
                b.header.epoch,
                b.header.count,
                super::short_time(b.header.wall_ns),
                ago(now, at(b.header.wall_ns))
            );
        }
        None => outln!("last batch:  none"),
    }
    if let Some(key) = store.current_key()? {
        outln!("key epoch:   {}", key.key_epoch);
    }
    Ok(())
}

/// Whether the agent that wrote `status` runs and records now, and the line saying so.
///
/// status.json is written by the agent but any root can rewrite it, so it only names what to
/// check: the pid must be alive, run the very executable file (device and inode) the agent
/// recorded, not be stopped, and the log's newest batch, sealed and signed by the agent,
/// must be recent. A root who forges status.json, runs a program under that pid and keeps
/// the log fresh can still show "running": only the log's signed heartbeats, checked against
/// a collector, prove that the agent records.
fn agent(status: &AgentStatus, newest: Option<SystemTime>, now: SystemTime) -> (bool, String) {
    let pid = status.pid;
    let not = |what: &str, why: String| (false, format!("{what} (pid {pid}: {why})"));
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return not("NOT RUNNING", "no such process".to_string());
    };
    // The state follows the command name, which is in parentheses and may contain any byte.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X')) {
        return not("NOT RUNNING", "the process has exited".to_string());
    }
    let live = match Executable::of_process(&pid.to_string()) {
        Ok(exe) => exe,
        Err(e) => return not("NOT RUNNING", format!("no executable to check: {e}")),
    };
    match &status.exe {
        // An older agent: its name at least must match.
        None if std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim_end() != "sensor-agent") =>
        {
            return not("NOT RUNNING", format!("the process is {}", live.path))
        }
        None => {
            return not(
                "UNCONFIRMED",
                format!(
                    "status.json does not record the agent's executable, so {} cannot be told from the agent",
                    live.path
                ),
            )
        }
        Some(recorded) if !recorded.same_file(&live) => {
            return not(
                "NOT RUNNING",
                format!(
                    "the process runs {}, not the executable the agent recorded ({}, device {} inode {})",
                    live.path, recorded.path, recorded.dev, recorded.ino
                ),
            )
        }
        Some(_) => {}
    }
    if matches!(state, Some('T' | 't')) {
        return not(
            "STOPPED",
            "the process is stopped (SIGSTOP or a debugger) and records nothing until it continues"
                .to_string(),
        );
    }
    let interval = status
        .batch_interval_ms
        .map_or(DEFAULT_INTERVAL, Duration::from_millis);
    let limit = (interval * STALE_INTERVALS).max(MIN_STALE);
    let Some(newest) = newest else {
        return not("NOT RECORDING", "the log has no batch".to_string());
    };
    let age = now.duration_since(newest).unwrap_or_default();
    if age > limit {
        return not(
            "NOT RECORDING",
            format!(
                "the process lives, but the log's newest batch was sealed {}; a live agent seals one every {} (limit {})",
                ago(now, newest),
                humantime::format_duration(interval),
                humantime::format_duration(limit)
            ),
        );
    }
    (
        true,
        format!(
            "running (pid {pid}, {}; newest batch sealed {})",
            live.path,
            ago(now, newest)
        ),
    )
}

fn at(wall_ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(wall_ns)
}

/// "3s ago", "2m 5s ago"; "in the future" when `then` is after `now` (clock changed).
fn ago(now: SystemTime, then: SystemTime) -> String {
    match now.duration_since(then) {
        Ok(d) => format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(d.as_secs()))
        ),
        Err(_) => "in the future (the clock was set back?)".to_string(),
    }
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "0".to_string();
    }
    let total: u64 = map.values().sum();
    let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!("{total} ({})", parts.join(", "))
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}
