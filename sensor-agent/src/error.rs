//! The agent's error type: each variant says what is wrong and how to fix it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),

    #[error(
        "the agent needs root, or CAP_BPF with CAP_PERFMON (or CAP_SYS_ADMIN), \
         to load its kernel probes: run it as root (e.g. `sudo sensor-agent run`) or as the \
         packaged systemd service"
    )]
    NotPrivileged,

    #[error(
        "this kernel exposes no BTF type information at /sys/kernel/btf/vmlinux, which the \
         agent needs to read kernel structures portably: use a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (the default on current Debian, Ubuntu, RHEL and Fedora)"
    )]
    NoBtf,

    #[error("reading kernel type information from {path}: {reason}")]
    Btf { path: PathBuf, reason: String },

    #[error("the running kernel's BTF has no {what}, which the probes read: {hint}")]
    MissingKernelField { what: String, hint: &'static str },

    #[error("the kernel refused to load the eBPF programs: {0}")]
    Load(String),

    #[error(
        "this sensor-agent was compiled without its eBPF programs (the sensor-ebpf object did \
         not exist yet): build it with `cargo xtask build`"
    )]
    NoEbpfObject,

    #[error("attaching probe {probe}: {reason}")]
    Attach { probe: &'static str, reason: String },

    #[error(
        "eBPF map {0} is missing from the object: the agent and its eBPF object are out of step"
    )]
    MissingMap(&'static str),

    #[error("eBPF map {map}: {reason}")]
    Map { map: &'static str, reason: String },

    /// Some updates of the watched-set maps failed; the others were applied, and the next
    /// refresh retries these.
    #[error(
        "{failed} watched-set map updates failed, the first in {map}: {source}{}",
        std::error::Error::source(source).map(|e| format!(": {e}")).unwrap_or_default()
    )]
    WatchSync {
        failed: usize,
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("watching the credential paths: {0}")]
    Watch(String),

    #[error("the local log: {0}")]
    Log(#[source] sensor_store::Error),

    /// `[forward]` cannot be used: a certificate or key that does not load, or one that names
    /// another host than the log's.
    #[error("forward.{key}: {reason}")]
    Forward { key: &'static str, reason: String },

    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),

    #[error("the {stage} stage of the pipeline failed, so the agent stopped: {reason}")]
    Stage { stage: &'static str, reason: String },

    #[error("{0}")]
    Io(#[from] std::io::Error),
}
