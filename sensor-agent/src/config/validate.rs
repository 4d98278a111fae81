//! One file's checks: types, paths, globs, kinds and ranges, each error naming the key.

use std::time::Duration;

use sensor_tpm::TpmSection;

use super::error::invalid;
use super::raw::{RawAgent, RawFile, RawForward, RawLog};
use super::{ConfigError, ForwardConfig};
use crate::attribution::OwnerRule;
use crate::watch::Rule;

/// A file after validation.
pub(super) struct Parsed {
    pub(super) raw: RawFile,
    pub(super) log: PartialLog,
    pub(super) tpm: TpmSection,
    pub(super) forward: Option<ForwardConfig>,
    pub(super) watches: Vec<Rule>,
    pub(super) owners: Vec<OwnerRule>,
}

pub(super) fn parse(text: &str, file: &str) -> Result<Parsed, ConfigError> {
    let raw: RawFile =
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let (line, column) = inner
                .span()
                .map(|s| line_col(text, s.start))
                .unwrap_or((0, 0));
            let message = inner.message().trim_end().replace('\n', "; ");
            if key == "." {
                ConfigError::Syntax {
                    file: file.to_owned(),
                    line,
                    column,
                    message,
                }
            } else {
                invalid(file, key, format!("{message} (line {line})"))
            }
        })?;
    validate_agent(&raw.agent, file)?;
    let log = PartialLog::parse(&raw.log, file)?;
    let tpm = TpmSection::parse(&raw.tpm).map_err(|e| invalid(file, e.key, e.message))?;
    let forward = raw.forward.as_ref().map(|f| forward(f, file)).transpose()?;
    let mut watches = Vec::with_capacity(raw.watch.len());
    for (i, w) in raw.watch.iter().enumerate() {
        if !is_kind(&w.kind) {
            return Err(invalid(
                file,
                format_args!("watch[{i}].kind"),
                format_args!(
                    "`{}` is not a kind: use lowercase letters, digits and `-`",
                    w.kind
                ),
            ));
        }
        if w.owner.as_deref().is_some_and(|o| o.trim().is_empty()) {
            return Err(invalid(file, format_args!("watch[{i}].owner"), "is empty"));
        }
        let rule = Rule::new(&w.path, &w.kind, w.owner.clone(), w.exclude.clone())
            .map_err(|e| invalid(file, format_args!("watch[{i}].{}", e.field), e.message))?;
        watches.push(rule);
    }
    let mut owners = Vec::with_capacity(raw.owner.len());
    for (i, o) in raw.owner.iter().enumerate() {
        let rule = OwnerRule::new(
            &o.owner,
            o.unit.as_deref(),
            o.user.as_deref(),
            o.container.as_deref(),
            o.exe.as_deref(),
        )
        .map_err(|e| {
            let key = if e.field == "owner" && o.owner.trim().is_empty() {
                format!("owner[{i}].owner")
            } else if e.field == "owner" {
                format!("owner[{i}]")
            } else {
                format!("owner[{i}].{}", e.field)
            };
            invalid(file, key, e.message)
        })?;
        owners.push(rule);
    }
    for (i, pattern) in raw.unwatch.iter().enumerate() {
        globset::Glob::new(pattern).map_err(|e| {
            invalid(
                file,
                format_args!("unwatch[{i}]"),
                format_args!("`{pattern}`: bad glob: {e}"),
            )
        })?;
    }
    Ok(Parsed {
        raw,
        log,
        tpm,
        forward,
        watches,
        owners,
    })
}

/// `ADDRESS:PORT`, or `"off"` (`None`).
pub(super) fn metrics_listen(text: &str) -> Result<Option<std::net::SocketAddr>, String> {
    match text {
        "off" => Ok(None),
        _ => text
            .parse()
            .map(Some)
            .map_err(|e| format!("`{text}`: {e} (want ADDRESS:PORT or \"off\")")),
    }
}

/// Batches in flight unless `[forward] window` says otherwise.
const DEFAULT_FORWARD_WINDOW: u16 = 64;

fn forward(raw: &RawForward, file: &str) -> Result<ForwardConfig, ConfigError> {
    if raw.collectors.is_empty() {
        return Err(invalid(file, "forward.collectors", "names no collector"));
    }
    for (i, addr) in raw.collectors.iter().enumerate() {
        let port = addr.rsplit_once(':').and_then(|(host, port)| {
            (!host.is_empty())
                .then(|| port.parse::<u16>().ok())
                .flatten()
        });
        if port.is_none() {
            return Err(invalid(
                file,
                format_args!("forward.collectors[{i}]"),
                format_args!("`{addr}` is not HOST:PORT"),
            ));
        }
    }
    if raw.window == Some(0) {
        return Err(invalid(file, "forward.window", "must be at least 1"));
    }
    Ok(ForwardConfig {
        collectors: raw.collectors.clone(),
        client_cert: raw.client_cert.clone(),
        client_key: raw.client_key.clone(),
        ca: raw.ca.clone(),
        server_name: raw.server_name.clone(),
        window: raw.window.unwrap_or(DEFAULT_FORWARD_WINDOW),
    })
}

