//! Kernel programs of the credential-access sensor.
//!
//! Tracepoint mode: the `sys_exit` tracepoint, which every kernel with BPF has, sees every
//! reported syscall where both the arguments (still in the saved user registers) and the
//! result are known, so this mode is complete on its own; but it puts every syscall of the
//! host on the kernel's slow path. Where the kernel allows them, stronger hooks take over
//! (docs/probes.md "Probe modes"): opens on the kernel's open path (LSM `file_open`, fexit,
//! kretprobe), the other syscalls by kretprobes on their entry points, and `sys_exit` is
//! then not attached. Files are identified by the opened `struct file`, never by the path
//! string the caller passed.
//!
//! Every program body and what it calls is `#[inline(always)]`: kernels before 6.4 count
//! each call's frame (at least 32 bytes) towards the 512 bytes of stack a program may use,
//! and the large bodies are near that alone.
#![no_std]
#![no_main]
// `atomic_xadd`: the only atomic read-modify-write the BPF target offers from Rust.
#![allow(internal_features)]
#![feature(core_intrinsics)]
// `${concat(..)}`: one fexit program per syscall from one list (`syscalls_fexit!`).
#![feature(macro_metavar_expr_concat)]

mod file;
mod flood;
mod inflight;
mod io_uring;
mod kernel;
mod lifecycle;
mod output;
mod rename;
mod routes;
mod syscalls;

