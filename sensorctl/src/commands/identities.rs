//! `sensorctl identities`: who accessed which credentials, aggregated from decoded events.

use std::collections::BTreeMap;
use std::path::Path;

use sensor_log::Body;
use sensor_store::Filter;
use serde_json::json;

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// One JSON object per identity.
    #[arg(long)]
    json: bool,
}

/// user, unit, container id.
type Key = (String, Option<String>, Option<String>);

#[derive(Default)]
struct Seen {
    count: u64,
    first_ns: u64,
    last_ns: u64,
    owner: Option<String>,
    human: bool,
    /// (path, credential kind) -> accesses.
    credentials: BTreeMap<(String, String), u64>,
}

pub fn run(state_dir: &Path, args: &Args) -> Result<(), Failure> {
    let store = super::open(state_dir)?;
    let mut seen: BTreeMap<Key, Seen> = BTreeMap::new();
    store.query(&Filter::default(), |r| {
        let Body::Event(e) = &r.body else {
            return Ok(true);
        };
        let Some(identity) = &e.identity else {
            return Ok(true);
        };
        let key = (
            identity.user.clone(),
            identity.unit.clone(),
            identity.container.as_ref().map(|c| c.id.clone()),
        );
        let entry = seen.entry(key).or_insert_with(|| Seen {
            first_ns: r.header.wall_ns,
            ..Seen::default()
        });
        entry.count += 1;
        entry.last_ns = r.header.wall_ns;
        entry.owner = identity.owner.clone();
        entry.human = identity.human;
        if let Some(f) = &e.file {
            *entry
                .credentials
                .entry((f.path.clone(), f.kind.clone()))
                .or_default() += 1;
        }
        Ok(true)
    })?;
    if args.json {
        for ((user, unit, container), s) in &seen {
            let credentials: Vec<_> = s
                .credentials
                .iter()
                .map(|((path, kind), n)| json!({"path": path, "kind": kind, "count": n}))
                .collect();
            outln!(
                "{}",
                json!({
                    "user": user, "unit": unit, "container": container, "owner": s.owner, "human": s.human,
                    "count": s.count, "first_seen": sensor_log::time::rfc3339(s.first_ns),
                    "last_seen": sensor_log::time::rfc3339(s.last_ns), "credentials": credentials,
                })
            );
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    for ((user, unit, container), s) in &seen {
        rows.push(vec![
            user.clone(),
            unit.clone().unwrap_or_default(),
            container.clone().unwrap_or_default(),
            if s.human { "yes" } else { "no" }.to_string(),
            s.owner.clone().unwrap_or_default(),
            s.count.to_string(),
            super::short_time(s.first_ns),
            super::short_time(s.last_ns),
            s.credentials
                .iter()
                .map(|((path, kind), n)| format!("{path} ({kind}) ×{n}"))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    super::print_table(
        &[
            "USER",
            "UNIT",
            "CONTAINER",
            "HUMAN",
            "OWNER",
            "EVENTS",
            "FIRST SEEN",
            "LAST SEEN",
            "CREDENTIALS",
        ],
        &rows,
    );
    Ok(())
}
