//! Loading the kernel programs, attaching them, and keeping the watched-set maps in sync.
//!
//! Each probe is a row of [`PROBES`]: what it reports and its ways of attaching, strongest
//! first (BPF LSM, fentry/fexit, kprobes, tracepoints; docs/probes.md "Probe modes"). The
//! agent takes, per probe, the strongest way the running kernel loads and attaches, found
//! by trying it, never by the kernel's version; `--probe-mode` forces one.

pub mod offsets;
pub mod preflight;
pub mod sync;

use std::{collections::BTreeSet, path::Path};

use aya::{
    maps::Array,
    programs::{BtfTracePoint, FExit, KProbe, Lsm, Program, ProgramError, RawTracePoint},
    Btf, BtfError, Ebpf, EbpfLoader,
};
use sensor_common::{
    syscall::{self, Watched},
    SensorConfig, CONFIG_GLOBAL, EVENTS, HOOKS, OFFSETS_GLOBAL, OPENS_BY_HOOK, SYSCALLS_BY_HOOK,
};
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

/// How a probe attaches, strongest first: the hooks before [`ProbeMode::Tracepoint`] run
/// only on the kernel functions they watch, so the rest of the system pays nothing.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    clap::ValueEnum,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ProbeMode {
    /// BPF LSM programs (`lsm=...,bpf` on the kernel command line).
    Lsm,
    /// fentry/fexit programs (BPF trampolines).
    Fentry,
    Kprobe,
    /// Tracepoints, which every BTF kernel accepts: complete on its own, but the `sys_exit`
    /// tracepoint puts every syscall of the host on the kernel's slow path.
    Tracepoint,
}

impl ProbeMode {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// `--probe-mode` (and `[agent] probe_mode`): which way each probe attaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModeChoice {
    /// The strongest way the kernel loads, per probe.
    #[default]
    Auto,
    /// This mode for every probe, or its strongest weaker way where it has none; a way
    /// that does not load is an error, not a fallback (tests, a kernel with a broken hook).
    Force(ProbeMode),
}

impl std::str::FromStr for ModeChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(ModeChoice::Auto);
        }
        <ProbeMode as clap::ValueEnum>::from_str(s, false)
            .map(ModeChoice::Force)
            .map_err(|_| format!("`{s}` is not one of auto, lsm, fentry, kprobe, tracepoint"))
    }
}

/// A probe: what it reports and its ways of attaching, strongest first.
pub struct Probe {
    pub name: &'static str,
    /// What the probe reports, as shown in the start-up log and `status`.
    pub reports: &'static str,
    pub ways: &'static [Way],
    /// Whether the agent can run without it (a kernel without io_uring has nothing to flag).
    pub optional: bool,
}

/// One way of attaching a probe: every program of it attaches, or the way is not taken.
pub struct Way {
    pub mode: ProbeMode,
    pub attach: &'static [Attach],
}

/// A program and where it attaches.
#[derive(Clone, Copy, Debug)]
pub enum Attach {
    /// `tp_btf`: typed arguments, read with plain loads; used where the program runs often.
    BtfTracepoint {
        program: &'static str,
        tracepoint: &'static str,
    },
    RawTracepoint {
        program: &'static str,
        tracepoint: &'static str,
    },
    /// A raw tracepoint whose first arguments must have the types `params` in this kernel
    /// (see [`offsets::tracepoint_takes`]).
    RawTracepointTaking {
        program: &'static str,
        tracepoint: &'static str,
        params: &'static [&'static str],
    },
    Lsm {
        program: &'static str,
        hook: &'static str,
    },
    FExit {
        program: &'static str,
        function: &'static str,
    },
    /// The first of `programs` whose parameters (C spelling, as
    /// [`offsets::function_takes`] compares them) are `function`'s in the running kernel, as
    /// an fexit program on it: an fexit program reads the result after the arguments.
    FExitTaking {
        function: &'static str,
        programs: &'static [(&'static str, &'static [&'static str])],
    },
    /// An entry kprobe or a kretprobe (the program's section says which) on each function.
    KProbe {
        program: &'static str,
        functions: &'static [&'static str],
    },
    KRetProbe {
        program: &'static str,
        functions: &'static [&'static str],
    },
    /// An fexit program per reported syscall but the opens, on each entry point
    /// (`syscalls_fexit_<name>`, `syscalls_fexit_ia32_<name>`).
    SyscallFExits,
    /// One entry kprobe or kretprobe (the program's section says which) on the entry points
    /// of every reported syscall but the opens.
    SyscallKProbes {
        program: &'static str,
    },
    SyscallKRetProbes {
        program: &'static str,
    },
}

