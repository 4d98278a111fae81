//! One module per subcommand, and the CLI over them.

use clap::{Parser, Subcommand};

pub mod probe;
pub mod run;

#[derive(Parser)]
#[command(
    name = "sensor-agent",
    version,
    about = "Reports every access to credential material on this host, attributed to its identity"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the kernel probes and report credential access until stopped.
    Run(run::RunArgs),
    /// Load and attach the probes as `run` would, print the mode each took, and detach.
    Probe(probe::ProbeArgs),
}

/// The `sensor-agent` command line; in the library so that the fault-injection test build is
/// the same program under another name.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Probe(args) => probe::probe(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sensor-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Diagnostics go to stderr (stdout carries events); `RUST_LOG` overrides the level.
/// tss-esapi logs an ERROR for every handle it probes for and does not find (the AK and the
/// NV counter on a first start); sensor-tpm's errors carry the TPM's answer, so it is off.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tss_esapi=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
