//! `sensor-collector serve --config FILE`: TOML, every key checked, each error naming the
//! file and the key (docs/collector.md, "Configuration").

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use sensor_log::forward::{DEFAULT_MAX_MESSAGE, HARD_MAX_MESSAGE};
use serde::Deserialize;

/// Where host keys come from the first time a host is seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enrollment {
    /// Only hosts an operator approved (`sensor-collector hosts approve`) are served.
    #[default]
    Approve,
    /// A host not yet known is pinned with the key its hello announces, and that is logged.
    FirstContact,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Told to agents in the welcome, for their status.
    pub name: String,
    pub store: String,
    pub enrollment: Enrollment,
    /// A host silent for longer is reported (`silent` alarm).
    pub heartbeat_timeout: Duration,
    /// Store connections verifying and committing in parallel (PostgreSQL; SQLite has one
    /// writer).
    pub workers: usize,
    pub tls: TlsFiles,
    pub max_message: u32,
    pub max_records: u32,
    pub window: u16,
    pub max_sessions: usize,
    /// Where Prometheus scrapes `/metrics`; `None` when switched off.
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signs hosts' client certificates.
    pub client_ca: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: String,
    name: Option<String>,
    store: Option<String>,
    #[serde(default)]
    enrollment: Enrollment,
    heartbeat_timeout: Option<String>,
    workers: Option<usize>,
    metrics_listen: Option<String>,
    tls: TlsFiles,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message: Option<u32>,
    max_records: Option<u32>,
    window: Option<u16>,
    max_sessions: Option<usize>,
}

pub const DEFAULT_STORE: &str = "sqlite:/var/lib/sensor-collector/collector.db";
/// Five heartbeat intervals of an agent sealing a batch every second.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_RECORDS: u32 = 65_536;
pub const DEFAULT_WINDOW: u16 = 64;
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
const DEFAULT_WORKERS: usize = 4;
/// Localhost only unless configured otherwise: metrics name hosts and their alarms.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9465";

#[derive(Debug, thiserror::Error)]
#[error("config {file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl Config {
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            message: e.to_string(),
        })?;
        Config::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let error = |key: &str, message: String| ConfigError {
            file: file.to_owned(),
            key: key.to_owned(),
            message,
        };
        let raw: Raw =
            serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
                let key = e.path().to_string();
                error(
                    &key,
                    e.into_inner().message().trim_end().replace('\n', "; "),
                )
            })?;
        let listen = raw.listen.parse().map_err(|e| {
            error(
                "listen",
                format!("`{}`: {e} (want ADDRESS:PORT)", raw.listen),
            )
        })?;
        let heartbeat_timeout = match &raw.heartbeat_timeout {
            None => DEFAULT_HEARTBEAT_TIMEOUT,
            Some(t) => humantime::parse_duration(t)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    error(
                        "heartbeat_timeout",
                        format!("`{t}` is not a duration like \"5s\""),
                    )
                })?,
        };
        let max_message = raw.limits.max_message.unwrap_or(DEFAULT_MAX_MESSAGE);
        if !(1024..=HARD_MAX_MESSAGE).contains(&max_message) {
            return Err(error(
                "limits.max_message",
                format!("{max_message} is outside 1024..={HARD_MAX_MESSAGE}"),
            ));
        }
        let positive = |key: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(error(key, "must be at least 1".into())),
            v => Ok(v.unwrap_or(default)),
        };
        let metrics_listen = match raw
            .metrics_listen
            .as_deref()
            .unwrap_or(DEFAULT_METRICS_LISTEN)
        {
            "off" => None,
            text => Some(text.parse().map_err(|e| {
                error(
                    "metrics_listen",
                    format!("`{text}`: {e} (want ADDRESS:PORT or \"off\")"),
                )
            })?),
        };
        let store = raw.store.unwrap_or_else(|| DEFAULT_STORE.to_owned());
        let workers = positive("workers", raw.workers, DEFAULT_WORKERS)?;
        Ok(Config {
            listen,
            name: raw.name.unwrap_or_else(|| "sensor-collector".to_owned()),
            workers: if store.starts_with("sqlite:") {
                1
            } else {
                workers
            },
            store,
            enrollment: raw.enrollment,
            heartbeat_timeout,
            tls: raw.tls,
            max_message,
            max_records: positive(
                "limits.max_records",
                raw.limits.max_records.map(|v| v as usize),
                DEFAULT_MAX_RECORDS as usize,
            )? as u32,
            window: positive(
                "limits.window",
                raw.limits.window.map(usize::from),
                usize::from(DEFAULT_WINDOW),
            )? as u16,
            max_sessions: positive(
                "limits.max_sessions",
                raw.limits.max_sessions,
                DEFAULT_MAX_SESSIONS,
            )?,
            metrics_listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "listen = \"127.0.0.1:7443\"\n[tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n";

    #[test]
    fn defaults_fill_what_is_unset() {
        let c = Config::parse(MINIMAL, "f").expect("parses");
        assert_eq!(c.store, DEFAULT_STORE);
        assert_eq!(c.enrollment, Enrollment::Approve);
        assert_eq!(c.heartbeat_timeout, DEFAULT_HEARTBEAT_TIMEOUT);
        assert_eq!(c.workers, 1, "SQLite has one writer");
        assert_eq!(c.max_message, DEFAULT_MAX_MESSAGE);
    }

    /// Every error names the key at fault.
    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "listen = \"nowhere\"\n[tls]\ncert=\"c\"\nkey=\"k\"\nclient_ca=\"a\"",
                "listen",
            ),
            (&format!("enrollment = \"anyone\"\n{MINIMAL}"), "enrollment"),
            (
                &format!("heartbeat_timeout = \"soon\"\n{MINIMAL}"),
                "heartbeat_timeout",
            ),
            (
                &format!("{MINIMAL}[limits]\nmax_message = 64\n"),
                "limits.max_message",
            ),
            (&format!("{MINIMAL}[limits]\nwindow = 0\n"), "limits.window"),
            (
                &format!("{MINIMAL}[limits]\nmax_mesage = 64\n"),
                "limits.max_mesage",
            ),
            (
                &format!("metrics_listen = \"everywhere\"\n{MINIMAL}"),
                "metrics_listen",
            ),
            (
                "listen = \"127.0.0.1:1\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n",
                "tls",
            ),
        ];
        for (text, key) in cases {
            let e = Config::parse(text, "f.toml").expect_err(text);
            assert_eq!(e.key, key, "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("config f.toml: {key}: ")),
                "{e}"
            );
        }
    }
}