impl Attach {
    fn describe(self) -> String {
        match self {
            Attach::BtfTracepoint { tracepoint, .. } => format!("tp_btf/{tracepoint}"),
            Attach::RawTracepoint { tracepoint, .. }
            | Attach::RawTracepointTaking { tracepoint, .. } => {
                format!("raw_tracepoint/{tracepoint}")
            }
            Attach::Lsm { hook, .. } => format!("lsm/{hook}"),
            Attach::FExit { function, .. } | Attach::FExitTaking { function, .. } => {
                format!("fexit/{function}")
            }
            Attach::KProbe { functions, .. } => format!("kprobe/{}", functions.join(",")),
            Attach::KRetProbe { functions, .. } => format!("kretprobe/{}", functions.join(",")),
            Attach::SyscallFExits => "fexit/__x64_sys_*,__ia32_*sys_*".into(),
            Attach::SyscallKProbes { .. } => "kprobe/__x64_sys_*,__ia32_*sys_*".into(),
            Attach::SyscallKRetProbes { .. } => "kretprobe/__x64_sys_*,__ia32_*sys_*".into(),
        }
    }
}

/// The tracepoint mode of opens and syscalls: one program on every syscall's exit.
const SYS_EXIT: Attach = Attach::BtfTracepoint {
    program: "syscalls_sys_exit",
    tracepoint: "sys_exit",
};

/// Opens that fail before the LSM hook (denied attempts) and `O_PATH` opens, which skip it.
const FILP_OPEN_EXIT: Attach = Attach::FExit {
    program: "file_fexit_do_filp_open",
    function: "do_filp_open",
};

/// `O_PATH` opens by file handle, which skip the LSM hook and `do_filp_open`.
const FILE_OPEN_ROOT_EXIT: Attach = Attach::FExitTaking {
    function: "do_file_open_root",
    programs: &[
        (
            "file_fexit_do_file_open_root",
            &["struct path *", "char *", "struct open_flags *"],
        ),
        (
            "file_fexit_do_file_open_root_dentry",
            &[
                "struct dentry *",
                "struct vfsmount *",
                "char *",
                "struct open_flags *",
            ],
        ),
    ],
};

/// The kernel's open path in kprobe mode: opens by path and by file handle.
const OPEN_PATH: &[&str] = &["do_filp_open", "do_file_open_root"];

/// The probe that reports opens: its name, for [`HOOKS`] bits.
const FILE_OPEN: &str = "file_open";
const SYSCALLS: &str = "syscalls";

