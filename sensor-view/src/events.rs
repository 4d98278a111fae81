//! What `sensorctl events` and `sensor-collector events` share: the filter arguments and
//! their parsing into a `Filter`, and how one event is shown (a table row, a JSON object).
//! One source for each, so the agent's view and the fleet's view of a record never differ.

use std::time::{SystemTime, UNIX_EPOCH};

use globset::{Glob, GlobMatcher};
use sensor_log::filter::Filter;
use sensor_log::{hex, AnchorBase, Body, Detail, Kind, Record, TpmEntry};
use serde_json::{json, Value};

/// Arguments that cannot be used as given, in one sentence (the tools exit 2 with it).
#[derive(Debug)]
pub struct BadArgument(pub String);

impl std::fmt::Display for BadArgument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadArgument {}

/// The filters of `events`.
#[derive(clap::Args)]
pub struct FilterArgs {
    /// Only records at or after this time: a duration ago (`30m`, `1h`, `2d`) or RFC 3339.
    #[arg(long)]
    since: Option<String>,
    /// Only records at or before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Only this kind (repeatable).
    #[arg(long)]
    kind: Vec<String>,
    /// Only accesses to paths matching this glob (`/home/*/.ssh/**`).
    #[arg(long)]
    path: Option<String>,
    /// Only this user name.
    #[arg(long)]
    identity: Option<String>,
    /// Only this systemd unit.
    #[arg(long)]
    unit: Option<String>,
    /// Only this container id.
    #[arg(long)]
    container: Option<String>,
    #[arg(long)]
    pid: Option<u32>,
    /// Only this executable path.
    #[arg(long)]
    exe: Option<String>,
    /// Only identities with a person behind them.
    #[arg(long, conflicts_with = "non_human")]
    human: bool,
    /// Only identities without a person behind them.
    #[arg(long)]
    non_human: bool,
}

/// What the filter arguments select: `filter` (which stores narrow their search by) and the
/// full path glob, which only the decoded path can decide.
pub struct Selection {
    pub filter: Filter,
    glob: Option<GlobMatcher>,
}

impl Selection {
    /// The path glob, on the decoded path (a store's index only used its literal prefix).
    pub fn path_matches(&self, r: &Record) -> bool {
        self.glob
            .as_ref()
            .is_none_or(|g| path_of(r).is_some_and(|p| g.is_match(p)))
    }

    /// Every condition, on the decoded record.
    pub fn matches(&self, r: &Record) -> bool {
        self.filter.matches(r) && self.path_matches(r)
    }
}

const TIME_FORMS: &str =
    "a duration ago like 30s, 15m, 1h, 2d, or an RFC 3339 timestamp like 2025-01-31T12:00:00Z";

impl FilterArgs {
    /// The selection the arguments name; an unknown kind, a bad glob or time is refused.
    pub fn selection(&self) -> Result<Selection, BadArgument> {
        let args = self;
        let valid: Vec<&str> = Kind::ALL
            .iter()
            .map(|k| k.as_str())
            .chain(Body::internal_kinds())
            .collect();
        for k in &args.kind {
            if !valid.contains(&k.as_str()) {
                return Err(BadArgument(format!(
                    "unknown kind `{k}`; valid kinds: {}",
                    valid.join(", ")
                )));
            }
        }
        let glob = args
            .path
            .as_deref()
            .map(|p| {
                Glob::new(p)
                    .map(|g| g.compile_matcher())
                    .map_err(|e| BadArgument(format!("invalid --path glob: {e}")))
            })
            .transpose()?;
        let filter = Filter {
            since_ns: args.since.as_deref().map(parse_time).transpose()?,
            until_ns: args.until.as_deref().map(parse_time).transpose()?,
            kinds: args.kind.clone(),
            path_prefix: args.path.as_deref().map(literal_prefix),
            pid: args.pid,
            exe: args.exe.clone(),
            user: args.identity.clone(),
            unit: args.unit.clone(),
            container: args.container.clone(),
            human: (args.human || args.non_human).then_some(args.human),
            after_seq: None,
        };
        Ok(Selection { filter, glob })
    }
}

/// The part of a glob before its first metacharacter: a range of a store's path index.
fn literal_prefix(glob: &str) -> String {
    glob.chars()
        .take_while(|c| !matches!(c, '*' | '?' | '[' | '{' | '\\'))
        .collect()
}