use aya_ebpf::{
    macros::{btf_tracepoint, fexit, kprobe, kretprobe, lsm, map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{
        BtfTracePointContext, FExitContext, LsmContext, ProbeContext, RawTracePointContext,
        RetProbeContext,
    },
};
use aya_log_ebpf::debug;
use inflight::Hook;
use kernel::{ArgPtr, BtfPtr, FieldPtr, RawPtr, Regs};
use sensor_common::{
    syscall::{self, Watched, O_PATH},
    EventKind, FoldKey, FoldValue, InodeKey, KernelOffsets, LeafKey, NameKey, PathChangeEvent,
    SensorConfig, TreeGate, TreeMiss, WatchFilter, WatchValue, MAX_FOLDS, MAX_IDENTITIES,
    MAX_KPROBES_IN_FLIGHT, MAX_TREE_MISSES, MAX_WATCHED, OPENS_BY_HOOK, SYSCALLS_BY_HOOK,
};

/// Kernel struct offsets for the running kernel, written by the agent from BTF before load.
#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets::zeroed();

/// Load-time settings written by the agent.
#[no_mangle]
static CONFIG: SensorConfig = SensorConfig::zeroed();

/// `OPENS_BY_HOOK` and `SYSCALLS_BY_HOOK`: what the hooks the agent attached beside
/// `sys_exit` report, so the tracepoint leaves it to them. Written once after attaching.
#[map]
static HOOKS: Array<u32> = Array::with_max_entries(1, 0);

/// Events to user space. The agent sizes it at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(32 << 20, 0);

/// When a submit last woke the reader (`bpf_ktime_get_ns`): see `output::wakeup`.
#[map]
static LAST_WAKEUP: Array<u64> = Array::with_max_entries(1, 0);

/// Watched files by identity (device, inode): catches hard links, bind mounts, symlinks.
#[map]
static WATCHED_INODES: HashMap<InodeKey, WatchValue> = HashMap::with_max_entries(MAX_WATCHED, 0);

/// Directories holding watched names or globs.
#[map]
static WATCHED_DIRS: HashMap<InodeKey, WatchValue> = HashMap::with_max_entries(MAX_WATCHED, 0);

/// Which (device, inode) keys may be in `WATCHED_INODES` or `WATCHED_DIRS`: a clear bit
/// spares an open the hash lookup (sensor-common's `WatchFilter`).
#[map]
static WATCH_FILTER: Array<WatchFilter> = Array::with_max_entries(1, 0);

/// Watched names inside watched directories: a file renamed over a watched one matches at once.
#[map]
static WATCHED_NAMES: HashMap<NameKey, WatchValue> = HashMap::with_max_entries(MAX_WATCHED, 0);

/// Which files the ancestry walk looks at, written by the agent after each refresh.
#[map]
static TREE_GATE: Array<TreeGate> = Array::with_max_entries(1, 0);

/// Directories whose ancestry walk found no rule, so it is not repeated for each open.
#[map]
static TREE_MISSES: LruHashMap<InodeKey, TreeMiss> =
    LruHashMap::with_max_entries(MAX_TREE_MISSES, 0);

/// Last components of watched paths: the prefilter of renames, unlinks and links
/// (`rename.rs`). Only presence counts; the value names the rule, as in the other maps.
#[map]
static WATCHED_LEAVES: HashMap<LeafKey, WatchValue> = HashMap::with_max_entries(MAX_WATCHED, 0);

/// Where a rename/unlink/link event is built: two path strings do not fit the stack.
#[map]
static PATH_SCRATCH: PerCpuArray<PathChangeEvent> = PerCpuArray::with_max_entries(1, 0);

/// The prefilter's component positions (`rename.rs`): start and end of the last component,
/// then of the one before it.
#[map]
static PATH_SCAN: PerCpuArray<PathScan> = PerCpuArray::with_max_entries(1, 0);

/// See [`PATH_SCAN`].
#[repr(C)]
pub struct PathScan {
    /// Start and end of the last component, then of the one before it.
    pub pos: [u64; 4],
    /// The key looked up in `WATCHED_LEAVES` (a `LeafKey`, as words for zeroing).
    pub key: [u64; sensor_common::NAME_LEN / 8],
}

/// Kprobe mode: the calls inside a kretprobed function, by thread and hook (`inflight.rs`).
#[map]
static KPROBES_IN_FLIGHT: HashMap<u64, u8> = HashMap::with_max_entries(MAX_KPROBES_IN_FLIGHT, 0);

/// Kprobe mode: calls whose return a kretprobe missed (`inflight.rs`), per kind and CPU.
#[map]
static KPROBE_MISSED: PerCpuArray<u64> = PerCpuArray::with_max_entries(EventKind::COUNT, 0);

/// Where `file.rs` passes an open's match and call to its report (see there why).
#[map]
static OPEN_SCRATCH: PerCpuArray<OpenScratch> = PerCpuArray::with_max_entries(1, 0);

/// See [`OPEN_SCRATCH`].
#[repr(C)]
pub struct OpenScratch {
    pub ret: i64,
    pub flags: u64,
    pub ino: u64,
    pub name: u64,
    pub path: u64,
    pub dev: u32,
    pub rule: u32,
    pub target_tgid: u32,
    pub overlay_dev: u32,
    pub dfd: i32,
    pub matched: u8,
    pub syscall: u8,
    pub compat: u8,
    pub path_in_kernel: u8,
}

/// Where [`kernel::user_regs`] copies a task's saved user registers, in one read: the hooks
/// that are not handed them then read each register with a plain load, so the verifier
/// checks what follows once rather than once per register read that could fail (the
/// syscalls' kretprobe otherwise exceeds a million instructions on 5.10 and 6.1).
#[map]
static USER_REGS: PerCpuArray<[u64; kernel::PT_REGS_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// Failed ring-buffer reservations, per CPU, indexed by event kind.
#[map]
static LOST_EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EventKind::COUNT, 0);

/// Repeated accesses being folded (`flood.rs`), read by the agent's fold stage.
#[map]
static FOLDS: HashMap<FoldKey, FoldValue> = HashMap::with_max_entries(MAX_FOLDS, 0);

/// Where a new `FOLDS` value is built: too large for the 512-byte stack beside an event.
#[map]
static FOLD_SCRATCH: PerCpuArray<FoldValue> = PerCpuArray::with_max_entries(1, 0);

/// Each identity's budget: the earliest time its next event is due (GCRA).
#[map]
static BUDGETS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MAX_IDENTITIES, 0);

/// Events over budget, per identity and kind index; never evicted, so no count is lost.
#[map]
static BUDGET_LOST: HashMap<u64, [u64; EventKind::COUNT as usize]> =
    HashMap::with_max_entries(MAX_IDENTITIES, 0);

/// The zeroed value a new `BUDGET_LOST` entry starts from.
static NO_LOSSES: [u64; EventKind::COUNT as usize] = [0; EventKind::COUNT as usize];

/// Runs on every syscall exit, so the common case (not a watched syscall) must return after
/// one load and a compare. A BTF tracepoint, so the registers and the task are typed and
/// read with plain loads.
#[btf_tracepoint(function = "sys_exit")]
#[inline(always)]
pub fn syscalls_sys_exit(ctx: BtfTracePointContext) -> i32 {
    if let Err(e) = try_sys_exit(&ctx) {
        if e != file::NOT_WATCHED {
            // Off unless the agent raises the in-kernel log level (`[agent] kernel_log`).
            debug!(&ctx, "sys_exit: reading kernel state failed ({})", e);
        }
    }
    0
}

