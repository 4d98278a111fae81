//! Output stage: one JSON object per line on stdout (`--output json`), or nothing.

use std::io::{BufWriter, Write};

use sensor_log::Event;
use tokio::sync::mpsc;

use super::Batch;
use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per line on stdout.
    Json,
    /// No event output (the log and `sensorctl` are the way to read events).
    None,
}

impl OutputFormat {
    /// As `--output` spells it.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Json => "json",
            OutputFormat::None => "none",
        }
    }
}

pub struct OutputStage {
    format: OutputFormat,
}

impl OutputStage {
    pub fn new(format: OutputFormat) -> Self {
        OutputStage { format }
    }

    /// Writes until `input` closes; blocking, so it runs on its own thread. Output is
    /// flushed whenever the queue runs dry, so a reader sees each event promptly without a
    /// write per event under load.
    pub fn run(self, mut input: mpsc::Receiver<Batch<Event>>) -> Result<(), Error> {
        let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout());
        while let Some(batch) = input.blocking_recv() {
            if self.format == OutputFormat::Json {
                for event in &batch {
                    serde_json::to_writer(&mut out, event).map_err(|e| Error::Output(e.into()))?;
                    out.write_all(b"\n").map_err(Error::Output)?;
                }
                if input.is_empty() {
                    out.flush().map_err(Error::Output)?;
                }
            }
        }
        out.flush().map_err(Error::Output)
    }
}
