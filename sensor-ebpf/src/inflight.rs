//! Kprobe mode's count of opens its kretprobe did not see (docs/probes.md, "Known limits").
//!
//! A kretprobe has a fixed number of instances; a call that enters while blocked calls hold
//! them all (threads opening FIFOs, say) returns unseen, and the kernel's own count of such
//! misses cannot be read for the agent's probes on every kernel it runs on. So an entry
//! kprobe on the same functions marks the thread and the kretprobe clears the mark: a mark
//! still there when the thread enters the open path again, or exits, is an open whose
//! return was missed, and is counted (`OPENS_MISSED`), never silent.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::{
    flood::{add, NOEXIST},
    OPENS_IN_FLIGHT, OPENS_MISSED,
};

/// The thread enters `do_filp_open` or `do_file_open_root`.
#[inline(always)]
pub fn enter() {
    let tid = bpf_get_current_pid_tgid() as u32;
    // Refused when a mark is there (the previous open's return was missed; the mark now
    // stands for this call) or when the map is full (this call cannot be vouched for).
    if OPENS_IN_FLIGHT.insert(tid, 0, NOEXIST).is_err() {
        count_missed();
    }
}

/// The open returned, seen by the kretprobe.
#[inline(always)]
pub fn returned() {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = OPENS_IN_FLIGHT.remove(tid);
}

/// The thread exits: a mark left is an open whose return was missed.
#[inline(always)]
pub fn exited() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if OPENS_IN_FLIGHT.remove(tid).is_ok() {
        count_missed();
    }
}

#[inline(always)]
fn count_missed() {
    if let Some(counter) = OPENS_MISSED.get_ptr_mut(0) {
        // SAFETY: `counter` points to this CPU's slot of a per-CPU array, valid and 8-byte
        // aligned while the program runs, and only ever changed by this atomic add (on a
        // fully preemptible kernel the exit hook can be preempted by an open's kprobe on
        // the same CPU, and both add).
        unsafe { add(counter) };
    }
}
