//! Agent configuration: the embedded defaults (`default-config.toml`), then the user's file,
//! which adds watches and owners, overrides `[agent]` keys one by one, removes default
//! watches with `unwatch`, or starts from nothing with `default_watches = false`.
//!
//! Every error names the file and the key (`watch[2].path`) and says what is wrong.
//! Documented in `docs/configuration.md`.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sensor_tpm::TpmConfig;
use serde::Deserialize;

use crate::attribution::OwnerRule;
use crate::watch::Rule;

/// The embedded defaults.
pub const DEFAULT_CONFIG: &str = include_str!("../default-config.toml");
const DEFAULTS_NAME: &str = "<embedded defaults>";

/// A procfs file of other processes whose opening is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcFile {
    Environ,
    Mem,
    Maps,
    Cmdline,
}

impl ProcFile {
    /// The `PROC_*` bit the kernel programs test.
    pub const fn bit(self) -> u32 {
        match self {
            ProcFile::Environ => sensor_common::PROC_ENVIRON,
            ProcFile::Mem => sensor_common::PROC_MEM,
            ProcFile::Maps => sensor_common::PROC_MAPS,
            ProcFile::Cmdline => sensor_common::PROC_CMDLINE,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    pub state_dir: PathBuf,
    /// Size of the kernel → agent ring buffer: a power of two, at least one page.
    pub ring_buffer_bytes: u32,
    pub proc_files: Vec<ProcFile>,
}

/// The `[log]` section: batching, key rotation, the in-memory buffer for a full disk, and
/// retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub batch_records: usize,
    pub batch_interval: Duration,
    /// `None` when rotation is `"off"`.
    pub key_rotation: Option<Duration>,
    /// The first rotation after start (the key on disk may have been copied while the agent
    /// was stopped); `None` (`"off"`) leaves it to `key_rotation`.
    pub first_key_rotation: Option<Duration>,
    pub max_pending_records: usize,
    pub retention_max_bytes: Option<u64>,
    pub retention_max_age: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub agent: AgentConfig,
    pub log: LogConfig,
    /// The `[tpm]` section; `None` when `tcti = "off"`.
    pub tpm: Option<TpmConfig>,
    /// The rule table: rule id `n` is `watches[n - 1]`.
    pub watches: Vec<Rule>,
    pub owners: Vec<OwnerRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("config {file}: line {line}, column {column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("config {file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

/// One file as written; every key optional so the user's file can be partial.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    tpm: RawTpm,
    default_watches: Option<bool>,
    #[serde(default)]
    unwatch: Vec<String>,
    #[serde(default)]
    watch: Vec<RawWatch>,
    #[serde(default)]
    owner: Vec<RawOwner>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    state_dir: Option<PathBuf>,
    ring_buffer_bytes: Option<u32>,
    proc_files: Option<Vec<ProcFile>>,
}

/// `[log]` as written: durations are strings (`"1s"`, `"24h"`, `"90d"`, or `"off"` where a
/// limit can be switched off).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    batch_records: Option<usize>,
    batch_interval: Option<String>,
    key_rotation: Option<String>,
    first_key_rotation: Option<String>,
    max_pending_records: Option<usize>,
    retention_max_bytes: Option<u64>,
    retention_max_age: Option<String>,
}

/// `[tpm]` as written. `tcti = "off"` switches anchoring off; unset means `/dev/tpmrm0` if
/// it exists.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTpm {
    tcti: Option<String>,
    pcr: Option<u32>,
    nv_index: Option<u32>,
    ak_handle: Option<u32>,
    quote_period: Option<String>,
    nv_interval: Option<String>,
    op_timeout: Option<String>,
    queue_depth: Option<usize>,
}

/// `[tpm]` after validation, every key still optional until merged with the defaults.
#[derive(Debug, Default)]
struct PartialTpm {
    /// `Some(None)`: `"off"`.
    tcti: Option<Option<String>>,
    pcr: Option<u32>,
    nv_index: Option<u32>,
    ak_handle: Option<u32>,
    quote_period: Option<Duration>,
    nv_interval: Option<Duration>,
    op_timeout: Option<Duration>,
    queue_depth: Option<usize>,
}

impl PartialTpm {
    fn parse(raw: &RawTpm, file: &str) -> Result<PartialTpm, ConfigError> {
        let duration = |key: &str, text: &Option<String>| {
            Ok::<_, ConfigError>(duration(file, "tpm", key, text, false)?.flatten())
        };
        let partial = PartialTpm {
            tcti: raw.tcti.as_ref().map(|t| (t != "off").then(|| t.clone())),
            pcr: raw.pcr,
            nv_index: raw.nv_index,
            ak_handle: raw.ak_handle,
            quote_period: duration("quote_period", &raw.quote_period)?,
            nv_interval: duration("nv_interval", &raw.nv_interval)?,
            op_timeout: duration("op_timeout", &raw.op_timeout)?,
            queue_depth: raw.queue_depth,
        };
        // sensor-tpm's checks, on this file's keys over the built-in defaults; its messages
        // begin with the field's name.
        if let Some(cfg) = partial.over(TpmConfig::default()) {
            if let Err(sensor_tpm::Error::Config(message)) = cfg.validate() {
                let key = message.split_whitespace().next().unwrap_or_default();
                return Err(invalid(file, format_args!("tpm.{key}"), message.clone()));
            }
        }
        Ok(partial)
    }

