//! `sensorctl status`: the agent's `status.json` plus the store's head.

use std::path::Path;

use sensor_log::{hex, AgentStatus};

use crate::Failure;

pub fn run(state_dir: &Path) -> Result<(), Failure> {
    let store = super::open(state_dir)?;
    match AgentStatus::read(state_dir)? {
        Some(status) => {
            let running = Path::new(&format!("/proc/{}", status.pid)).exists();
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
