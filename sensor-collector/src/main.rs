//! `sensor-collector`: a thin binary over the crate: `serve`, and the operator's commands on
//! the store (`hosts`, `hosts approve`, `events`, `verify`, `db init`).

#[macro_use]
extern crate sensor_view;

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sensor-collector",
    version,
    about = "Keep and verify the signed logs hosts forward"
)]
struct Cli {
    /// The store: `sqlite:PATH`, or a PostgreSQL connection string
    /// (`postgresql://USER@HOST/DB`, `host=… user=… dbname=…`).
    #[arg(
        long,
        global = true,
        default_value = "sqlite:/var/lib/sensor-collector/collector.db"
    )]
    store: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive hosts' batches over mutually authenticated TLS, verify and keep them.
    Serve(commands::serve::Args),
    /// Enrolled hosts, what is held for each, and their alarms.
    Hosts {
        #[command(subcommand)]
        command: Option<commands::hosts::HostsCommand>,
    },
    /// List the fleet's verified events (and log-internal records), host by host in the order
    /// they arrived, with the filters of `sensorctl events` plus --host.
    Events(commands::events::Args),
    /// Every alarm raised (fork, new log, gap, bad signature, TPM, silent, …), host by host,
    /// oldest first.
    Alarms(commands::alarms::Args),
    /// Verify every batch held, host by host, with the agent's own verifier; exit 1 naming
    /// the first failure.
    Verify(commands::verify::Args),
    /// The store's schema.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create the schema (PostgreSQL: as the database's owner) and grant the role collectors
    /// connect as what they need, and no more: event rows stay append-only.
    Init {
        /// The collectors' role (PostgreSQL).
        #[arg(long)]
        grant: Option<String>,
    },
}

/// How a command failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad arguments: exit 2.
    #[error("{0}")]
    Usage(String),
    /// Verification failed, or the store could not be read: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl From<sensor_collector::Error> for Failure {
    fn from(e: sensor_collector::Error) -> Failure {
        Failure::Failed(e.to_string())
    }
}

impl From<sensor_view::events::BadArgument> for Failure {
    fn from(e: sensor_view::events::BadArgument) -> Failure {
        Failure::Usage(e.0)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Db {
            command: DbCommand::Init { grant },
        } => sensor_collector::store::init(&cli.store, grant.as_deref())
            .map_err(Failure::from)
            .map(|()| outln!("schema ready in {}", cli.store)),
        Command::Serve(args) => commands::serve::run(&args),
        Command::Hosts { command } => commands::open(&cli.store)
            .and_then(|mut store| commands::hosts::run(store.as_mut(), command)),
        Command::Events(args) => commands::open(&cli.store)
            .and_then(|mut store| commands::events::run(store.as_mut(), &args)),
        Command::Alarms(args) => commands::open(&cli.store)
            .and_then(|mut store| commands::alarms::run(store.as_mut(), &args)),
        Command::Verify(args) => commands::open(&cli.store)
            .and_then(|mut store| commands::verify::run(store.as_mut(), &args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("sensor-collector: {e}");
            ExitCode::from(match e {
                Failure::Usage(_) => 2,
                Failure::Failed(_) => 1,
            })
        }
    }
}

/// Parses a host id given as 32 hex digits.
fn host_id(text: &str) -> Result<sensor_log::record::HostId, Failure> {
    sensor_log::hex::decode_array::<16>(text, "host id")
        .map_err(|e| Failure::Usage(format!("invalid host id: {e}")))
}