    fn merged(user: PartialTpm, defaults: PartialTpm) -> PartialTpm {
        PartialTpm {
            tcti: user.tcti.or(defaults.tcti),
            pcr: user.pcr.or(defaults.pcr),
            nv_index: user.nv_index.or(defaults.nv_index),
            ak_handle: user.ak_handle.or(defaults.ak_handle),
            quote_period: user.quote_period.or(defaults.quote_period),
            nv_interval: user.nv_interval.or(defaults.nv_interval),
            op_timeout: user.op_timeout.or(defaults.op_timeout),
            queue_depth: user.queue_depth.or(defaults.queue_depth),
        }
    }

    /// The keys set here over `base`; `None` when anchoring is switched off.
    fn over(&self, base: TpmConfig) -> Option<TpmConfig> {
        let tcti = match &self.tcti {
            Some(None) => return None,
            Some(Some(t)) => Some(t.clone()),
            None => base.tcti,
        };
        Some(TpmConfig {
            tcti,
            pcr: self.pcr.unwrap_or(base.pcr),
            nv_index: self.nv_index.unwrap_or(base.nv_index),
            ak_handle: self.ak_handle.unwrap_or(base.ak_handle),
            quote_period: self.quote_period.unwrap_or(base.quote_period),
            nv_interval: self.nv_interval.unwrap_or(base.nv_interval),
            op_timeout: self.op_timeout.unwrap_or(base.op_timeout),
            queue_depth: self.queue_depth.unwrap_or(base.queue_depth),
            ..base
        })
    }
}

/// A duration key (`"1s"`, `"24h"`); `Some(None)` for `"off"` where `may_be_off`.
fn duration(
    file: &str,
    section: &str,
    key: &str,
    text: &Option<String>,
    may_be_off: bool,
) -> Result<Option<Option<Duration>>, ConfigError> {
    let Some(text) = text else { return Ok(None) };
    if may_be_off && text == "off" {
        return Ok(Some(None));
    }
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(Some(Some(d))),
        Ok(_) => Err(invalid(
            file,
            format_args!("{section}.{key}"),
            "must be more than zero",
        )),
        Err(e) => Err(invalid(
            file,
            format_args!("{section}.{key}"),
            format_args!("`{text}` is not a duration like \"1s\" or \"24h\" ({e})"),
        )),
    }
}

/// `[log]` after validation, every key still optional until merged with the defaults.
#[derive(Debug, Default)]
struct PartialLog {
    batch_records: Option<usize>,
    batch_interval: Option<Duration>,
    key_rotation: Option<Option<Duration>>,
    first_key_rotation: Option<Option<Duration>>,
    max_pending_records: Option<usize>,
    retention_max_bytes: Option<u64>,
    retention_max_age: Option<Option<Duration>>,
}

