//! Process lifecycle, which feeds attribution in user space: the exe and argv at exec, the
//! parent at fork, the end at exit.

use aya_ebpf::programs::RawTracePointContext;
use sensor_common::{EventKind, ExecEvent, ExitEvent, ForkEvent, ARGS_LEN};

use crate::{
    kernel::{current_task, off, read, read_kernel_str, read_user_buf, tp_arg},
    output::{header, reserve, submit},
};

/// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
pub fn on_exec(ctx: &RawTracePointContext) -> Result<(), i64> {
    let bprm: u64 = tp_arg(ctx, 2);
    let Some(mut entry) = reserve::<ExecEvent>(EventKind::Exec) else {
        return Ok(());
    };
    let filename = read::<u64>(bprm + off!(linux_binprm_filename));
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points to the reserved entry, valid for writes of an ExecEvent and 8-byte
    // aligned (the ring buffer's record alignment, checked by `reserve`). Fields are written
    // through raw pointers, so no reference to the uninitialised entry is formed, and the
    // string helpers write at most the size of their field.
    unsafe {
        (&raw mut (*e).header).write(header(EventKind::Exec));
        (&raw mut (*e)._pad).write(0);
        (&raw mut (*e).filename).cast::<u8>().write(0);
        if let Ok(filename) = filename {
            let _ = read_kernel_str(&raw mut (*e).filename, filename);
        }
        (&raw mut (*e).args_len).write(read_args(&raw mut (*e).args).unwrap_or(0));
    }
    submit(entry);
    Ok(())
}

/// Copies the new image's argv (NUL-separated) from `mm->arg_start..arg_end`.
///
/// # Safety
/// `buf` must be valid for writes of `ARGS_LEN` bytes.
#[inline(always)]
unsafe fn read_args(buf: *mut [u8; ARGS_LEN]) -> Result<u32, i64> {
    let mm: u64 = read(current_task() + off!(task_struct_mm))?;
    let start: u64 = read(mm + off!(mm_struct_arg_start))?;
    let end: u64 = read(mm + off!(mm_struct_arg_end))?;
    let len = end.saturating_sub(start);
    let len = if len > ARGS_LEN as u64 {
        ARGS_LEN as u64
    } else {
        len
    } as usize;
    if len == 0 {
        return Ok(0);
    }
    // A constant-size read keeps the verifier happy; bytes past `len` are ignored.
    // SAFETY: the caller guarantees `buf` is writable for ARGS_LEN bytes.
    if unsafe { read_user_buf(buf, ARGS_LEN, start) }.is_err() {
        // The full read ran off the end of the mapping: read exactly `len` bytes, masked so
        // the verifier sees a bound.
        // SAFETY: as above; the masked length is below ARGS_LEN.
        unsafe { read_user_buf(buf, len & (ARGS_LEN - 1), start) }?;
    }
    Ok(len as u32)
}

/// sched_process_fork(struct task_struct *parent, struct task_struct *child)
pub fn on_fork(ctx: &RawTracePointContext) -> Result<(), i64> {
    let child: u64 = tp_arg(ctx, 1);
    let child_tgid: u32 = read(child + off!(task_struct_tgid))?;
    let child_pid: u32 = read(child + off!(task_struct_pid))?;
    if child_pid != child_tgid {
        return Ok(()); // a new thread, not a new process
    }
    let Some(mut entry) = reserve::<ForkEvent>(EventKind::Fork) else {
        return Ok(());
    };
    entry.write(ForkEvent {
        header: header(EventKind::Fork),
        child_tgid,
        _pad: 0,
    });
    submit(entry);
    Ok(())
}

/// sched_process_exit(struct task_struct *p, ...): reported once per process, for its leader.
pub fn on_exit(_ctx: &RawTracePointContext) -> Result<(), i64> {
    let task = current_task();
    let tgid: u32 = read(task + off!(task_struct_tgid))?;
    let pid: u32 = read(task + off!(task_struct_pid))?;
    if pid != tgid {
        return Ok(());
    }
    let exit_code: u32 = read(task + off!(task_struct_exit_code))?;
    let Some(mut entry) = reserve::<ExitEvent>(EventKind::Exit) else {
        return Ok(());
    };
    entry.write(ExitEvent {
        header: header(EventKind::Exit),
        exit_code,
        _pad: 0,
    });
    submit(entry);
    Ok(())
}
