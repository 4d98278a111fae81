//! Credential-bearing syscalls: reported with their arguments and result, every time.

use sensor_common::{
    syscall::{Watched, CORE_SIGNALS},
    SyscallEvent,
};

use crate::{
    kernel::{fd_file, is_current, off, pid_nr, read_user_str, BtfPtr, FieldPtr, SyscallArgs},
    output::{header, reserve, submit},
};

#[inline(always)]
pub fn on_syscall(
    task: BtfPtr,
    watched: Watched,
    args: &SyscallArgs,
    ret: i64,
    compat: bool,
) -> Result<(), i64> {
    let a = &args.0;
    let mut target_on_host = false;
    let mut signal = 0;
    let (target_tgid, has_key_strings) = match watched {
        Watched::Ptrace => (a[1] as u32, false),
        Watched::ProcessVmReadv | Watched::ProcessVmWritev => (a[0] as u32, false),
        Watched::PidfdGetfd => (pidfd_target(task, a[0]).unwrap_or(0), false),
        Watched::Keyctl => (0, false),
        Watched::AddKey | Watched::RequestKey => (0, true),
        Watched::Kill | Watched::Tkill | Watched::Tgkill | Watched::PidfdSendSignal => {
            // kill(pid, sig), tkill(tid, sig), tgkill(tgid, tid, sig),
            // pidfd_send_signal(pidfd, sig, info, flags).
            let (sig, pid) = match watched {
                Watched::Tgkill => (a[2], a[0] as i32),
                Watched::PidfdSendSignal => {
                    target_on_host = true;
                    (a[1], pidfd_target(task, a[0]).unwrap_or(0) as i32)
                }
                _ => (a[1], a[0] as i32),
            };
            // A process aborting itself (`abort()` raises SIGABRT) is no route to another's
            // memory; pid 0 and negative pids (a process group, every process) are.
            if sig >= 64 || CORE_SIGNALS & (1 << sig) == 0 || pid > 0 && is_current(pid as u32) {
                return Ok(());
            }
            signal = sig as u8;
            (pid.max(0) as u32, false)
        }
        _ => return Ok(()),
    };
    let kind = watched.event_kind();
    let Some(mut entry) = reserve::<SyscallEvent>(kind) else {
        return Ok(());
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points to the reserved entry, valid for writes of a SyscallEvent and 8-byte
    // aligned (the ring buffer's record alignment, checked by `reserve`). Fields are written
    // through raw pointers, so no reference to the uninitialised entry is formed, and the
    // string helpers write at most the size of their field.
    unsafe {
        (&raw mut (*e).header).write(header(kind));
        (&raw mut (*e).ret).write(ret);
        (&raw mut (*e).args).write(*a);
        (&raw mut (*e).target_tgid).write(target_tgid);
        (&raw mut (*e).compat).write(compat as u8);
        (&raw mut (*e).target_on_host).write(target_on_host as u8);
        (&raw mut (*e).signal).write(signal);
        (&raw mut (*e)._pad).write(0);
        (&raw mut (*e).key_type).cast::<u8>().write(0);
        (&raw mut (*e).key_desc).cast::<u8>().write(0);
        if has_key_strings {
            if a[0] != 0 {
                let _ = read_user_str(&raw mut (*e).key_type, a[0]);
            }
            if a[1] != 0 {
                let _ = read_user_str(&raw mut (*e).key_desc, a[1]);
            }
        }
    }
    submit(entry);
    Ok(())
}

/// The process a pidfd refers to. Its `struct pid` hangs off the pidfs inode (`i_private`,
/// kernels since 6.9) or, on older kernels, off the anonymous file (`private_data`).
#[inline(always)]
fn pidfd_target(task: BtfPtr, pidfd: u64) -> Result<u32, i64> {
    let file = fd_file(task, pidfd)?;
    let mut pid: u64 = file
        .load_ptr(off!(file_f_inode))?
        .load(off!(inode_i_private))?;
    if pid == 0 {
        pid = file.load(off!(file_private_data))?;
    }
    pid_nr(pid)
}