impl PartialLog {
    fn parse(raw: &RawLog, file: &str) -> Result<PartialLog, ConfigError> {
        let duration = |key: &str, text: &Option<String>, may_be_off: bool| {
            duration(file, "log", key, text, may_be_off)
        };
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
            batch_interval: duration("batch_interval", &raw.batch_interval, false)?.flatten(),
            key_rotation: duration("key_rotation", &raw.key_rotation, true)?,
            first_key_rotation: duration("first_key_rotation", &raw.first_key_rotation, true)?,
            max_pending_records: at_least_one("max_pending_records", raw.max_pending_records)?,
            retention_max_bytes: raw.retention_max_bytes,
            retention_max_age: duration("retention_max_age", &raw.retention_max_age, true)?,
        })
    }

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    path: String,
    kind: String,
    owner: Option<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwner {
    owner: String,
    unit: Option<String>,
    user: Option<String>,
    container: Option<String>,
    exe: Option<String>,
}

/// A file after validation.
struct Parsed {
    raw: RawFile,
    log: PartialLog,
    tpm: PartialTpm,
    watches: Vec<Rule>,
    owners: Vec<OwnerRule>,
}

impl Config {
    /// `SensorConfig.proc_files`: the `PROC_*` bits of `agent.proc_files`.
    pub fn proc_files_mask(&self) -> u32 {
        self.agent
            .proc_files
            .iter()
            .fold(0, |bits, f| bits | f.bit())
    }

    /// The rule table (rule id `n` is `rules()[n - 1]`).
    pub fn rules(&self) -> &[Rule] {
        &self.watches
    }

    /// The embedded defaults, amended by the file at `path` when given.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let defaults = parse(DEFAULT_CONFIG, DEFAULTS_NAME)?;
        let user = match path {
            Some(p) => {
                let file = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    file: file.clone(),
                    source,
                })?;
                Some((parse(&text, &file)?, file))
            }
            None => None,
        };
        merge(defaults, user)
    }
}

fn invalid(file: &str, key: impl Display, message: impl Display) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_owned(),
        key: key.to_string(),
        message: message.to_string(),
    }
}

fn parse(text: &str, file: &str) -> Result<Parsed, ConfigError> {
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
    let tpm = PartialTpm::parse(&raw.tpm, file)?;
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
        watches,
        owners,
    })
}

fn is_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn validate_agent(agent: &RawAgent, file: &str) -> Result<(), ConfigError> {
    if let Some(dir) = &agent.state_dir {
        if !dir.is_absolute() {
            return Err(invalid(
                file,
                "agent.state_dir",
                format_args!("`{}` is not an absolute path", dir.display()),
            ));
        }
    }
    if let Some(bytes) = agent.ring_buffer_bytes {
        // SAFETY: sysconf takes no pointers and touches no memory of ours; a failure returns
        // -1, which the conversion refuses.
        let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        if !bytes.is_power_of_two() {
            return Err(invalid(
                file,
                "agent.ring_buffer_bytes",
                format_args!("`{bytes}` is not a power of two"),
            ));
        }
        if bytes < page {
            return Err(invalid(
                file,
                "agent.ring_buffer_bytes",
                format_args!("`{bytes}` is smaller than the page size ({page})"),
            ));
        }
    }
    Ok(())
}

