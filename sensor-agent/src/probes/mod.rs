//! Loading the kernel programs, attaching them, and keeping the watched-set maps in sync.
//!
//! Each probe is a row of [`PROBES`]: what it reports and the hook that implements it. Today
//! every probe has one implementation, on raw tracepoints, which every BTF kernel accepts.
//! Stronger hooks (BPF LSM `file_open`, fentry, kprobes) are added later as further
//! candidates per row, chosen by probing the running kernel.

pub mod offsets;
pub mod preflight;
pub mod sync;

use std::path::Path;

use aya::{
    programs::{BtfTracePoint, ProgramError, RawTracePoint},
    Btf, Ebpf, EbpfLoader,
};
use sensor_common::{SensorConfig, CONFIG_GLOBAL, EVENTS, OFFSETS_GLOBAL};
use serde::Serialize;

use crate::Error;

/// The eBPF object, built by `cargo xtask build` and embedded at compile time; an empty
/// placeholder when the agent was compiled before it existed (see build.rs).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SENSOR_EBPF_OBJECT"));

/// The embedded object, or the error that says how to get one. [`preflight::check`] asks
/// first, so an agent compiled without it stops before it writes anything.
pub fn embedded_object() -> Result<&'static [u8], Error> {
    ebpf_object(EBPF_OBJECT, cfg!(sensor_ebpf_placeholder))
}

fn ebpf_object(object: &'static [u8], placeholder: bool) -> Result<&'static [u8], Error> {
    if placeholder {
        return Err(Error::NoEbpfObject);
    }
    Ok(object)
}

/// A probe: what it reports, the program that implements it and where that attaches.
pub struct Probe {
    /// What the probe reports, as shown in the start-up log and `status`.
    pub reports: &'static str,
    pub program: &'static str,
    pub hook: Hook,
    pub tracepoint: &'static str,
    /// Whether the agent can run without it (a kernel without io_uring has nothing to flag).
    pub optional: bool,
}

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `tp_btf`: typed arguments, read with plain loads; used where the program runs often.
    BtfTracepoint,
    RawTracepoint,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::BtfTracepoint => "tp_btf",
            Hook::RawTracepoint => "raw_tracepoint",
        }
    }
}

pub const PROBES: &[Probe] = &[
    Probe {
        reports: "file_open, proc_access and credential syscalls",
        program: "syscalls_sys_exit",
        hook: Hook::BtfTracepoint,
        tracepoint: "sys_exit",
        optional: false,
    },
    Probe {
        reports: "exec of a new image (exe path, argv), for attribution",
        program: "lifecycle_sched_process_exec",
        hook: Hook::RawTracepoint,
        tracepoint: "sched_process_exec",
        optional: false,
    },
    Probe {
        reports: "new processes (not threads)",
        program: "lifecycle_sched_process_fork",
        hook: Hook::RawTracepoint,
        tracepoint: "sched_process_fork",
        optional: false,
    },
    Probe {
        reports: "exit of a thread-group leader",
        program: "lifecycle_sched_process_exit",
        hook: Hook::RawTracepoint,
        tracepoint: "sched_process_exit",
        optional: false,
    },
    Probe {
        reports: "io_uring opens",
        program: "io_uring_submit_req",
        hook: Hook::RawTracepoint,
        tracepoint: "io_uring_submit_req",
        optional: true,
    },
];

/// How one probe is running, for the start-up log and `sensorctl status`.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeStatus {
    pub probe: &'static str,
    pub reports: &'static str,
    /// `tracepoint` when attached, `unavailable` when an optional probe could not attach.
    pub mode: &'static str,
    pub hook: String,
    pub note: Option<String>,
}

/// Takes a hash map out of the loaded object, for a stage to own.
pub fn take_hash_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<aya::maps::HashMap<aya::maps::MapData, K, V>, Error> {
    let map = ebpf.take_map(name).ok_or(Error::MissingMap(name))?;
    aya::maps::HashMap::try_from(map).map_err(|e| Error::Map {
        map: name,
        reason: e.to_string(),
    })
}