#[inline(always)]
fn try_sys_exit(ctx: &BtfTracePointContext) -> Result<(), i64> {
    // sys_exit(struct pt_regs *regs, long ret)
    let regs = BtfPtr::from_raw(ctx.arg::<*const u8>(0));
    let ret: i64 = ctx.arg(1);
    let nr = kernel::syscall_nr(regs);
    let (native, compat) = (syscall::native(nr), syscall::compat(nr));
    if native.is_none() && compat.is_none() {
        return Ok(());
    }
    let by_hook = HOOKS.get(0).copied().unwrap_or(0);
    on_syscall(regs, ret, |is_compat| {
        if is_compat { compat } else { native }.filter(|w| {
            let bit = if w.by_syscalls_hook(ret) {
                SYSCALLS_BY_HOOK
            } else {
                OPENS_BY_HOOK
            };
            by_hook & bit == 0
        })
    })
}

/// Reports the syscall whose saved user registers are `regs` and result `ret`, if
/// `watched` (given whether it came through the ia32 entry) names one.
#[inline(always)]
fn on_syscall(
    regs: impl Regs,
    ret: i64,
    watched: impl FnOnce(bool) -> Option<Watched>,
) -> Result<(), i64> {
    if output::is_agent() {
        return Ok(());
    }
    let task = BtfPtr::current_task();
    let is_compat = kernel::in_compat_syscall(task);
    let Some(watched) = watched(is_compat) else {
        return Ok(());
    };
    match watched {
        Watched::Open
        | Watched::Openat
        | Watched::Openat2
        | Watched::Creat
        | Watched::OpenByHandleAt => file::on_open(task, regs, is_compat, watched, ret),
        Watched::PerfEventOpen
        | Watched::Bpf
        | Watched::Ioctl
        | Watched::Prlimit64
        | Watched::FanotifyMark => routes::on_route(
            watched,
            &kernel::SyscallArgs::read(regs, is_compat),
            ret,
            is_compat,
        ),
        Watched::Rename
        | Watched::Renameat
        | Watched::Renameat2
        | Watched::Unlink
        | Watched::Unlinkat
        | Watched::Link
        | Watched::Linkat => rename::on_path_change(
            task,
            watched,
            &kernel::SyscallArgs::read(regs, is_compat),
            ret,
            is_compat,
        ),
        _ => syscalls::on_syscall(
            task,
            watched,
            &kernel::SyscallArgs::read(regs, is_compat),
            ret,
            is_compat,
        ),
    }
}

/// Fentry mode of the syscalls (every one but the opens, and failed opens by handle:
/// [`Watched::by_syscalls_hook`]): an fexit program on the kernel entry point of each, so
/// no other syscall pays anything. A trampoline program is loaded
/// for one kernel function, so each syscall has two: `syscalls_fexit_<name>` for
/// `__x64_sys_<name>` and `syscalls_fexit_ia32_<name>` for its ia32 entry (the agent names
/// the targets from [`Watched::name`]). Each is handed the saved user registers.
macro_rules! syscalls_fexit {
    ($($name:ident => $watched:expr,)*) => {$(
        #[fexit]
        #[inline(always)]
        pub fn ${concat(syscalls_fexit_, $name)}(ctx: FExitContext) -> i32 {
            on_syscall_fexit(&ctx, $watched)
        }
        #[fexit]
        #[inline(always)]
        pub fn ${concat(syscalls_fexit_ia32_, $name)}(ctx: FExitContext) -> i32 {
            on_syscall_fexit(&ctx, $watched)
        }
    )*};
}

syscalls_fexit! {
    ptrace => Watched::Ptrace,
    process_vm_readv => Watched::ProcessVmReadv,
    process_vm_writev => Watched::ProcessVmWritev,
    pidfd_getfd => Watched::PidfdGetfd,
    keyctl => Watched::Keyctl,
    add_key => Watched::AddKey,
    request_key => Watched::RequestKey,
    perf_event_open => Watched::PerfEventOpen,
    bpf => Watched::Bpf,
    ioctl => Watched::Ioctl,
    prlimit64 => Watched::Prlimit64,
    fanotify_mark => Watched::FanotifyMark,
    rename => Watched::Rename,
    renameat => Watched::Renameat,
    renameat2 => Watched::Renameat2,
    unlink => Watched::Unlink,
    unlinkat => Watched::Unlinkat,
    link => Watched::Link,
    linkat => Watched::Linkat,
    kill => Watched::Kill,
    tkill => Watched::Tkill,
    tgkill => Watched::Tgkill,
    pidfd_send_signal => Watched::PidfdSendSignal,
    open_by_handle_at => Watched::OpenByHandleAt,
}