pub const PROBES: &[Probe] = &[
    Probe {
        name: FILE_OPEN,
        reports: "file_open and proc_access (every open, denied attempts included)",
        ways: &[
            Way {
                mode: ProbeMode::Lsm,
                attach: &[
                    Attach::Lsm {
                        program: "file_lsm_file_open",
                        hook: "file_open",
                    },
                    FILP_OPEN_EXIT,
                    FILE_OPEN_ROOT_EXIT,
                ],
            },
            Way {
                mode: ProbeMode::Fentry,
                attach: &[
                    Attach::FExit {
                        program: "file_fexit_security_file_open",
                        function: "security_file_open",
                    },
                    FILP_OPEN_EXIT,
                    FILE_OPEN_ROOT_EXIT,
                ],
            },
            Way {
                mode: ProbeMode::Kprobe,
                // The kretprobe first: the entry kprobe's marks need it to clear them.
                attach: &[
                    Attach::KRetProbe {
                        program: "file_kretprobe_open",
                        functions: OPEN_PATH,
                    },
                    Attach::KProbe {
                        program: "file_kprobe_open",
                        functions: OPEN_PATH,
                    },
                ],
            },
            Way {
                mode: ProbeMode::Tracepoint,
                attach: &[SYS_EXIT],
            },
        ],
        optional: false,
    },
    Probe {
        name: SYSCALLS,
        reports: "credential syscalls, routes around them, renames, unlinks and links",
        ways: &[
            Way {
                mode: ProbeMode::Fentry,
                attach: &[Attach::SyscallFExits],
            },
            Way {
                mode: ProbeMode::Kprobe,
                // As for the opens: the kretprobe first.
                attach: &[
                    Attach::SyscallKRetProbes {
                        program: "syscalls_kretprobe",
                    },
                    Attach::SyscallKProbes {
                        program: "syscalls_kprobe",
                    },
                ],
            },
            Way {
                mode: ProbeMode::Tracepoint,
                attach: &[SYS_EXIT],
            },
        ],
        optional: false,
    },
    Probe {
        name: "exec",
        reports: "exec of a new image (exe path, argv), for attribution",
        ways: &[Way {
            mode: ProbeMode::Tracepoint,
            attach: &[Attach::RawTracepoint {
                program: "lifecycle_sched_process_exec",
                tracepoint: "sched_process_exec",
            }],
        }],
        optional: false,
    },
    Probe {
        name: "fork",
        reports: "new processes (not threads)",
        ways: &[Way {
            mode: ProbeMode::Tracepoint,
            attach: &[Attach::RawTracepoint {
                program: "lifecycle_sched_process_fork",
                tracepoint: "sched_process_fork",
            }],
        }],
        optional: false,
    },
    Probe {
        name: "exit",
        reports: "exit of a thread-group leader",
        ways: &[Way {
            mode: ProbeMode::Tracepoint,
            attach: &[Attach::RawTracepoint {
                program: "lifecycle_sched_process_exit",
                tracepoint: "sched_process_exit",
            }],
        }],
        optional: false,
    },
    Probe {
        name: "io_uring",
        reports: "io_uring opens, flagged at submission",
        ways: &[
            Way {
                mode: ProbeMode::Tracepoint,
                attach: &[Attach::RawTracepoint {
                    program: "io_uring_submit_req",
                    tracepoint: "io_uring_submit_req",
                }],
            },
            // Its name before 6.4: handed the request since 5.19...
            Way {
                mode: ProbeMode::Tracepoint,
                attach: &[Attach::RawTracepointTaking {
                    program: "io_uring_submit_req",
                    tracepoint: "io_uring_submit_sqe",
                    params: &["struct io_kiocb *"],
                }],
            },
            // ...the ring, the request and the opcode before (5.12 to 5.18, and 5.10 from
            // the backports of its later releases).
            Way {
                mode: ProbeMode::Tracepoint,
                attach: &[Attach::RawTracepointTaking {
                    program: "io_uring_submit_sqe",
                    tracepoint: "io_uring_submit_sqe",
                    params: &["void *", "void *", "u8", "u64"],
                }],
            },
        ],
        optional: true,
    },
];

/// The syscalls the syscalls hook attaches to (every reported one but the opens, and
/// `open_by_handle_at` for its failures), by kernel name, from the syscall table.
pub fn hooked_syscalls() -> Vec<&'static str> {
    let names: BTreeSet<&'static str> = (0..syscall::MAX_NR)
        .flat_map(|nr| [syscall::native(nr), syscall::compat(nr)])
        .flatten()
        .filter(|w| w.syscalls_hook_attaches())
        .map(Watched::name)
        .collect();
    names.into_iter().collect()
}

