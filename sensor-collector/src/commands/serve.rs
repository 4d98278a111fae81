//! `sensor-collector serve --config FILE`.

use std::path::PathBuf;

use sensor_collector::config::Config;

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The collector's configuration (docs/collector.md, "Configuration").
    #[arg(long)]
    config: PathBuf,
}

pub fn run(args: &Args) -> Result<(), Failure> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = Config::load(&args.config).map_err(|e| Failure::Usage(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("cannot start the runtime: {e}")))?;
    runtime
        .block_on(sensor_collector::serve::serve(config))
        .map_err(|e| Failure::Failed(e.to_string()))
}
