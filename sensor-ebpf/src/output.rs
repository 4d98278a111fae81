//! Filling the common header and reserving ring-buffer space, with loss counting.
//!
//! A reserved entry is uninitialised memory: small events are built on the stack and written
//! whole (`entry.write`); events too large for the 512-byte BPF stack are written field by
//! field through raw pointers (`&raw mut (*p).field`), never through a `&mut` to the entry.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns, bpf_ktime_get_ns,
    },
    maps::ring_buf::RingBufEntry,
};
use sensor_common::{EventHeader, EventKind, WAKEUP_NS, WAKEUP_SHARE, WAKEUP_SHARE_NS};

use crate::{
    kernel::{current_task, off, read},
    CONFIG, EVENTS, LAST_WAKEUP, LOST_EVENTS,
};

/// Whether the current task belongs to the agent, whose own activity is never reported.
#[inline(always)]
pub fn is_agent() -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: CONFIG is a plain-data static that lives for the whole program; the volatile
    // read keeps the compiler from folding the compiled-in zero the agent overrides at load.
    tgid == unsafe { core::ptr::read_volatile(&CONFIG.agent_tgid) }
}

/// Reserves room for one event charged to the current identity's budget; an event over
/// budget, or one a full ring buffer has no room for, is counted, never silent.
#[inline(always)]
pub fn reserve<T: 'static>(kind: EventKind) -> Option<RingBufEntry<T>> {
    if !crate::flood::admit(kind) {
        return None;
    }
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count_lost(kind);
    }
    entry
}

/// Publishes a [`reserve`]d entry, written whole.
#[inline(always)]
pub fn submit<T: 'static>(entry: RingBufEntry<T>) {
    entry.submit(wakeup());
}

/// [`reserve`] for an event already built elsewhere (a per-CPU slot): charged to the
/// identity's budget, then copied into the ring buffer; over budget or without room, counted.
#[inline(always)]
pub fn send<T: 'static>(kind: EventKind, event: &T) {
    if !crate::flood::admit(kind) {
        return;
    }
    if EVENTS.output::<T>(event, wakeup()).is_err() {
        count_lost(kind);
    }
}

/// The wake-up flag of a submit: wake the reader if it has not been woken for
/// `WAKEUP_NS`, or for `WAKEUP_SHARE_NS` with a `WAKEUP_SHARE`th of the ring buffer
/// waiting; else leave the event for the reader's next look (it looks again `WAKEUP_NS`
/// after every wake: `pipeline/read.rs`). Waking on every submit while bytes wait would
/// interrupt the CPU of every event of a storm the reader is already draining.
#[inline(always)]
fn wakeup() -> u64 {
    let Some(last) = LAST_WAKEUP.get_ptr_mut(0) else {
        return BPF_RB_FORCE_WAKEUP.into();
    };
    // SAFETY: the helper takes no arguments and only returns a number.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: `last` points to the array's one element, valid and 8-byte aligned while the
    // program runs. CPUs race on it with whole aligned loads and stores: a stale value can
    // only make a submit wake the reader when it need not have.
    unsafe {
        let since = now.wrapping_sub(core::ptr::read_volatile(last));
        if since < WAKEUP_SHARE_NS
            || since < WAKEUP_NS
                && EVENTS.query(BPF_RB_AVAIL_DATA.into()) * WAKEUP_SHARE
                    < EVENTS.query(BPF_RB_RING_SIZE.into())
        {
            return BPF_RB_NO_WAKEUP.into();
        }
        core::ptr::write_volatile(last, now);
    }
    BPF_RB_FORCE_WAKEUP.into()
}

/// One more event of `kind` the full ring buffer had no room for.
#[inline(always)]
fn count_lost(kind: EventKind) {
    if let Some(counter) = LOST_EVENTS.get_ptr_mut(kind as u32) {
        // SAFETY: `counter` points to this CPU's slot of a per-CPU array, valid and
        // aligned while the program runs; the program runs with migration disabled and
        // these tracepoints do not fire in interrupt context, so no other access to the
        // slot overlaps this one.
        unsafe { *counter += 1 };
    }
}

/// The common header, from the current task.
#[inline(always)]
pub fn header(kind: EventKind) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let task = current_task();
    EventHeader {
        kind: kind as u8,
        _pad0: [0; 3],
        // SAFETY: the helper takes no arguments and only returns a number.
        cpu: unsafe { bpf_get_smp_processor_id() },
        // SAFETY: the helper takes no arguments and only returns a number.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        ppid: read::<u64>(task + off!(task_struct_real_parent))
            .and_then(|parent| read::<u32>(parent + off!(task_struct_tgid)))
            .unwrap_or(0),
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        euid: read::<u64>(task + off!(task_struct_cred))
            .and_then(|cred| read::<u32>(cred + off!(cred_euid)))
            .unwrap_or(u32::MAX),
        auid: read::<u32>(task + off!(task_struct_loginuid)).unwrap_or(u32::MAX),
        pid_ns: crate::kernel::pid_ns(task).unwrap_or(0),
        // SAFETY: the helper takes no arguments and only returns a number.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}