/// How one probe is running, for the start-up log and `sensorctl status`.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeStatus {
    pub probe: &'static str,
    pub reports: &'static str,
    /// The [`ProbeMode`] taken, or `unavailable` when an optional probe could not attach.
    pub mode: &'static str,
    pub hook: String,
    /// Why stronger ways were not taken (or, `unavailable`, why none was).
    pub note: Option<String>,
}

impl ProbeStatus {
    /// The start-up log's line for the probe.
    pub fn log(&self) {
        match (&self.note, self.mode) {
            (None, mode) => {
                tracing::info!(probe = self.probe, mode, hook = %self.hook, reports = self.reports, "probe attached")
            }
            (Some(note), "unavailable") => {
                tracing::warn!(probe = self.probe, %note, reports = self.reports, "probe not attached: this route is not reported")
            }
            (Some(note), mode) => {
                tracing::info!(probe = self.probe, mode, hook = %self.hook, reports = self.reports, refused = %note, "probe attached; the kernel refused its stronger hooks")
            }
        }
    }
}

/// Takes a map out of the loaded object as the type `M` (a hash map, an array, a per-CPU
/// array), for a stage to own.
pub fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, Error>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(Error::MissingMap(name))?;
    M::try_from(map).map_err(|e| Error::Map {
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
    pub mode: ModeChoice,
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
        let mut attacher = Attacher {
            ebpf: &mut ebpf,
            btf: &btf,
            attached: BTreeSet::new(),
            this_way: Vec::new(),
        };
        let mut status = Vec::with_capacity(PROBES.len());
        let mut by_hook = 0;
        for probe in PROBES {
            let s = attacher.probe(probe, options.mode)?;
            let bit = match probe.name {
                FILE_OPEN => OPENS_BY_HOOK,
                SYSCALLS => SYSCALLS_BY_HOOK,
                _ => 0,
            };
            if bit != 0 && s.mode != ProbeMode::Tracepoint.name() {
                // Set once the hook is attached: until then `sys_exit`, if attached, reports
                // these (an event twice at start, never none).
                by_hook |= bit;
                set_hooks(&mut ebpf_hooks(attacher.ebpf)?, by_hook)?;
            }
            status.push(s);
        }
        Ok(Probes { ebpf, status })
    }
}

fn ebpf_hooks(ebpf: &mut Ebpf) -> Result<Array<&mut aya::maps::MapData, u32>, Error> {
    let map = ebpf.map_mut(HOOKS).ok_or(Error::MissingMap(HOOKS))?;
    Array::try_from(map).map_err(|e| Error::Map {
        map: HOOKS,
        reason: e.to_string(),
    })
}

fn set_hooks(map: &mut Array<&mut aya::maps::MapData, u32>, bits: u32) -> Result<(), Error> {
    map.set(0, bits, 0).map_err(|e| Error::Map {
        map: HOOKS,
        reason: e.to_string(),
    })
}

/// Attaches probes' ways, each program at most once (two probes share `sys_exit`).
struct Attacher<'a> {
    ebpf: &'a mut Ebpf,
    btf: &'a Btf,
    attached: BTreeSet<String>,
    /// Programs the way being tried has loaded: unloaded if it fails, so a refused way
    /// leaves nothing attached beside the one taken (which would report events twice).
    this_way: Vec<String>,
}

