//! Floods made cheap and fair (docs/probes.md, "Floods").
//!
//! Folding: a successful open that repeats one sent less than `fold_window_ns` ago (same
//! process, file, flags and syscall) only adds one to a counter; user space reports the
//! count. Budget: every event is charged to its identity (`sensor_common::identity`), which
//! may send one event per `budget_interval_ns` with bursts up to `budget_tolerance_ns`
//! ahead (GCRA); what an identity sends beyond that is its own loss, counted per identity,
//! and never takes ring-buffer room from another identity's events.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
};
use sensor_common::{identity, EventHeader, EventKind, FoldKey, FoldValue, IDENTITY_OTHER};

use crate::{BUDGETS, BUDGET_LOST, CONFIG, FOLDS, FOLD_SCRATCH, NO_LOSSES};

/// `BPF_NOEXIST`: insert only if the key is absent.
pub(crate) const NOEXIST: u64 = 1;

/// Whether this access repeats one sent within the fold window: then it is counted and
/// nothing is sent.
#[inline(always)]
pub fn folded(key: &FoldKey, now: u64) -> bool {
    // SAFETY: CONFIG is a plain-data static that lives for the whole program; the volatile
    // read keeps the compiler from folding the compiled-in zero the agent overrides at load.
    let window = unsafe { core::ptr::read_volatile(&CONFIG.fold_window_ns) };
    let Some(v) = FOLDS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: `v` points to the map element, valid and 8-byte aligned while the program
    // runs (RCU read side). `window_start` is read whole (an aligned u64 load); `folded` is
    // only changed by atomic adds, here and on every CPU; `last_ns` is a plain store whose
    // race with another CPU's can only move the reported last time by that other access.
    unsafe {
        let start = core::ptr::read_volatile(&raw const (*v).window_start);
        if now.wrapping_sub(start) >= window {
            return false;
        }
        add(&raw mut (*v).folded);
        (&raw mut (*v).last_ns).write(now);
    }
    true
}

/// The access that was sent, as a fold entry keeps it.
pub struct Sent<'a> {
    pub header: &'a EventHeader,
    /// All the open flags (the key keeps only `FOLD_FLAGS`).
    pub flags: u64,
    pub rule: u32,
    pub target_tgid: u32,
    pub matched: u8,
    pub compat: u8,
    /// Address of the opened dentry's name (0: none).
    pub name: u64,
}

/// Opens a fold window for an access that was sent (or charged to its identity as lost):
/// its repeats within the window are folded. The entry keeps the sent access's header and
/// name so that user space can enrich a summary like the access itself. A full map leaves
/// the access unfolded, never unreported.
#[inline(always)]
pub fn open_window(key: &FoldKey, now: u64, sent: &Sent) {
    // SAFETY: as in `folded`.
    if unsafe { core::ptr::read_volatile(&CONFIG.fold_window_ns) } == 0 {
        return;
    }
    if let Some(v) = FOLDS.get_ptr_mut(key) {
        // SAFETY: as in `folded`; `folded` and `last_ns` are left alone, the other fields
        // are plain data the user-space reader takes as a snapshot.
        unsafe { fill(v, now, sent) };
        return;
    }
    let Some(s) = FOLD_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `s` is this CPU's slot of a per-CPU array, valid, aligned and used by no other
    // program while this one runs (migration is disabled and these tracepoints do not nest
    // on one CPU). Every field is written before the slot is read as a whole by the insert.
    unsafe {
        (&raw mut (*s).folded).write(0);
        (&raw mut (*s).last_ns).write(now);
        fill(s, now, sent);
        // By reference: a copy of the value would not fit the 512-byte stack beside the event.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let _ = FOLDS.insert(key, &*s, NOEXIST);
    }
}

