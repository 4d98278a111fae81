//! Kernel programs of the credential-access sensor.
//!
//! Tracepoint mode: everything here attaches to raw tracepoints, which every kernel with BPF
//! has, so this mode is complete on its own. Syscalls are seen at `sys_exit`, where both the
//! arguments (still in the saved user registers) and the result are known, so one program
//! reports the outcome of each attempt. Files are identified by the inode the new descriptor
//! points to, never by the path string the caller passed.
#![no_std]
#![no_main]
// `atomic_xadd`: the only atomic read-modify-write the BPF target offers from Rust.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod file;
mod flood;
mod io_uring;
mod kernel;
mod lifecycle;
mod output;
mod rename;
mod routes;
mod syscalls;

use aya_ebpf::{
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use aya_log_ebpf::debug;
use kernel::BtfPtr;
use sensor_common::{
    syscall::{self, Watched},
    EventKind, FoldKey, FoldValue, InodeKey, KernelOffsets, LeafKey, NameKey, PathChangeEvent,
    SensorConfig, TreeGate, TreeMiss, WatchValue, MAX_FOLDS, MAX_IDENTITIES, MAX_TREE_MISSES,
    MAX_WATCHED,
};

/// Kernel struct offsets for the running kernel, written by the agent from BTF before load.
#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets::zeroed();

/// Load-time settings written by the agent.
#[no_mangle]
static CONFIG: SensorConfig = SensorConfig::zeroed();

/// Events to user space. The agent sizes it at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(32 << 20, 0);

/// Watched files by identity (device, inode): catches hard links, bind mounts, symlinks.
#[map]
static WATCHED_INODES: HashMap<InodeKey, WatchValue> = HashMap::with_max_entries(MAX_WATCHED, 0);

/// Directories holding watched names or globs.
#[map]
static WATCHED_DIRS: HashMap<InodeKey, WatchValue> = HashMap::with_max_entries(MAX_WATCHED, 0);

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
pub fn syscalls_sys_exit(ctx: BtfTracePointContext) -> i32 {
    if let Err(e) = try_sys_exit(&ctx) {
        if e != file::NOT_WATCHED {
            // Off unless the agent raises the in-kernel log level (`[agent] kernel_log`).
            debug!(&ctx, "sys_exit: reading kernel state failed ({})", e);
        }
    }
    0
}

fn try_sys_exit(ctx: &BtfTracePointContext) -> Result<(), i64> {
    // sys_exit(struct pt_regs *regs, long ret)
    let regs = BtfPtr::from_raw(ctx.arg::<*const u8>(0));
    let ret: i64 = ctx.arg(1);
    let nr = kernel::syscall_nr(regs);
    let (native, compat) = (syscall::native(nr), syscall::compat(nr));
    if native.is_none() && compat.is_none() {
        return Ok(());
    }
    if output::is_agent() {
        return Ok(());
    }
    let task = BtfPtr::current_task();
    let is_compat = kernel::in_compat_syscall(task);
    let watched = match if is_compat { compat } else { native } {
        Some(w) => w,
        None => return Ok(()),
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
    let _ = lifecycle::on_exit(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "io_uring_submit_req")]
pub fn io_uring_submit_req(ctx: RawTracePointContext) -> i32 {
    let _ = io_uring::on_submit(&ctx);
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