/// A duration ago, or an RFC 3339 timestamp, as Unix nanoseconds.
pub fn parse_time(text: &str) -> Result<u64, BadArgument> {
    let bad = || BadArgument(format!("invalid time `{text}`: expected {TIME_FORMS}"));
    let at = match humantime::parse_duration(text) {
        Ok(ago) => SystemTime::now().checked_sub(ago).ok_or_else(bad)?,
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|_| bad())?,
    };
    let since_epoch = at.duration_since(UNIX_EPOCH).map_err(|_| bad())?;
    u64::try_from(since_epoch.as_nanos()).map_err(|_| bad())
}

fn path_of(r: &Record) -> Option<&str> {
    match &r.body {
        Body::Event(e) => e.file.as_ref().map(|f| f.path.as_str()),
        _ => None,
    }
}

/// The columns of [`row`].
pub const COLUMNS: [&str; 8] = [
    "SEQ", "TIME", "KIND", "PID", "EXE", "IDENTITY", "HUMAN", "DETAIL",
];

/// One record as a JSON object: the agent's event schema (log-internal records their own
/// fields) plus `seq`.
pub fn to_json(r: &Record) -> Value {
    let seq = r.header.seq;
    let time = sensor_log::time::rfc3339(r.header.wall_ns);
    let mut value = match &r.body {
        Body::Event(e) => serde_json::to_value(e).unwrap_or(Value::Null),
        Body::EpochStart(s) => json!({
            "kind": "epoch_start", "time": time, "epoch": r.header.epoch,
            "previous_epoch": s.previous_epoch, "previous_head": hex::encode(s.previous_head),
            "reason": format!("{:?}", s.reason), "boot_id": s.boot_id,
        }),
        Body::KeyRotation(k) => json!({
            "kind": "key_rotation", "time": time, "key_epoch": k.key_epoch, "new_public_key": hex::encode(k.new_public_key),
        }),
        Body::Pruned(p) => json!({
            "kind": "pruned", "time": time, "up_to_seq": p.up_to_seq, "records": p.records, "batches": p.batches,
        }),
        Body::Tpm(t) => json!({
            "kind": t.kind_name(), "time": time, "epoch": r.header.epoch, "detail": tpm_detail(t),
        }),
    };
    if let Value::Object(map) = &mut value {
        map.insert("seq".to_string(), json!(seq));
    }
    value
}