#[inline(always)]
fn on_syscall_fexit(ctx: &FExitContext, watched: Watched) -> i32 {
    // __x64_sys_<name>(const struct pt_regs *regs) -> long
    let regs = BtfPtr::from_raw(ctx.arg::<*const u8>(0));
    let ret: i64 = ctx.arg(1);
    let _ = on_syscall(regs, ret, |_| {
        Some(watched).filter(|w| w.by_syscalls_hook(ret))
    });
    0
}

/// Kprobe mode of the syscalls, on entry: marks the thread with the kind of event the call
/// would be reported as, so a return [`syscalls_kretprobe`] misses is counted. Of the
/// ioctls only `PERF_EVENT_IOC_SET_BPF` is marked: the others are never reported.
#[kprobe]
#[inline(always)]
pub fn syscalls_kprobe(_ctx: ProbeContext) -> u32 {
    if output::is_agent() {
        return 0;
    }
    let task = BtfPtr::current_task();
    if let Some(regs) = kernel::user_regs(task) {
        let nr = kernel::syscall_nr(regs);
        let is_compat = kernel::in_compat_syscall(task);
        let watched = if is_compat {
            syscall::compat(nr)
        } else {
            syscall::native(nr)
        };
        if let Some(w) = watched {
            if w != Watched::Ioctl
                || routes::is_reported_ioctl(kernel::SyscallArgs::read(regs, is_compat).0[1])
            {
                inflight::enter(Hook::Syscalls, w.event_kind());
            }
        }
    }
    0
}

/// Kprobe mode of the syscalls (every one but the opens, and failed opens by handle): one
/// program on the kernel entry point of each (`__x64_sys_*`, `__ia32_sys_*`,
/// `__ia32_compat_sys_*`), so no other syscall pays anything. The arguments are the task's saved user registers.
#[kretprobe]
#[inline(always)]
pub fn syscalls_kretprobe(ctx: RetProbeContext) -> u32 {
    inflight::returned(Hook::Syscalls);
    let ret: i64 = ctx.ret();
    if let Some(regs) = kernel::user_regs(BtfPtr::current_task()) {
        let nr = kernel::syscall_nr(regs);
        let _ = on_syscall(regs, ret, |is_compat| {
            if is_compat {
                syscall::compat(nr)
            } else {
                syscall::native(nr)
            }
            .filter(|w| w.by_syscalls_hook(ret))
        });
    }
    0
}

/// LSM mode of the opens: every file the kernel opens, by any route (a syscall, io_uring,
/// exec, a file handle), after every other LSM allowed it. Never denies anything.
#[lsm(hook = "file_open")]
#[inline(always)]
pub fn file_lsm_file_open(ctx: LsmContext) -> i32 {
    // file_open(struct file *file, int ret): `ret` is the earlier BPF programs' verdict.
    let ret: i32 = ctx.arg(1);
    on_allowed_open(ctx.arg(0), ret);
    ret
}

/// Fentry mode of the opens: as [`file_lsm_file_open`], after `security_file_open`. An
/// open an LSM denied fails on `do_filp_open`, where [`file_fexit_do_filp_open`] sees it.
#[fexit(function = "security_file_open")]
#[inline(always)]
pub fn file_fexit_security_file_open(ctx: FExitContext) -> i32 {
    // security_file_open(struct file *file) -> int
    on_allowed_open(ctx.arg(0), ctx.arg(1));
    0
}

/// The LSM and fentry hooks' `file`, if every LSM allowed it (`ret` 0): typed, so it is
/// classified with plain loads and its path can be asked of `bpf_d_path`.
#[inline(always)]
fn on_allowed_open(file: *const u8, ret: i32) {
    if ret == 0 {
        let file = ArgPtr::from_arg(file);
        let _ = file::on_opened(file, Some(file.typed()));
    }
}