fn merge(defaults: Parsed, user: Option<(Parsed, String)>) -> Result<Config, ConfigError> {
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
        proc_files: defaults
            .raw
            .agent
            .proc_files
            .ok_or_else(|| required("agent.proc_files"))?,
    };
    let mut watches = defaults.watches;
    let mut owners = defaults.owners;
    let mut log = defaults.log;
    let mut tpm = defaults.tpm;
    if let Some((user, file)) = user {
        log = PartialLog::merged(user.log, log);
        tpm = PartialTpm::merged(user.tpm, tpm);
        let a = user.raw.agent;
        agent.state_dir = a.state_dir.unwrap_or(agent.state_dir);
        agent.ring_buffer_bytes = a.ring_buffer_bytes.unwrap_or(agent.ring_buffer_bytes);
        agent.proc_files = a.proc_files.unwrap_or(agent.proc_files);
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
    Ok(Config {
        agent,
        log: log.finish()?,
        tpm: tpm.over(TpmConfig::default()),
        watches,
        owners,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path))
    }

    /// The error message with the temp file's path cut off.
    fn error(text: &str) -> String {
        let e = load_text(text).unwrap_err().to_string();
        e.split_once("agent.toml: ")
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or(e)
    }

    #[test]
    fn defaults_load_and_cover_the_field_notes() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.agent.state_dir, Path::new("/var/lib/sensor-agent"));
        assert_eq!(c.agent.ring_buffer_bytes, 16 << 20);
        assert_eq!(
            c.proc_files_mask(),
            sensor_common::PROC_ENVIRON | sensor_common::PROC_MEM
        );
        let covered = |path: &str| c.watches.iter().any(|r| r.matches_path(path));
        for path in [
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/security/opasswd",
            "/etc/sudoers",
            "/etc/sudoers.d/90-cloud",
            "/etc/pam.conf",
            "/etc/pam.d/sshd",
            "/root/.ssh/id_ed25519",
            "/home/alice/.ssh/id_rsa",
            "/home/alice/.ssh/authorized_keys",
            "/etc/ssh/ssh_host_ed25519_key",
            "/home/alice/.aws/credentials",
            "/root/.aws/config",
            "/home/alice/.aws/sso/cache/abc.json",
            "/home/alice/.azure/msal_token_cache.json",
            "/home/alice/.config/gcloud/application_default_credentials.json",
            "/root/.config/gcloud/access_tokens.db",
            "/home/alice/.docker/config.json",
            "/home/alice/.kube/config",
            "/home/alice/.git-credentials",
            "/root/.netrc",
            "/home/alice/.vault-token",
            "/home/alice/.pgpass",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "/var/lib/kubelet/pki/kubelet-client-current.pem",
            "/var/lib/kubelet/kubeconfig",
            "/etc/kubernetes/admin.conf",
            "/etc/kubernetes/pki/ca.key",
            "/etc/rancher/k3s/k3s.yaml",
            "/etc/ssl/private/server.key",
            "/etc/letsencrypt/live/example.org/privkey.pem",
        ] {
            assert!(covered(path), "{path} is not watched by default");
        }
        for path in [
            "/home/alice/.ssh/id_rsa.pub",
            "/etc/kubernetes/pki/ca.crt",
            "/etc/ssh/ssh_host_rsa_key.pub",
        ] {
            assert!(!covered(path), "{path} should not be watched");
        }
    }

    #[test]
    fn user_file_adds_overrides_and_removes() {
        let c = load_text(
            r#"
unwatch = ["/etc/pam.d/*", "/home/*/.aws/*"]

[agent]
ring_buffer_bytes = 8388608
proc_files = ["environ", "mem", "maps"]

[[watch]]
path = "/srv/app/secrets/*.key"
kind = "tls-key"
owner = "payments"
exclude = ["test-*"]

[[owner]]
unit = "nginx.service"
owner = "web"
"#,
        )
        .unwrap();
        assert_eq!(c.agent.ring_buffer_bytes, 8 << 20);
        assert_eq!(c.agent.state_dir, Path::new("/var/lib/sensor-agent"));
        assert_eq!(
            c.proc_files_mask() & sensor_common::PROC_MAPS,
            sensor_common::PROC_MAPS
        );
        assert!(!c.watches.iter().any(|r| r.path == "/etc/pam.d/*"));
        assert!(!c
            .watches
            .iter()
            .any(|r| r.path.starts_with("/home/*/.aws/")));
        assert!(c.watches.iter().any(|r| r.path == "/etc/shadow"));
        let last = c.watches.last().unwrap();
        assert_eq!(
            (last.kind.as_str(), last.owner.as_deref()),
            ("tls-key", Some("payments"))
        );
        assert_eq!(c.owners.len(), 1);
    }

    #[test]
    fn tpm_section_defaults_overrides_and_off() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.tpm, Some(TpmConfig::default()));
        let c = load_text(
            "[tpm]\ntcti = \"swtpm:host=127.0.0.1,port=2321\"\npcr = 14\nquote_period = \"5s\"\n",
        )
        .unwrap();
        let tpm = c.tpm.unwrap();
        assert_eq!(
            (tpm.tcti.as_deref(), tpm.pcr, tpm.quote_period),
            (
                Some("swtpm:host=127.0.0.1,port=2321"),
                14,
                Duration::from_secs(5)
            )
        );
        assert_eq!(tpm.nv_interval, Duration::from_secs(3600));
        assert!(load_text("[tpm]\ntcti = \"off\"\n").unwrap().tpm.is_none());
    }

    #[test]
    fn default_watches_false_starts_empty() {
        let c = load_text(
            "default_watches = false\n[[watch]]\npath = \"/etc/shadow\"\nkind = \"password-db\"\n",
        )
        .unwrap();
        assert_eq!(c.watches.len(), 1);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[[watch]]\npath = \"/etc/shadow\"\nkind = \"x\"\n[[watch]]\npath = \"etc/shadow\"\nkind = \"password-db\"\n",
                "watch[1].path: `etc/shadow` is not an absolute path",
            ),
            ("[[watch]]\npath = \"/etc/[x\"\nkind = \"x\"\n", "watch[0].path: `/etc/[x`: bad glob"),
            ("[[watch]]\npath = \"/etc/../shadow\"\nkind = \"x\"\n", "watch[0].path: `/etc/../shadow` contains a `..`"),
            ("[[watch]]\npath = \"/etc/**/key\"\nkind = \"x\"\n", "watch[0].path: `/etc/**/key`: `**` is not supported"),
            ("[[watch]]\npath = \"/k/*\"\nkind = \"x\"\nexclude = [\"a/b\"]\n", "watch[0].exclude[0]: `a/b` contains `/`"),
            ("[[watch]]\npath = \"/k\"\nkind = \"Bad Kind\"\n", "watch[0].kind: `Bad Kind` is not a kind"),
            ("[[watch]]\npath = \"/k\"\nkind = 3\n", "watch[0].kind: invalid type: integer `3`, expected a string"),
            ("[[watch]]\npath = \"/k\"\n", "watch[0]: missing field `kind`"),
            ("[[watch]]\npth = \"/k\"\nkind = \"x\"\n", "watch[0].pth: unknown field `pth`"),
            ("[agent]\nring_buffer_bytes = 1000\n", "agent.ring_buffer_bytes: `1000` is not a power of two"),
            ("[agent]\nring_buffer_bytes = 1024\n", "agent.ring_buffer_bytes: `1024` is smaller than the page size"),
            ("[agent]\nring_buffer_bytes = \"big\"\n", "agent.ring_buffer_bytes: invalid type: string \"big\""),
            ("[agent]\nproc_files = [\"environ\", \"stack\"]\n", "agent.proc_files[1]: unknown variant `stack`"),
            ("[agent]\nstate_dir = \"var/lib\"\n", "agent.state_dir: `var/lib` is not an absolute path"),
            ("[agnt]\n", "agnt: unknown field `agnt`"),
            ("unwatch = [\"/etc/nothing\"]\n", "unwatch[0]: `/etc/nothing` matches no default watch path"),
            ("default_watches = false\nunwatch = [\"/etc/shadow\"]\n", "unwatch: has no effect"),
            ("[[owner]]\nowner = \"web\"\n", "owner[0]: needs at least one of"),
            ("[[owner]]\nowner = \"web\"\nexe = \"/usr/bin/[\"\n", "owner[0].exe: `/usr/bin/[`: bad glob"),
            ("[[owner]]\nunit = \"a\"\nowner = \" \"\n", "owner[0].owner: is empty"),
            ("[[watch]\n", "line 1, column"),
            ("[tpm]\npcr = 16\n", "tpm.pcr: pcr 16 can be reset by any local root"),
            ("[tpm]\nquote_period = \"soon\"\n", "tpm.quote_period: `soon` is not a duration"),
            ("[tpm]\nnv_index = 5\n", "tpm.nv_index: nv_index 0x00000005 is not an NV index"),
            ("[tpm]\ntcti = \"tpm0\"\n", "tpm.tcti: tcti \"tpm0\": expected device:"),
            ("[tpm]\nqueue_depth = 0\n", "tpm.queue_depth: queue_depth 0 is outside"),
            ("[tpm]\nquote = 1\n", "tpm.quote: unknown field `quote`"),
        ];
        for (text, expected) in cases {
            let e = error(text);
            assert!(
                e.starts_with(expected),
                "for {text:?}\n got: {e}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn errors_name_the_file() {
        let e = Config::load(Some(Path::new("/nonexistent/x.toml")))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config /nonexistent/x.toml: cannot read:"),
            "{e}"
        );
        let e = load_text("[[watch]]\npath = \"etc/shadow\"\nkind = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config /")
                && e.contains("agent.toml: watch[0].path: `etc/shadow` is not an absolute path"),
            "{e}"
        );
    }
}
