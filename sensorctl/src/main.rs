//! `sensorctl`: query and verify the agent's local log. A thin binary over `sensor-store`
//! and `sensor-log`;
//! it opens the store read-only, so it is safe to run while the agent writes.

#[macro_use]
extern crate sensor_view;

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sensorctl",
    version,
    about = "Query and verify the credential-access sensor's local log"
)]
struct Cli {
    /// The agent's state directory.
    #[arg(long, global = true, default_value = "/var/lib/sensor-agent")]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List logged events (and log-internal records), oldest first.
    Events(commands::events::Args),
    /// Every identity seen, with the credentials it accessed.
    Identities(commands::identities::Args),
    /// Check signatures, chain, Merkle roots and sequence; exit 1 naming the first failure.
    Verify(commands::verify::Args),
    /// Write the log's signed bytes to a batch file, to verify elsewhere with `verify --file`.
    Export(commands::export::Args),
    /// Whether the agent runs, its probe modes and counters, and the log's head.
    Status,
    /// Signing key commands.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print the current public key (hex) and key epoch.
    Show,
}

/// How a command failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad arguments or a missing state directory: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The log failed verification, or could not be read: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl From<sensor_store::Error> for Failure {
    fn from(e: sensor_store::Error) -> Failure {
        match e {
            sensor_store::Error::NoStore(_) => Failure::Usage(e.to_string()),
            other => Failure::Failed(other.to_string()),
        }
    }
}

impl From<sensor_view::events::BadArgument> for Failure {
    fn from(e: sensor_view::events::BadArgument) -> Failure {
        Failure::Usage(e.0)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = &cli.state_dir;
    let result = match cli.command {
        Command::Events(args) => commands::events::run(dir, &args),
        Command::Identities(args) => commands::identities::run(dir, &args),
        Command::Verify(args) => commands::verify::run(dir, &args),
        Command::Export(args) => commands::export::run(dir, &args),
        Command::Status => commands::status::run(dir),
        Command::Key {
            command: KeyCommand::Show,
        } => commands::key::show(dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("sensorctl: {e}");
            ExitCode::from(match e {
                Failure::Usage(_) => 2,
                Failure::Failed(_) => 1,
            })
        }
    }
}