/// One record as a table row under [`COLUMNS`].
pub fn row(r: &Record) -> Vec<String> {
    let seq = r.header.seq.to_string();
    let time = crate::table::short_time(r.header.wall_ns);
    let kind = r.body.kind_name().to_string();
    let blank = String::new;
    let Body::Event(e) = &r.body else {
        let detail = match &r.body {
            Body::EpochStart(s) => format!(
                "epoch {} begins; previous ended: {:?}",
                r.header.epoch, s.reason
            ),
            Body::KeyRotation(k) => format!(
                "key epoch {} {}",
                k.key_epoch,
                hex::encode(k.new_public_key)
            ),
            Body::Pruned(p) => format!(
                "removed {} records in {} batches, up to seq {}",
                p.records, p.batches, p.up_to_seq
            ),
            Body::Tpm(t) => tpm_detail(t),
            Body::Event(_) => String::new(),
        };
        return vec![seq, time, kind, blank(), blank(), blank(), blank(), detail];
    };
    let (pid, exe) = e
        .process
        .as_ref()
        .map_or((blank(), blank()), |p| (p.pid.to_string(), p.exe.clone()));
    let (who, human) = e.identity.as_ref().map_or((blank(), blank()), |i| {
        let place = i
            .container
            .as_ref()
            .map(|c| c.id.chars().take(12).collect())
            .or_else(|| i.unit.clone())
            .unwrap_or_default();
        let who = if place.is_empty() {
            i.user.clone()
        } else {
            format!("{}@{place}", i.user)
        };
        (who, if i.human { "yes" } else { "no" }.to_string())
    });
    let mut detail = Vec::new();
    if let Some(f) = &e.file {
        detail.push(format!("{} ({}, {})", f.path, f.kind, f.access));
    }
    if let Some(l) = &e.loss {
        if l.counts.is_empty() {
            // A stage that ended (`stage_<name>`): nobody counted what it dropped.
            detail.push(format!("lost an unknown number from {}", l.source));
        } else {
            let counts: Vec<String> = l.counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
            detail.push(format!(
                "lost {} from {}: {}",
                l.total,
                l.source,
                counts.join(", ")
            ));
        }
    }
    match &e.detail {
        Some(Detail::Repeated { count, first, last }) => {
            detail.push(format!("{count} more like it from {first} to {last}"))
        }
        Some(Detail::WatchOverflow {
            directory,
            rule,
            files,
            watched,
        }) => detail.push(format!(
            "{directory} ({rule}): {watched} of {files} files watched by inode, the rest by name"
        )),
        Some(Detail::PerfEventOpen {
            event_type,
            samples,
            system_wide,
            ..
        }) => detail.push(format!(
            "{event_type} event{}, sampling {}",
            if *system_wide { ", system-wide" } else { "" },
            samples.join(",")
        )),
        Some(Detail::Bpf {
            prog_type,
            prog_name,
            attach_type,
            tracepoint,
            ..
        }) => detail.extend(
            [prog_type, prog_name, attach_type, tracepoint]
                .into_iter()
                .flatten()
                .cloned(),
        ),
        Some(Detail::CoreLimit { soft, hard }) => detail.push(format!("core limit {soft}/{hard}")),
        Some(Detail::FanotifyMark {
            mark,
            mask,
            requested,
            path,
            covers,
            ..
        }) => detail.push(format!(
            "{mark} mark {mask} on {}{}",
            path.as_deref().unwrap_or(requested),
            covers
                .as_ref()
                .map(|c| format!(", covers a watched {c}"))
                .unwrap_or_default()
        )),
        Some(Detail::Overlay {
            opened,
            overlay_dev,
        }) => detail.push(format!("opened as {opened} through overlay {overlay_dev}")),
        Some(Detail::Moved { was }) => detail.push(format!("moved from its watched path {was}")),
        Some(Detail::PathChange { from, to, flags }) => {
            let mut text = match to {
                Some(to) => format!("{from} -> {to}"),
                None => from.clone(),
            };
            if !flags.is_empty() {
                text.push_str(&format!(" ({})", flags.join("|")));
            }
            detail.push(text)
        }
        None => {}
    }
    if let Some(s) = &e.syscall {
        detail.extend(s.operation.clone());
        detail.extend(s.key_type.as_ref().map(|t| format!("key type {t}")));
        detail.extend(
            s.key_description
                .as_ref()
                .map(|d| format!("description {d:?}")),
        );
        detail.extend(s.key_serial.map(|k| format!("serial {k}")));
        detail.extend(s.bytes.map(|b| format!("{b} bytes")));
        detail.extend(s.target_fd.map(|fd| format!("fd {fd}")));
    }
    if let Some(t) = &e.target {
        detail.push(
            format!("target pid {} {}", t.pid, t.exe.as_deref().unwrap_or(""))
                .trim_end()
                .to_string(),
        );
    }
    if let Some(errno) = e.errno {
        detail.push(format!("failed: errno {errno}"));
    }
    vec![seq, time, kind, pid, exe, who, human, detail.join("; ")]
}

/// One line on a TPM anchoring entry.
fn tpm_detail(t: &TpmEntry) -> String {
    let base = |b: &AnchorBase| {
        format!(
            "replay from batch {} on PCR {} = {}, reset count {}, restart count {}, NV counter {}, AK {}",
            b.replay_from,
            b.pcr_index,
            hex::encode(b.pcr_value),
            b.reset_count,
            b.restart_count,
            b.nv_counter,
            b.ak_fingerprint()
        )
    };
    match t {
        TpmEntry::Anchored(b) => format!("anchored: {}", base(b)),
        TpmEntry::Resumed {
            gap_from,
            gap_to,
            base: b,
        } => format!(
            "anchoring resumed after a gap (batches {gap_from}..={gap_to} not anchored): {}",
            base(b)
        ),
        TpmEntry::Unanchored { reason } => format!("the log is NOT anchored in a TPM: {reason}"),
        TpmEntry::Failing { from_batch, error } => {
            format!("anchoring failed from batch {from_batch}: {error}")
        }
        TpmEntry::Quote(q) => format!("quote of the PCR after batch {}", q.batch),
        TpmEntry::Alarm { reason, detail } => format!("{reason}: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_log::vectors::v2_records;

    /// The table shows what a version-2 `detail` says, which no other column holds.
    #[test]
    fn rows_show_the_detail() {
        let [_, repeated, overflow] = v2_records();
        assert_eq!(row(&repeated)[7], "/p (, ); 2 more like it from f to l");
        let overflow = row(&overflow);
        assert_eq!(overflow[2], "watch_overflow");
        assert_eq!(
            overflow[7],
            "/d (/d/*): 256 of 300 files watched by inode, the rest by name"
        );
    }
}