impl Attacher<'_> {
    /// The first of `probe`'s ways that `mode` allows and the kernel attaches.
    fn probe(&mut self, probe: &'static Probe, mode: ModeChoice) -> Result<ProbeStatus, Error> {
        let allowed: Vec<&Way> = match mode {
            ModeChoice::Auto => probe.ways.iter().collect(),
            ModeChoice::Force(forced) => probe
                .ways
                .iter()
                .filter(|w| w.mode >= forced)
                .take_while({
                    let mut first = None;
                    move |w| *first.get_or_insert(w.mode) == w.mode
                })
                .collect(),
        };
        let mut refused = Vec::new();
        for way in allowed {
            let hook = way
                .attach
                .iter()
                .map(|a| a.describe())
                .collect::<Vec<_>>()
                .join(" + ");
            self.this_way.clear();
            let result = way.attach.iter().try_for_each(|a| self.attach(*a));
            if result.is_err() {
                self.undo_way();
            }
            match result {
                Ok(()) => {
                    return Ok(ProbeStatus {
                        probe: probe.name,
                        reports: probe.reports,
                        mode: way.mode.name(),
                        hook,
                        note: (!refused.is_empty()).then(|| refused.join("; ")),
                    })
                }
                Err(e) => refused.push(format!("{}: {e}", way.mode.name())),
            }
        }
        let why = if refused.is_empty() {
            "no way of attaching it in this mode".to_owned()
        } else {
            refused.join("; ")
        };
        if probe.optional {
            return Ok(ProbeStatus {
                probe: probe.name,
                reports: probe.reports,
                mode: "unavailable",
                hook: String::new(),
                note: Some(why),
            });
        }
        Err(Error::Attach {
            probe: probe.name,
            reason: why,
        })
    }

    fn attach(&mut self, attach: Attach) -> Result<(), String> {
        match attach {
            Attach::BtfTracepoint {
                program,
                tracepoint,
            } => self.once(program, |p, btf| {
                let p: &mut BtfTracePoint = p.try_into()?;
                p.load(tracepoint, btf)?;
                p.attach().map(drop)
            }),
            Attach::RawTracepoint {
                program,
                tracepoint,
            } => self.once(program, |p, _| {
                let p: &mut RawTracePoint = p.try_into()?;
                p.load()?;
                p.attach(tracepoint).map(drop)
            }),
            Attach::RawTracepointTaking {
                program,
                tracepoint,
                params,
            } => {
                if !offsets::tracepoint_takes(tracepoint, params) {
                    return Err(format!(
                        "{tracepoint} is not handed ({}) here",
                        params.join(", ")
                    ));
                }
                self.attach(Attach::RawTracepoint {
                    program,
                    tracepoint,
                })
            }
            Attach::Lsm { program, hook } => self.once(program, |p, btf| {
                let p: &mut Lsm = p.try_into()?;
                p.load(hook, btf)?;
                p.attach().map(drop)
            }),
            Attach::FExit { program, function } => self.once(program, |p, btf| {
                let p: &mut FExit = p.try_into()?;
                p.load(function, btf)?;
                p.attach().map(drop)
            }),
            Attach::FExitTaking { function, programs } => {
                let Some(&(program, _)) = programs
                    .iter()
                    .find(|(_, params)| offsets::function_takes(function, params))
                else {
                    return Err(format!(
                        "{function} takes none of the parameters its programs read"
                    ));
                };
                self.attach(Attach::FExit { program, function })
            }
            Attach::KProbe { program, functions } | Attach::KRetProbe { program, functions } => {
                self.once(program, |p, _| {
                    let p: &mut KProbe = p.try_into()?;
                    p.load()?;
                    functions.iter().try_for_each(|f| p.attach(*f, 0).map(drop))
                })
            }
            Attach::SyscallKProbes { program } | Attach::SyscallKRetProbes { program } => {
                self.once(program, |p, _| {
                    let p: &mut KProbe = p.try_into()?;
                    p.load()
                })?;
                let p: &mut KProbe = self
                    .ebpf
                    .program_mut(program)
                    .and_then(|p| p.try_into().ok())
                    .ok_or_else(|| format!("{program} is not a kprobe in the eBPF object"))?;
                for name in hooked_syscalls() {
                    let native = format!("__x64_sys_{name}");
                    p.attach(&native, 0).map_err(|e| {
                        format!(
                            "{program}: {native}: the kernel refused it: {} ({})",
                            describe(&e),
                            kallsyms_like(name)
                        )
                    })?;
                    // The ia32 entry is one of these two, or neither without
                    // IA32_EMULATION: the one that exists takes the probe.
                    for ia32 in ia32_entries(name) {
                        let _ = p.attach(ia32, 0);
                    }
                }
                Ok(())
            }
            Attach::SyscallFExits => {
                for name in hooked_syscalls() {
                    let native = format!("syscalls_fexit_{name}");
                    let entry = format!("__x64_sys_{name}");
                    if !self.fexit(&native, std::slice::from_ref(&entry))? {
                        // The native entry exists wherever the syscall does: missing from
                        // BTF (5.10 has no `__x64_sys_perf_event_open` there), it cannot
                        // take an fexit program.
                        return Err(format!(
                            "{native}: the kernel refused it: {entry} is not in its BTF"
                        ));
                    }
                    let ia32 = format!("syscalls_fexit_ia32_{name}");
                    self.fexit(&ia32, &ia32_entries(name))?;
                }
                Ok(())
            }
        }
    }

    /// Loads and attaches `program` unless it already is.
    fn once(
        &mut self,
        program: &'static str,
        load: impl FnOnce(&mut Program, &Btf) -> Result<(), ProgramError>,
    ) -> Result<(), String> {
        if self.attached.contains(program) {
            return Ok(());
        }
        let p = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| format!("{program} is missing from the eBPF object"))?;
        self.this_way.push(program.to_owned());
        load(p, self.btf)
            .map_err(|e| format!("{program}: the kernel refused it: {}", describe(&e)))?;
        self.attached.insert(program.to_owned());
        Ok(())
    }

    /// Unloads (and so detaches) what the failed way loaded.
    fn undo_way(&mut self) {
        for name in std::mem::take(&mut self.this_way) {
            self.attached.remove(&name);
            let Some(p) = self.ebpf.program_mut(&name) else {
                continue;
            };
            // A program that never loaded has nothing to unload: the error says so.
            let _ = match p {
                Program::Lsm(p) => p.unload(),
                Program::FExit(p) => p.unload(),
                Program::KProbe(p) => p.unload(),
                Program::BtfTracePoint(p) => p.unload(),
                Program::RawTracePoint(p) => p.unload(),
                _ => Ok(()),
            };
        }
    }

    /// Loads the fexit `program` for the first of `functions` the kernel has, and attaches
    /// it; `false` when none of them is in the kernel's BTF.
    fn fexit(&mut self, program: &str, functions: &[String]) -> Result<bool, String> {
        let p: &mut FExit = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| format!("{program} is missing from the eBPF object"))?
            .try_into()
            .map_err(|e: ProgramError| e.to_string())?;
        self.this_way.push(program.to_owned());
        for function in functions {
            match p.load(function, self.btf) {
                Ok(()) => {
                    p.attach()
                        .map_err(|e| format!("{program}: {function}: {}", describe(&e)))?;
                    self.attached.insert(program.to_owned());
                    return Ok(true);
                }
                Err(ProgramError::Btf(BtfError::UnknownBtfTypeName { .. })) => continue,
                Err(e) => {
                    return Err(format!(
                        "{program}: {function}: the kernel refused it: {}",
                        describe(&e)
                    ))
                }
            }
        }
        Ok(false)
    }
}