/// # Safety
/// `v` must be valid for writes of a `FoldValue`.
#[inline(always)]
unsafe fn fill(v: *mut FoldValue, now: u64, sent: &Sent) {
    // SAFETY: the caller guarantees `v` is writable; fields are written through raw
    // pointers, and the string helper writes at most the field's size.
    unsafe {
        (&raw mut (*v).window_start).write(now);
        (&raw mut (*v).flags).write(sent.flags);
        (&raw mut (*v).rule).write(sent.rule);
        (&raw mut (*v).target_tgid).write(sent.target_tgid);
        (&raw mut (*v).matched).write(sent.matched);
        (&raw mut (*v).compat).write(sent.compat);
        (&raw mut (*v)._pad).write([0; 6]);
        (&raw mut (*v).header).write(*sent.header);
        (&raw mut (*v).name).cast::<u8>().write(0);
        if sent.name != 0 {
            let _ = crate::kernel::read_kernel_str(&raw mut (*v).name, sent.name);
        }
    }
}

/// An atomic add of one whose result is not used: the BPF `XADD` instruction, which every
/// kernel with BPF runs (the core `Atomic*` types offer no read-modify-write on this target).
///
/// # Safety
/// `counter` must be valid, 8-byte aligned, and only ever changed by atomic operations.
#[inline(always)]
pub(crate) unsafe fn add(counter: *mut u64) {
    // SAFETY: as the caller guarantees.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, 1) };
}

/// Charges one event of `kind` to the current identity: false when its budget is spent,
/// and then the event is counted as the identity's loss.
#[inline(always)]
pub fn admit(kind: EventKind) -> bool {
    // SAFETY: CONFIG is a plain-data static that lives for the whole program; the volatile
    // reads keep the compiler from folding the compiled-in zeros the agent overrides at load.
    let (interval, tolerance) = unsafe {
        (
            core::ptr::read_volatile(&CONFIG.budget_interval_ns),
            core::ptr::read_volatile(&CONFIG.budget_tolerance_ns),
        )
    };
    if interval == 0 {
        return true;
    }
    let uid = bpf_get_current_uid_gid() as u32;
    let cgroup = if uid == 0 {
        // SAFETY: the helper takes no arguments and only returns a number.
        unsafe { bpf_get_current_cgroup_id() }
    } else {
        0
    };
    let id = identity(uid, cgroup);
    // SAFETY: the helper takes no arguments and only returns a number.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let Some(tat) = BUDGETS.get_ptr_mut(id) else {
        // First event of this identity (or its entry was the least recently used one):
        // the budget starts full.
        let _ = BUDGETS.insert(id, now + interval, 0);
        return true;
    };
    // SAFETY: `tat` points to the map element, an aligned u64 valid while the program runs.
    // Two CPUs charging one identity at once may both pass on the same reading: a budget
    // may be overrun by one event per CPU, never undercounted as loss.
    unsafe {
        let due = core::ptr::read_volatile(tat);
        let due = if due > now { due } else { now };
        if due - now > tolerance {
            count_loss(id, kind);
            return false;
        }
        tat.write(due + interval);
    }
    true
}

/// Adds one to the identity's loss count for `kind`, or to the shared `IDENTITY_OTHER`
/// entry when the map has no room for the identity.
#[inline(always)]
fn count_loss(id: u64, kind: EventKind) {
    let slot = kind as usize;
    // SAFETY: a volatile read of a local. It hides that `kind` is an EventKind, so the bound
    // check below stays in the program for the verifier, which cannot see the enum's range.
    let slot = unsafe { core::ptr::read_volatile(&slot) };
    if slot >= NO_LOSSES.len() {
        return;
    }
    for key in [id, id, IDENTITY_OTHER] {
        if let Some(counts) = BUDGET_LOST.get_ptr_mut(key) {
            // SAFETY: `counts` points to the map element, an array of aligned u64 valid while
            // the program runs; `slot` is in bounds (checked above); only atomic adds change it.
            unsafe { add((counts as *mut u64).add(slot)) };
            return;
        }
        // Absent: make it (zeroed) and add on the next turn; a concurrent insert by another
        // CPU makes this one fail, and the next turn finds that entry.
        if key != IDENTITY_OTHER {
            // From the zeroed static, not a copy on the stack.
            #[allow(clippy::needless_borrows_for_generic_args)]
            let _ = BUDGET_LOST.insert(key, &NO_LOSSES, NOEXIST);
        }
    }
}
