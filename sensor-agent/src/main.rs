//! `sensor-agent`: a thin CLI over the agent library.

use clap::{Parser, Subcommand};
use sensor_agent::commands;

#[derive(Parser)]
#[command(
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
    Run(commands::run::RunArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    commands::init_logging();
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sensor-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