fn is_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn validate_agent(agent: &RawAgent, file: &str) -> Result<(), ConfigError> {
    if let Some(text) = &agent.metrics_listen {
        metrics_listen(text).map_err(|message| invalid(file, "agent.metrics_listen", message))?;
    }
    if let Some(dir) = &agent.state_dir {
        if !dir.is_absolute() {
            return Err(invalid(
                file,
                "agent.state_dir",
                format_args!("`{}` is not an absolute path", dir.display()),
            ));
        }
    }
    if agent.budget_burst == Some(0) {
        return Err(invalid(
            file,
            "agent.budget_burst",
            "must be at least 1: a burst of 0 would drop every event",
        ));
    }
    fold_window(file, &agent.fold_window)?;
    probe_mode(file, &agent.probe_mode)?;
    if let Some(bytes) = agent.ring_buffer_bytes {
        let page = rustix::param::page_size();
        if !bytes.is_power_of_two() {
            return Err(invalid(
                file,
                "agent.ring_buffer_bytes",
                format_args!("`{bytes}` is not a power of two"),
            ));
        }
        if (bytes as usize) < page {
            return Err(invalid(
                file,
                "agent.ring_buffer_bytes",
                format_args!("`{bytes}` is smaller than the page size ({page})"),
            ));
        }
    }
    Ok(())
}

/// `[log]` after validation, every key still optional until merged with the defaults.
#[derive(Debug, Default)]
pub(super) struct PartialLog {
    pub(super) batch_records: Option<usize>,
    pub(super) batch_interval: Option<Duration>,
    pub(super) key_rotation: Option<Option<Duration>>,
    pub(super) first_key_rotation: Option<Option<Duration>>,
    pub(super) max_pending_records: Option<usize>,
    pub(super) retention_max_bytes: Option<u64>,
    pub(super) retention_max_age: Option<Option<Duration>>,
}

impl PartialLog {
    fn parse(raw: &RawLog, file: &str) -> Result<PartialLog, ConfigError> {
        let duration =
            |key, text: &Option<String>, may_be_off| duration(file, key, text, may_be_off);
        let at_least_one = |key: &str, n: Option<usize>| match n {
            Some(0) => Err(invalid(
                file,
                format_args!("log.{key}"),
                "must be at least 1",
            )),
            n => Ok(n),
        };
        Ok(PartialLog {
            batch_records: at_least_one("batch_records", raw.batch_records)?,
            batch_interval: duration("log.batch_interval", &raw.batch_interval, false)?.flatten(),
            key_rotation: duration("log.key_rotation", &raw.key_rotation, true)?,
            first_key_rotation: duration("log.first_key_rotation", &raw.first_key_rotation, true)?,
            max_pending_records: at_least_one("max_pending_records", raw.max_pending_records)?,
            retention_max_bytes: raw.retention_max_bytes,
            retention_max_age: duration("log.retention_max_age", &raw.retention_max_age, true)?,
        })
    }
}

/// A duration key (`"1s"`, `"24h"`), read as `[tpm]`'s are; `Some(None)` for `"off"` where
/// `may_be_off`.
fn duration(
    file: &str,
    key: &'static str,
    text: &Option<String>,
    may_be_off: bool,
) -> Result<Option<Option<Duration>>, ConfigError> {
    let Some(text) = text else { return Ok(None) };
    if may_be_off && text == "off" {
        return Ok(Some(None));
    }
    sensor_tpm::parse_duration(key, text)
        .map(|d| Some(Some(d)))
        .map_err(|e| invalid(file, e.key, e.message))
}

/// `[agent] fold_window`: a duration, or `"off"` (`None`).
pub(super) fn fold_window(
    file: &str,
    text: &Option<String>,
) -> Result<Option<Option<Duration>>, ConfigError> {
    duration(file, "agent.fold_window", text, true)
}

/// `[agent] probe_mode`: `auto` or a [`crate::probes::ProbeMode`].
pub(super) fn probe_mode(
    file: &str,
    text: &Option<String>,
) -> Result<Option<crate::probes::ModeChoice>, ConfigError> {
    text.as_deref()
        .map(|t| {
            t.parse()
                .map_err(|e: String| invalid(file, "agent.probe_mode", e))
        })
        .transpose()
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}