/// Settings that are fixed when the programs load.
pub struct LoadOptions {
    pub ring_buffer_bytes: u32,
    /// `PROC_*` bits.
    pub proc_files: u32,
    /// Each identity's budget: events a second, and the largest burst.
    pub budget_per_second: u32,
    pub budget_burst: u32,
    /// `None`: every access is sent.
    pub fold_window: Option<std::time::Duration>,
    /// In-kernel aya-log level (0 = off): kernel diagnostics stay off the hot path by default.
    pub kernel_log_level: u8,
}

/// The loaded and attached programs.
pub struct Probes {
    pub ebpf: Ebpf,
    pub status: Vec<ProbeStatus>,
}

impl Probes {
    /// Loads and attaches every probe; [`preflight::check`] should have passed first.
    pub fn load(options: &LoadOptions) -> Result<Probes, Error> {
        let object = embedded_object()?;
        let offsets = offsets::from_btf(Path::new(offsets::VMLINUX_BTF))?;
        // GCRA: one event per interval, up to `burst - 1` intervals ahead of time.
        let interval = match options.budget_per_second {
            0 => 0,
            rate => (1_000_000_000 / u64::from(rate)).max(1),
        };
        let config = SensorConfig {
            agent_tgid: std::process::id(),
            proc_files: options.proc_files,
            budget_interval_ns: interval,
            budget_tolerance_ns: interval * u64::from(options.budget_burst.max(1) - 1),
            fold_window_ns: options.fold_window.map_or(0, |w| {
                u64::try_from(w.as_nanos()).unwrap_or(u64::MAX).max(1)
            }),
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(OFFSETS_GLOBAL, &offsets, true)
            .override_global(CONFIG_GLOBAL, &config, true)
            .override_global(aya_log::LEVEL, &options.kernel_log_level, false)
            .map_max_entries(EVENTS, options.ring_buffer_bytes)
            .load(object)
            .map_err(|e| Error::Load(format!("{e:#}")))?;
        let btf = Btf::from_sys_fs().map_err(|e| Error::Btf {
            path: offsets::VMLINUX_BTF.into(),
            reason: e.to_string(),
        })?;
        let mut status = Vec::with_capacity(PROBES.len());
        for probe in PROBES {
            let hook = format!("{}/{}", probe.hook.name(), probe.tracepoint);
            match attach(&mut ebpf, &btf, probe) {
                Ok(()) => status.push(ProbeStatus {
                    probe: probe.program,
                    reports: probe.reports,
                    mode: "tracepoint",
                    hook,
                    note: None,
                }),
                Err(e) if probe.optional => status.push(ProbeStatus {
                    probe: probe.program,
                    reports: probe.reports,
                    mode: "unavailable",
                    hook,
                    note: Some(e.to_string()),
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(Probes { ebpf, status })
    }
}

fn attach(ebpf: &mut Ebpf, btf: &Btf, probe: &Probe) -> Result<(), Error> {
    let fail = |reason: String| Error::Attach {
        probe: probe.program,
        hook: probe.tracepoint,
        reason,
    };
    let refused = |e: ProgramError| fail(format!("the kernel refused it: {}", describe(&e)));
    let program = ebpf
        .program_mut(probe.program)
        .ok_or_else(|| fail("the program is missing from the eBPF object".into()))?;
    match probe.hook {
        Hook::BtfTracepoint => {
            let program: &mut BtfTracePoint = program.try_into().map_err(refused)?;
            program.load(probe.tracepoint, btf).map_err(refused)?;
            program.attach().map_err(refused)?;
        }
        Hook::RawTracepoint => {
            let program: &mut RawTracePoint = program.try_into().map_err(refused)?;
            program.load().map_err(refused)?;
            program.attach(probe.tracepoint).map_err(refused)?;
        }
    }
    Ok(())
}

/// The error with the verifier's last lines when it refused a program.
fn describe(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{io_error}; verifier: {}", tail.join(" | "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_compiled_without_the_object_refuses_to_load_and_names_the_fix() {
        let e = ebpf_object(&[], true).expect_err("a placeholder must not load");
        assert!(
            e.to_string().contains("`cargo xtask build`"),
            "unclear error: {e}"
        );
    }

    /// `cargo xtask build` (and so `cargo xtask test`) builds sensor-ebpf before the agent:
    /// the real object must be what gets embedded, never the placeholder.
    #[test]
    fn the_built_object_is_embedded() {
        let object = embedded_object().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(object.get(..4), Some(&b"\x7fELF"[..]), "not an ELF object");
    }
}
