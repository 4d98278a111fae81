//! Kprobe mode's count of calls its kretprobes did not see (docs/probes.md, "Known limits").
//!
//! A kretprobe has a fixed number of instances; a call that enters while blocked calls hold
//! them all (threads opening FIFOs, or copying from memory that faults slowly) returns
//! unseen, and the kernel's own count of such misses cannot be read for the agent's probes
//! on every kernel it runs on. So an entry kprobe on the same functions marks the thread
//! with the kind of event the call would be reported as, and the kretprobe clears the mark:
//! a mark still there when the thread enters that hook again, or exits, is a call whose
//! return was missed, and is counted by kind (`KPROBE_MISSED`), never silent.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use sensor_common::EventKind;

use crate::{
    flood::{add, NOEXIST},
    KPROBES_IN_FLIGHT, KPROBE_MISSED,
};

/// The kretprobed functions a thread can be inside at once, each with a mark of its own:
/// `open_by_handle_at`'s syscall entry point calls the open path.
#[derive(Clone, Copy)]
pub enum Hook {
    /// `do_filp_open` and `do_file_open_root`.
    OpenPath = 0,
    /// The reported syscalls' entry points.
    Syscalls = 1,
}

const HOOKS: [Hook; 2] = [Hook::OpenPath, Hook::Syscalls];

/// A mark's key: the thread id, and the hook above it.
#[inline(always)]
fn key(hook: Hook) -> u64 {
    (hook as u64) << 32 | bpf_get_current_pid_tgid() & 0xffff_ffff
}

/// The thread enters a function of `hook`, for a call reported as `kind`.
#[inline(always)]
pub fn enter(hook: Hook, kind: EventKind) {
    let key = key(hook);
    // A mark already there is the previous call's, whose return was missed.
    if let Some(mark) = KPROBES_IN_FLIGHT.get_ptr_mut(key) {
        // SAFETY: `mark` points to this thread's own value in the map, valid while the
        // program runs; only this thread's programs touch it, one at a time.
        let previous = unsafe { mark.replace(kind as u8) };
        count_missed(previous);
        return;
    }
    // Refused when the map is full: this call cannot be vouched for.
    if KPROBES_IN_FLIGHT.insert(key, kind as u8, NOEXIST).is_err() {
        count_missed(kind as u8);
    }
}

/// The call returned, seen by the kretprobe.
#[inline(always)]
pub fn returned(hook: Hook) {
    let _ = KPROBES_IN_FLIGHT.remove(key(hook));
}

/// The thread exits: a mark left is a call whose return was missed.
#[inline(always)]
pub fn exited() {
    for hook in HOOKS {
        let key = key(hook);
        if let Some(mark) = KPROBES_IN_FLIGHT.get_ptr(key) {
            // SAFETY: as in `enter`.
            count_missed(unsafe { mark.read() });
            let _ = KPROBES_IN_FLIGHT.remove(key);
        }
    }
}

#[inline(always)]
fn count_missed(kind: u8) {
    if let Some(counter) = KPROBE_MISSED.get_ptr_mut(u32::from(kind)) {
        // SAFETY: `counter` points to this CPU's slot of a per-CPU array, valid and 8-byte
        // aligned while the program runs, and only ever changed by this atomic add (on a
        // fully preemptible kernel the exit hook can be preempted by a kprobe on the same
        // CPU, and both add).
        unsafe { add(counter) };
    }
}
