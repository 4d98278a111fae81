//! Routes to another process's memory, or to every file anyone opens, that go around the
//! file and ptrace syscalls: `perf_event_open` on another process, `bpf` program loads and
//! attachments (and the attachment to a perf event by `ioctl`), `prlimit64` on another
//! process's core limit, fanotify open/access marks.
//! Each is reported with its arguments, what it pointed to in the caller's memory, and its
//! result; the calls that are no route (on oneself, map operations, other limits, marks that
//! hand over no file) end here.

use aya_ebpf::helpers::bpf_probe_read_user;
use sensor_common::{
    syscall::{
        Watched, BPF_LINK_CREATE, BPF_PROG_ATTACH, BPF_PROG_LOAD, BPF_RAW_TRACEPOINT_OPEN,
        FAN_MARK_ADD, FAN_READ_MASK, PERF_EVENT_IOC_SET_BPF, RLIMIT_CORE,
    },
    RouteEvent,
};

use crate::{
    kernel::{is_current, read_user_buf, read_user_str, SyscallArgs},
    output::{header, reserve, submit},
};

/// Offset of `prog_name` in `union bpf_attr` for `BPF_PROG_LOAD`.
const BPF_ATTR_PROG_NAME: u64 = 48;
/// Offset of `expected_attach_type` in `union bpf_attr` for `BPF_PROG_LOAD`.
const BPF_ATTR_EXPECTED_ATTACH_TYPE: u64 = 68;

/// A user-memory value of `T`, or zero when the address does not map.
#[inline(always)]
fn user<T: Copy + Default>(addr: u64) -> T {
    // SAFETY: the helper copies into a value of its own and fails on an unmapped user
    // address; callers read integers, valid for every bit pattern.
    unsafe { bpf_probe_read_user(addr as *const T) }.unwrap_or_default()
}

/// Of the ioctls, the one reported (the others, terminals, sockets, devices, end at this
/// compare): `PERF_EVENT_IOC_SET_BPF`.
#[inline(always)]
pub fn is_reported_ioctl(cmd: u64) -> bool {
    cmd & 0xffff_ffff == PERF_EVENT_IOC_SET_BPF
}

#[inline(always)]
pub fn on_route(watched: Watched, args: &SyscallArgs, ret: i64, compat: bool) -> Result<(), i64> {
    let a = &args.0;
    let mut values = [0u64; 4];
    let target = match watched {
        Watched::PerfEventOpen => {
            let pid = a[1] as i32;
            // pid 0 is the caller; -1 with a CPU is every process on it.
            if pid == 0 || pid > 0 && is_current(pid as u32) {
                return Ok(());
            }
            values = user::<[u64; 4]>(a[0]);
            pid as u32
        }
        Watched::Bpf => {
            let cmd = a[0] & 0xffff_ffff;
            if cmd != BPF_PROG_LOAD
                && cmd != BPF_PROG_ATTACH
                && cmd != BPF_RAW_TRACEPOINT_OPEN
                && cmd != BPF_LINK_CREATE
            {
                return Ok(());
            }
            let head = user::<[u64; 2]>(a[1]);
            values[0] = head[0];
            values[1] = head[1];
            if cmd == BPF_PROG_LOAD {
                values[2] = u64::from(user::<u32>(a[1] + BPF_ATTR_EXPECTED_ATTACH_TYPE));
            }
            0
        }
        Watched::Ioctl => {
            if !is_reported_ioctl(a[1]) {
                return Ok(());
            }
            values[3] = PERF_EVENT_IOC_SET_BPF;
            0
        }
        Watched::Prlimit64 => {
            let pid = a[0] as i32;
            if a[1] & 0xffff_ffff != RLIMIT_CORE || a[2] == 0 || pid == 0 || is_current(pid as u32)
            {
                return Ok(());
            }
            values = [user::<u64>(a[2]), user::<u64>(a[2] + 8), 0, 0];
            pid as u32
        }
        Watched::FanotifyMark => {
            // The ia32 entry passes the 64-bit mask in two registers, moving dirfd and the
            // path one argument on.
            let (mask, dirfd) = if compat {
                (a[2] | a[3] << 32, a[4])
            } else {
                (a[2], a[3])
            };
            if a[1] & FAN_MARK_ADD == 0 || mask & FAN_READ_MASK == 0 {
                return Ok(());
            }
            values[0] = mask;
            values[1] = dirfd as i32 as i64 as u64;
            0
        }
        _ => return Ok(()),
    };
    let kind = watched.event_kind();
    let Some(mut entry) = reserve::<RouteEvent>(kind) else {
        return Ok(());
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points to the reserved entry, valid for writes of a RouteEvent and 8-byte
    // aligned (the ring buffer's record alignment, checked by `reserve`). Fields are written
    // through raw pointers, so no reference to the uninitialised entry is formed, and the
    // string and buffer helpers write at most the size of their field.
    unsafe {
        (&raw mut (*e).header).write(header(kind));
        (&raw mut (*e).ret).write(ret);
        (&raw mut (*e).args).write(*a);
        (&raw mut (*e).values).write(values);
        (&raw mut (*e).target_tgid).write(target);
        (&raw mut (*e).compat).write(compat as u8);
        (&raw mut (*e)._pad).write([0; 3]);
        (&raw mut (*e).name).write([0; sensor_common::BPF_NAME_LEN]);
        (&raw mut (*e).path).cast::<u8>().write(0);
        match watched {
            Watched::Bpf if a[0] & 0xffff_ffff == BPF_PROG_LOAD => {
                let name = &raw mut (*e).name;
                let _ = read_user_buf(name, sensor_common::BPF_NAME_LEN, a[1] + BPF_ATTR_PROG_NAME);
            }
            // raw_tracepoint.name is the first field of its attr.
            Watched::Bpf if a[0] & 0xffff_ffff == BPF_RAW_TRACEPOINT_OPEN && values[0] != 0 => {
                let _ = read_user_str(&raw mut (*e).path, values[0]);
            }
            Watched::FanotifyMark => {
                let path = if compat { a[5] } else { a[4] };
                if path != 0 {
                    let _ = read_user_str(&raw mut (*e).path, path);
                }
            }
            _ => {}
        }
    }
    submit(entry);
    Ok(())
}
