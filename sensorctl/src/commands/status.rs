//! `sensorctl status`: the agent's `status.json` plus the store's head.

use std::path::Path;

use sensor_log::{hex, AgentStatus};

use crate::Failure;

pub fn run(state_dir: &Path) -> Result<(), Failure> {
    let store = super::open(state_dir)?;
    match AgentStatus::read(state_dir)? {
        Some(status) => {
            // The pid alone could have been reused by another program since.
            let running = std::fs::read_to_string(format!("/proc/{}/comm", status.pid))
                .is_ok_and(|comm| comm.trim_end() == "sensor-agent");
            println!(
                "agent:       {} (pid {})",
                if running { "running" } else { "not running" },
                status.pid
            );
            println!("started:     {}", status.started);
            println!("updated:     {}", status.updated);
            for (probe, mode) in &status.probe_modes {
                println!("probe:       {probe} = {mode}");
            }
            println!("events:      {}", counts(&status.events));
            println!("losses:      {}", counts(&status.losses));
            match &status.anchor {
                Some(a) if a.state == "anchored" => println!(
                    "anchor:      anchored in the TPM ({}, PCR {}), last extended batch {}, last quote of batch {}, NV counter {}, {} gap{}, {} TPM commands",
                    a.detail,
                    a.pcr.map_or("?".into(), |p| p.to_string()),
                    opt(a.last_extended_batch),
                    opt(a.last_quoted_batch),
                    opt(a.nv_counter),
                    a.gaps,
                    if a.gaps == 1 { "" } else { "s" },
                    a.tpm_commands,
                ),
                Some(a) if a.state == "failing" => println!(
                    "anchor:      FAILING since batch {}: {} (events are still logged; the gap is recorded)",
                    opt(a.last_extended_batch.map(|b| b + 1)),
                    a.detail
                ),
                Some(a) => println!("anchor:      the log is NOT anchored in a TPM: {}", a.detail),
                None => println!("anchor:      unknown (the agent does not report it)"),
            }
        }
        None => println!("agent:       no status.json (the agent has not reported)"),
    }
    println!("records:     {}", store.record_count()?);
    match store.last_batch()? {
        Some(b) => {
            println!("chain head:  {}", hex::encode(&b.header.chain_head));
            println!(
                "last batch:  {} (epoch {}, {} records, sealed {})",
                b.number,
                b.header.epoch,
                b.header.count,
                super::short_time(b.header.wall_ns)
            );
        }
        None => println!("last batch:  none"),
    }
    if let Some(key) = store.current_key()? {
        println!("key epoch:   {}", key.key_epoch);
    }
    Ok(())
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
