//! Credential-bearing syscalls: reported with their arguments and result, every time.

use aya_ebpf::helpers::bpf_probe_read_user_str_bytes;
use sensor_common::{syscall::Watched, EventKind, SyscallEvent};

use crate::{
    kernel::{fd_file, off, pid_nr, BtfPtr, SyscallArgs},
    output::{fill_header, reserve},
};

pub fn on_syscall(
    task: BtfPtr,
    watched: Watched,
    args: &SyscallArgs,
    ret: i64,
    compat: bool,
) -> Result<(), i64> {
    let a = &args.0;
    let (kind, target_tgid, has_key_strings) = match watched {
        Watched::Ptrace => (EventKind::Ptrace, a[1] as u32, false),
        Watched::ProcessVmReadv => (EventKind::ProcessVmReadv, a[0] as u32, false),
        Watched::ProcessVmWritev => (EventKind::ProcessVmWritev, a[0] as u32, false),
        Watched::PidfdGetfd => (
            EventKind::PidfdGetfd,
            pidfd_target(task, a[0]).unwrap_or(0),
            false,
        ),
        Watched::Keyctl => (EventKind::Keyctl, 0, false),
        Watched::AddKey => (EventKind::AddKey, 0, true),
        Watched::RequestKey => (EventKind::RequestKey, 0, true),
        _ => return Ok(()),
    };
    let Some(mut entry) = reserve::<SyscallEvent>(kind) else {
        return Ok(());
    };
    let e = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut e.header, kind);
    e.ret = ret;
    e.args = *a;
    e.target_tgid = target_tgid;
    e.compat = compat as u8;
    e._pad = [0; 3];
    e.key_type[0] = 0;
    e.key_desc[0] = 0;
    if has_key_strings {
        if a[0] != 0 {
            let _ = unsafe { bpf_probe_read_user_str_bytes(a[0] as *const u8, &mut e.key_type) };
        }
        if a[1] != 0 {
            let _ = unsafe { bpf_probe_read_user_str_bytes(a[1] as *const u8, &mut e.key_desc) };
        }
    }
    entry.submit(0);
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
