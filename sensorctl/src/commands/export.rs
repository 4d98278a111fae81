//! `sensorctl export FILE`: the log's signed bytes as a batch file, to keep off the host and
//! check anywhere with `sensorctl verify --file FILE` (docs/log-format.md, "Batch files").

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write; an existing file is never overwritten.
    file: PathBuf,
}

pub fn run(state_dir: &Path, args: &Args) -> Result<(), Failure> {
    let store = super::open(state_dir)?;
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&args.file)
        .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", args.file.display())))?;
    let (out, exported) = store.export(BufWriter::new(file))?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(|e| Failure::Failed(format!("writing {}: {e}", args.file.display())))?;
    outln!(
        "exported {} batches and {} records to {} (not verified: run sensorctl verify --file)",
        exported.batches,
        exported.records,
        args.file.display()
    );
    Ok(())
}
