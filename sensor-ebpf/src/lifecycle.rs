//! Process lifecycle, which feeds attribution in user space: the exe and argv at exec, the
//! parent at fork, the end at exit.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_buf},
    programs::RawTracePointContext,
};
use sensor_common::{EventKind, ExecEvent, ExitEvent, ForkEvent, ARGS_LEN};

use crate::{
    kernel::{current_task, off, read, tp_arg},
    output::{fill_header, reserve},
};

/// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
pub fn on_exec(ctx: &RawTracePointContext) -> Result<(), i64> {
    let bprm: u64 = tp_arg(ctx, 2);
    let Some(mut entry) = reserve::<ExecEvent>(EventKind::Exec) else {
        return Ok(());
    };
    let e = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut e.header, EventKind::Exec);
    e._pad = 0;
    e.filename[0] = 0;
    if let Ok(filename) = read::<u64>(bprm + off!(linux_binprm_filename)) {
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(filename as *const u8, &mut e.filename) };
    }
    e.args_len = read_args(&mut e.args).unwrap_or(0);
    entry.submit(0);
    Ok(())
}

/// Copies the new image's argv (NUL-separated) from `mm->arg_start..arg_end`.
#[inline(always)]
fn read_args(buf: &mut [u8; ARGS_LEN]) -> Result<u32, i64> {
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
    unsafe { bpf_probe_read_user_buf(start as *const u8, &mut buf[..]) }.or_else(|_| unsafe {
        bpf_probe_read_user_buf(start as *const u8, &mut buf[..len & (ARGS_LEN - 1)])
    })?;
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
    let e = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut e.header, EventKind::Fork);
    e.child_tgid = child_tgid;
    e._pad = 0;
    entry.submit(0);
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
    let e = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut e.header, EventKind::Exit);
    e.exit_code = exit_code;
    e._pad = 0;
    entry.submit(0);
    Ok(())
}
