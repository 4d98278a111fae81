//! `sensor-agent probe`: which way each probe attaches on this kernel, without running the
//! agent (the VM lane's table, a check before a rollout).

use crate::{
    config::Config,
    probes::{preflight, LoadOptions, ModeChoice, Probes},
    Error,
};

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// As `run --probe-mode`; a forced mode that does not load is an error.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub probe_mode: ModeChoice,
}

/// Prints one line per probe: its name, the mode it took (`unavailable` for an optional
/// probe that did not attach) and its hooks.
pub fn probe(args: ProbeArgs) -> Result<(), Error> {
    preflight::check()?;
    let config = Config::load(None)?;
    let probes = Probes::load(&LoadOptions {
        // The smallest ring buffer: nothing is read.
        ring_buffer_bytes: u32::try_from(rustix::param::page_size()).unwrap_or(4096),
        proc_files: config.proc_files_mask(),
        budget_per_second: config.agent.budget_per_second,
        budget_burst: config.agent.budget_burst,
        fold_window: config.agent.fold_window,
        kernel_log_level: 0,
        mode: args.probe_mode,
    })?;
    for s in &probes.status {
        println!("{} {} {}", s.probe, s.mode, s.hook);
        if let Some(note) = &s.note {
            eprintln!("{}: {note}", s.probe);
        }
    }
    Ok(())
}