/// The ia32 entry points of syscall `name`, the compat wrapper first.
fn ia32_entries(name: &str) -> [String; 2] {
    [
        format!("__ia32_compat_sys_{name}"),
        format!("__ia32_sys_{name}"),
    ]
}

/// The error with the verifier's last lines when it refused a program.
/// What `/proc/kallsyms` names after syscall `name`: why a kprobe on its entry failed is
/// often that the kernel calls it something else.
fn kallsyms_like(name: &str) -> String {
    let Ok(text) = std::fs::read_to_string("/proc/kallsyms") else {
        return "/proc/kallsyms unreadable".into();
    };
    let like: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|sym| sym.contains(name) && sym.contains("sys"))
        .take(8)
        .collect();
    if like.is_empty() {
        format!("/proc/kallsyms has no *sys*{name}*")
    } else {
        format!("/proc/kallsyms has {}", like.join(", "))
    }
}

fn describe(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            if tail.is_empty() {
                io_error.to_string()
            } else {
                format!("{io_error}; verifier: {}", tail.join(" | "))
            }
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
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

    /// Every program a probe names is in the object, the per-syscall fexit programs
    /// included: their names are derived from the syscall table on both sides.
    #[test]
    fn every_program_the_probes_name_is_in_the_object() {
        let object = embedded_object().unwrap_or_else(|e| panic!("{e}"));
        let has = |name: &str| {
            let symbol = format!("\0{name}\0");
            object.windows(symbol.len()).any(|w| w == symbol.as_bytes())
        };
        let syscalls = hooked_syscalls();
        assert!(syscalls.contains(&"ptrace") && syscalls.contains(&"renameat2"));
        assert!(!syscalls.contains(&"openat"), "opens belong to file_open");
        assert!(
            syscalls.contains(&"open_by_handle_at"),
            "its failures come before the kernel's open path"
        );
        for probe in PROBES {
            for way in probe.ways {
                for attach in way.attach {
                    let programs: Vec<String> = match *attach {
                        Attach::BtfTracepoint { program, .. }
                        | Attach::RawTracepoint { program, .. }
                        | Attach::RawTracepointTaking { program, .. }
                        | Attach::Lsm { program, .. }
                        | Attach::FExit { program, .. }
                        | Attach::KProbe { program, .. }
                        | Attach::KRetProbe { program, .. }
                        | Attach::SyscallKProbes { program }
                        | Attach::SyscallKRetProbes { program } => vec![program.into()],
                        Attach::FExitTaking { programs, .. } => {
                            programs.iter().map(|(p, _)| (*p).into()).collect()
                        }
                        Attach::SyscallFExits => syscalls
                            .iter()
                            .flat_map(|s| {
                                [
                                    format!("syscalls_fexit_{s}"),
                                    format!("syscalls_fexit_ia32_{s}"),
                                ]
                            })
                            .collect(),
                    };
                    for p in programs {
                        assert!(has(&p), "{}: {p} is not in the eBPF object", probe.name);
                    }
                }
            }
        }
    }

    #[test]
    fn a_mode_is_named_as_the_cli_takes_it() {
        assert_eq!("auto".parse(), Ok(ModeChoice::Auto));
        for mode in [
            ProbeMode::Lsm,
            ProbeMode::Fentry,
            ProbeMode::Kprobe,
            ProbeMode::Tracepoint,
        ] {
            assert_eq!(mode.name().parse(), Ok(ModeChoice::Force(mode)));
        }
        let e = "ebpf".parse::<ModeChoice>().expect_err("not a mode");
        assert!(e.contains("auto, lsm, fentry, kprobe, tracepoint"), "{e}");
        // Strongest first: a forced mode takes ways at or below it in this order.
        assert!(ProbeMode::Lsm < ProbeMode::Fentry && ProbeMode::Kprobe < ProbeMode::Tracepoint);
    }

    /// `cargo xtask build` (and so `cargo xtask test`) builds sensor-ebpf before the agent:
    /// the real object must be what gets embedded, never the placeholder.
    #[test]
    fn the_built_object_is_embedded() {
        let object = embedded_object().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(object.get(..4), Some(&b"\x7fELF"[..]), "not an ELF object");
    }
}
