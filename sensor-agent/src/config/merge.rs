//! The user's file over the embedded defaults.

use super::error::invalid;
use super::validate::{Parsed, PartialLog};
use super::{AgentConfig, Config, ConfigError, LogConfig, DEFAULTS_NAME};

impl PartialLog {
    /// The user's keys over the defaults'.
    fn merged(user: PartialLog, defaults: PartialLog) -> PartialLog {
        PartialLog {
            batch_records: user.batch_records.or(defaults.batch_records),
            batch_interval: user.batch_interval.or(defaults.batch_interval),
            key_rotation: user.key_rotation.or(defaults.key_rotation),
            first_key_rotation: user.first_key_rotation.or(defaults.first_key_rotation),
            max_pending_records: user.max_pending_records.or(defaults.max_pending_records),
            retention_max_bytes: user.retention_max_bytes.or(defaults.retention_max_bytes),
            retention_max_age: user.retention_max_age.or(defaults.retention_max_age),
        }
    }

    /// The merged settings; the embedded defaults name every required key.
    fn finish(self) -> Result<LogConfig, ConfigError> {
        let required = |key: &str| invalid(DEFAULTS_NAME, format_args!("log.{key}"), "missing");
        Ok(LogConfig {
            batch_records: self
                .batch_records
                .ok_or_else(|| required("batch_records"))?,
            batch_interval: self
                .batch_interval
                .ok_or_else(|| required("batch_interval"))?,
            key_rotation: self.key_rotation.ok_or_else(|| required("key_rotation"))?,
            first_key_rotation: self
                .first_key_rotation
                .ok_or_else(|| required("first_key_rotation"))?,
            max_pending_records: self
                .max_pending_records
                .ok_or_else(|| required("max_pending_records"))?,
            retention_max_bytes: self.retention_max_bytes,
            retention_max_age: self.retention_max_age.flatten(),
        })
    }
}

pub(super) fn merge(
    defaults: Parsed,
    user: Option<(Parsed, String)>,
) -> Result<Config, ConfigError> {
    let required = |key: &str| invalid(DEFAULTS_NAME, key, "missing");
    let mut agent = AgentConfig {
        state_dir: defaults
            .raw
            .agent
            .state_dir
            .ok_or_else(|| required("agent.state_dir"))?,
        ring_buffer_bytes: defaults
            .raw
            .agent
            .ring_buffer_bytes
            .ok_or_else(|| required("agent.ring_buffer_bytes"))?,
        budget_per_second: defaults
            .raw
            .agent
            .budget_per_second
            .ok_or_else(|| required("agent.budget_per_second"))?,
        budget_burst: defaults
            .raw
            .agent
            .budget_burst
            .ok_or_else(|| required("agent.budget_burst"))?,
        proc_files: defaults
            .raw
            .agent
            .proc_files
            .ok_or_else(|| required("agent.proc_files"))?,
        metrics_listen: None,
        fold_window: super::validate::fold_window(DEFAULTS_NAME, &defaults.raw.agent.fold_window)?
            .ok_or_else(|| required("agent.fold_window"))?,
        probe_mode: super::validate::probe_mode(DEFAULTS_NAME, &defaults.raw.agent.probe_mode)?
            .ok_or_else(|| required("agent.probe_mode"))?,
    };
    let mut metrics_listen = defaults
        .raw
        .agent
        .metrics_listen
        .ok_or_else(|| required("agent.metrics_listen"))?;
    let mut watches = defaults.watches;
    let mut owners = defaults.owners;
    let mut log = defaults.log;
    let mut tpm = defaults.tpm;
    let mut forward = defaults.forward;
    if let Some((user, file)) = user {
        forward = user.forward.or(forward);
        log = PartialLog::merged(user.log, log);
        tpm = user.tpm.or(tpm);
        let a = user.raw.agent;
        agent.state_dir = a.state_dir.unwrap_or(agent.state_dir);
        agent.ring_buffer_bytes = a.ring_buffer_bytes.unwrap_or(agent.ring_buffer_bytes);
        agent.budget_per_second = a.budget_per_second.unwrap_or(agent.budget_per_second);
        agent.budget_burst = a.budget_burst.unwrap_or(agent.budget_burst);
        if let Some(window) = super::validate::fold_window(&file, &a.fold_window)? {
            agent.fold_window = window;
        }
        if let Some(mode) = super::validate::probe_mode(&file, &a.probe_mode)? {
            agent.probe_mode = mode;
        }
        agent.proc_files = a.proc_files.unwrap_or(agent.proc_files);
        metrics_listen = a.metrics_listen.unwrap_or(metrics_listen);
        if user.raw.default_watches == Some(false) {
            if !user.raw.unwatch.is_empty() {
                return Err(invalid(
                    &file,
                    "unwatch",
                    "has no effect with `default_watches = false`",
                ));
            }
            watches.clear();
        }
        for (i, pattern) in user.raw.unwatch.iter().enumerate() {
            // Validated in `parse`.
            let Ok(glob) = globset::Glob::new(pattern) else {
                continue;
            };
            let glob = glob.compile_matcher();
            let before = watches.len();
            watches.retain(|r| r.path != *pattern && !glob.is_match(&r.path));
            if watches.len() == before {
                return Err(invalid(
                    &file,
                    format_args!("unwatch[{i}]"),
                    format_args!("`{pattern}` matches no default watch path"),
                ));
            }
        }
        watches.extend(user.watches);
        owners.extend(user.owners);
    }
    // Checked where it was set.
    agent.metrics_listen = super::validate::metrics_listen(&metrics_listen).unwrap_or(None);
    Ok(Config {
        agent,
        log: log.finish()?,
        tpm: tpm.config(),
        forward,
        watches,
        owners,
    })
}