/// Beside the LSM and fentry modes: the opens those hooks never see, the ones that failed
/// before reaching them (denied attempts) and `O_PATH` opens, which skip them.
#[fexit(function = "do_filp_open")]
#[inline(always)]
pub fn file_fexit_do_filp_open(ctx: FExitContext) -> i32 {
    // do_filp_open(int dfd, struct filename *pathname, const struct open_flags *op)
    //     -> struct file *
    let file: *const u8 = ctx.arg(3);
    let _ = on_filp_open(file, |errno| {
        let dfd: i32 = ctx.arg(0);
        let pathname = BtfPtr::from_raw(ctx.arg::<*const u8>(1));
        let name: u64 = pathname.get(kernel::off!(filename_name));
        file::on_failed_open(errno, dfd, name)
    });
    0
}

/// Beside the LSM and fentry modes: `O_PATH` opens by file handle, which skip `file_open`
/// and never reach `do_filp_open`. A failed open by handle is the syscalls hook's
/// ([`Watched::by_syscalls_hook`]).
#[fexit]
#[inline(always)]
pub fn file_fexit_do_file_open_root(ctx: FExitContext) -> i32 {
    // do_file_open_root(const struct path *root, const char *name,
    //     const struct open_flags *op) -> struct file *
    let _ = on_filp_open(ctx.arg(3), |_| Ok(()));
    0
}

/// [`file_fexit_do_file_open_root`] for older kernels (Debian 11's 5.10), whose
/// `do_file_open_root` takes the root as a dentry and a mount.
#[fexit]
#[inline(always)]
pub fn file_fexit_do_file_open_root_dentry(ctx: FExitContext) -> i32 {
    // do_file_open_root(struct dentry *dentry, struct vfsmount *mnt, const char *name,
    //     const struct open_flags *op) -> struct file *
    let _ = on_filp_open(ctx.arg(4), |_| Ok(()));
    0
}

/// Kprobe mode of the opens, on entry to `do_filp_open` and `do_file_open_root`: marks the
/// thread, so an open whose return [`file_kretprobe_open`] misses is counted.
#[kprobe]
#[inline(always)]
pub fn file_kprobe_open(_ctx: ProbeContext) -> u32 {
    inflight::enter(Hook::OpenPath, EventKind::FileOpen);
    0
}

/// Kprobe mode of the opens: the file `do_filp_open` and `do_file_open_root` (file
/// handles) return, or their error. The call is read from the task's saved registers.
#[kretprobe]
#[inline(always)]
pub fn file_kretprobe_open(ctx: RetProbeContext) -> u32 {
    inflight::returned(Hook::OpenPath);
    let file: u64 = ctx.ret();
    let _ = match as_errno(file) {
        Some(errno) => file::on_failed_open(errno, syscall::AT_FDCWD, 0),
        None => file::on_opened(RawPtr(file), None),
    };
    0
}

/// `do_filp_open`'s result in the LSM and fentry modes (typed): a failure to `failed`, an
/// `O_PATH` file to the classification (the other opens reach the LSM hook).
#[inline(always)]
fn on_filp_open(file: *const u8, failed: impl FnOnce(i64) -> Result<(), i64>) -> Result<(), i64> {
    if let Some(errno) = as_errno(file as u64) {
        return failed(errno);
    }
    let file = ArgPtr::from_arg(file);
    let flags: u32 = file.load(kernel::off!(file_f_flags))?;
    if u64::from(flags) & O_PATH == 0 {
        return Ok(());
    }
    file::on_opened(file, None)
}

/// A returned pointer that is an `ERR_PTR`: its `-errno`.
#[inline(always)]
fn as_errno(ptr: u64) -> Option<i64> {
    let v = ptr as i64;
    (-4095..0).contains(&v).then_some(v)
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn lifecycle_sched_process_exec(ctx: RawTracePointContext) -> i32 {
    let _ = lifecycle::on_exec(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn lifecycle_sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let _ = lifecycle::on_fork(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn lifecycle_sched_process_exit(ctx: RawTracePointContext) -> i32 {
    inflight::exited();
    let _ = lifecycle::on_exit(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "io_uring_submit_req")]
pub fn io_uring_submit_req(ctx: RawTracePointContext) -> i32 {
    let _ = io_uring::on_submit_req(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "io_uring_submit_sqe")]
pub fn io_uring_submit_sqe(ctx: RawTracePointContext) -> i32 {
    let _ = io_uring::on_submit_sqe(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
