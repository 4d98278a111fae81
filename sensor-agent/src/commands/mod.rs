//! One module per subcommand.

pub mod run;

/// Diagnostics go to stderr (stdout carries events); `RUST_LOG` overrides the level.
/// tss-esapi logs an ERROR for every handle it probes for and does not find (the AK and the
/// NV counter on a first start); sensor-tpm's errors carry the TPM's answer, so it is off.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tss_esapi=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
