//! Filling the common header and reserving ring-buffer space, with loss counting.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
    },
    maps::ring_buf::RingBufEntry,
};
use sensor_common::{EventHeader, EventKind};

use crate::{
    kernel::{current_task, off, read},
    CONFIG, EVENTS, LOST_EVENTS,
};

/// Whether the current task belongs to the agent, whose own activity is never reported.
#[inline(always)]
pub fn is_agent() -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    tgid == unsafe { core::ptr::read_volatile(&CONFIG.agent_tgid) }
}

/// Reserves room for one event; a full ring buffer is counted, never silent.
#[inline(always)]
pub fn reserve<T: 'static>(kind: EventKind) -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        if let Some(counter) = LOST_EVENTS.get_ptr_mut(kind as u32) {
            unsafe { *counter += 1 };
        }
    }
    entry
}

/// Fills the header from the current task.
#[inline(always)]
pub fn fill_header(h: &mut EventHeader, kind: EventKind) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let task = current_task();
    h.kind = kind as u8;
    h._pad0 = [0; 3];
    h.cpu = unsafe { bpf_get_smp_processor_id() };
    h.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.tgid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.uid = uid_gid as u32;
    h.gid = (uid_gid >> 32) as u32;
    h.ppid = read::<u64>(task + off!(task_struct_real_parent))
        .and_then(|parent| read::<u32>(parent + off!(task_struct_tgid)))
        .unwrap_or(0);
    h.euid = read::<u64>(task + off!(task_struct_cred))
        .and_then(|cred| read::<u32>(cred + off!(cred_euid)))
        .unwrap_or(u32::MAX);
    h.auid = read::<u32>(task + off!(task_struct_loginuid)).unwrap_or(u32::MAX);
    h._pad1 = 0;
    h.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    h.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}
