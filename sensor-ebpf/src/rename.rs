//! Renames, unlinks and links: a successful call that changes which file a name refers to.
//!
//! `sed -i`, `visudo` and an editor's save replace a watched file by renaming a temporary
//! file over it; an attacker moves a key away, exchanges it with a decoy, or links it under
//! another name. The kernel has no file to classify here (an unlinked name is gone, a renamed
//! one has a new parent), so the event carries both path strings as passed and user space
//! resolves them. So that `rm -rf` of a build tree or a package manager's renames do not all
//! reach user space (nor charge the caller's budget), a call is sent only when the last
//! component of either path, or the one before it, is a watched name (`WATCHED_LEAVES`, filled
//! by the agent): docs/probes.md, "Renames, unlinks and links".

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use sensor_common::{
    syscall::{Watched, AT_FDCWD},
    EventKind, LeafKey, PathChangeEvent, PathSyscall, NAME_LEN, REQUESTED_LEN,
};

use crate::{
    kernel::{fd_file, off, read_kernel_str, read_user_str, BtfPtr, FieldPtr, RawPtr, SyscallArgs},
    output::{header, send},
    PathScan, PATH_SCAN, PATH_SCRATCH, WATCHED_LEAVES,
};

#[inline(always)]
pub fn on_path_change(
    task: BtfPtr,
    watched: Watched,
    args: &SyscallArgs,
    ret: i64,
    compat: bool,
) -> Result<(), i64> {
    // A failed call changed nothing.
    if ret != 0 {
        return Ok(());
    }
    let a = &args.0;
    // Compat arguments are already 32 bits wide: `as i32` gives the dfd's sign back.
    let (syscall, old_dfd, old, new_dfd, new, flags) = match watched {
        Watched::Rename => (PathSyscall::Rename, AT_FDCWD, a[0], AT_FDCWD, a[1], 0),
        Watched::Renameat => (
            PathSyscall::Renameat,
            a[0] as i32,
            a[1],
            a[2] as i32,
            a[3],
            0,
        ),
        Watched::Renameat2 => (
            PathSyscall::Renameat2,
            a[0] as i32,
            a[1],
            a[2] as i32,
            a[3],
            a[4] as u32,
        ),
        Watched::Unlink => (PathSyscall::Unlink, AT_FDCWD, a[0], AT_FDCWD, 0, 0),
        Watched::Unlinkat => (
            PathSyscall::Unlinkat,
            a[0] as i32,
            a[1],
            AT_FDCWD,
            0,
            a[2] as u32,
        ),
        Watched::Link => (PathSyscall::Link, AT_FDCWD, a[0], AT_FDCWD, a[1], 0),
        Watched::Linkat => (
            PathSyscall::Linkat,
            a[0] as i32,
            a[1],
            a[2] as i32,
            a[3],
            a[4] as u32,
        ),
        _ => return Ok(()),
    };
    // Built in a per-CPU slot: two path strings do not fit the 512-byte stack, and building
    // in the ring buffer would take room (and count a loss when there is none) for a call
    // the prefilter then drops.
    let e = PATH_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: `e` is this CPU's slot of a per-CPU array, valid, 8-byte aligned and used by no
    // other program while this one runs (migration is disabled and these tracepoints do not
    // nest on one CPU). The string helpers write at most the size of their field.
    unsafe {
        (&raw mut (*e).header.kind).write(watched.event_kind() as u8);
        (&raw mut (*e).syscall).write(syscall as u8);
        (&raw mut (*e).flags).write(flags);
        (&raw mut (*e).old_dfd).write(old_dfd);
        (&raw mut (*e).new_dfd).write(new_dfd);
        (&raw mut (*e).compat).write(compat as u8);
        (&raw mut (*e).old).cast::<u8>().write(0);
        (&raw mut (*e).new).cast::<u8>().write(0);
        let old_len = if old != 0 {
            read_user_str(&raw mut (*e).old, old).unwrap_or(0)
        } else {
            0
        };
        let new_len = if new != 0 {
            read_user_str(&raw mut (*e).new, new).unwrap_or(0)
        } else {
            0
        };
        (&raw mut (*e).old_truncated).write((old_len >= REQUESTED_LEN) as u8);
        (&raw mut (*e).new_truncated).write((new_len >= REQUESTED_LEN) as u8);
        (&raw mut (*e).ret).write(old_len as i64);
        (&raw mut (*e).old_base_ino).write(new_len as u64);
    }
    filter_and_send(task, e);
    Ok(())
}

/// The rest of [`on_path_change`], reading what it wrote back from the slot (volatile, so
/// the compiler cannot carry the constants of each syscall's arm over): every syscall then
/// reaches the prefilter in one verifier state instead of one per arm and entry.
#[inline(always)]
fn filter_and_send(task: BtfPtr, e: *mut PathChangeEvent) {
    // SAFETY: as in `on_path_change`; the fields read here were written there, `ret` and
    // `old_base_ino` holding the two string lengths until they are overwritten below.
    unsafe {
        let old_len = core::ptr::read_volatile(&raw const (*e).ret) as usize;
        let new_len = core::ptr::read_volatile(&raw const (*e).old_base_ino) as usize;
        let old_dfd = core::ptr::read_volatile(&raw const (*e).old_dfd);
        let new_dfd = core::ptr::read_volatile(&raw const (*e).new_dfd);
        let (old_buf, new_buf) = (&raw const (*e).old, &raw const (*e).new);
        if !names_watched(task, old_buf, old_len, old_dfd)
            && !(new_len > 0 && names_watched(task, new_buf, new_len, new_dfd))
        {
            return;
        }
        let Some(kind) =
            EventKind::from_repr(core::ptr::read_volatile(&raw const (*e).header.kind))
        else {
            return;
        };
        // Every field is written before the slot is read as a whole by `send`.
        (&raw mut (*e).header).write(header(kind));
        // Only successful calls get here.
        (&raw mut (*e).ret).write(0);
        let (dev, ino) = base_identity(task, old_buf, old_dfd);
        (&raw mut (*e).old_base_dev).write(dev);
        (&raw mut (*e).old_base_ino).write(ino);
        let (dev, ino) = if new_len > 0 {
            base_identity(task, new_buf, new_dfd)
        } else {
            (0, 0)
        };
        (&raw mut (*e).new_base_dev).write(dev);
        (&raw mut (*e).new_base_ino).write(ino);
        send(kind, &*e);
    }
}

/// Whether the path at `buf` (`len` bytes with its NUL, as the string helper returned) may
/// name a watched file or directory: its last component, or the one before it, is in
/// `WATCHED_LEAVES`. For a one-component relative path the one before it is the name of the
/// directory it is relative to (`dfd`'s, or the working directory's). A path cut to fit
/// passes: its end is unknown.
#[inline(always)]
fn names_watched(task: BtfPtr, buf: *const [u8; REQUESTED_LEN], len: usize, dfd: i32) -> bool {
    if len >= REQUESTED_LEN {
        return true;
    }
    if len <= 1 {
        return false;
    }
    let Some(scan) = PATH_SCAN.get_ptr_mut(0) else {
        return true;
    };
    // The positions live in map memory, which the verifier does not track by value: kept in
    // registers, every (position, position) pair would be a state of its own to verify.
    // SAFETY: `scan` is this CPU's slot of a per-CPU array (as `PATH_SCRATCH`); `buf` points
    // into this CPU's `PATH_SCRATCH` slot, `REQUESTED_LEN` bytes, read at indexes below that.
    unsafe {
        // Volatile: the compiler would otherwise keep the positions in registers.
        let p = (&raw mut (*scan).pos) as *mut u64;
        for k in 0..4 {
            core::ptr::write_volatile(p.add(k), 0);
        }
        let mut after_slash = true;
        for i in 0..REQUESTED_LEN {
            let c = *(buf as *const u8).add(i);
            if c == 0 {
                break;
            }
            if c == b'/' {
                after_slash = true;
                continue;
            }
            if after_slash {
                // A component starts: the one before becomes the previous component.
                core::ptr::write_volatile(p.add(2), core::ptr::read_volatile(p));
                core::ptr::write_volatile(p.add(3), core::ptr::read_volatile(p.add(1)));
                core::ptr::write_volatile(p, i as u64);
                after_slash = false;
            }
            core::ptr::write_volatile(p.add(1), i as u64 + 1);
        }
        let [start, end, prev_start, prev_end] =
            [0, 1, 2, 3].map(|k| core::ptr::read_volatile(p.add(k)));
        let base = buf as u64;
        if component_watched(scan, base, start, end)
            || component_watched(scan, base, prev_start, prev_end)
        {
            return true;
        }
        // One component, relative: its parent is the directory it is relative to.
        let relative = *(buf as *const u8) != b'/';
        relative && prev_end == 0 && end != 0 && base_dir_watched(task, scan, dfd)
    }
}

/// Whether the component `[start, end)` of the string at `base` is a watched name (empty:
/// no). Names longer than a key are compared by their first `NAME_LEN - 1` bytes, as the
/// agent writes them.
#[inline(always)]
fn component_watched(scan: *mut PathScan, base: u64, start: u64, end: u64) -> bool {
    if end <= start || end > REQUESTED_LEN as u64 {
        return false;
    }
    let mut len = end - start;
    if len > NAME_LEN as u64 - 1 {
        len = NAME_LEN as u64 - 1;
    }
    let key = zeroed_key(scan);
    // SAFETY: the helper writes at most `len` (below NAME_LEN) bytes into the key and reads
    // the source fault-safely; the source is inside the caller's string buffer.
    let r = unsafe {
        bpf_probe_read_kernel(
            key.cast(),
            (len & (NAME_LEN as u64 - 1)) as u32,
            (base + (start & (REQUESTED_LEN as u64 - 1))) as *const _,
        )
    };
    // SAFETY: the element is only tested for presence.
    r == 0 && leaf_watched(key)
}

/// The slot's key, zeroed by whole words (a byte array on the stack is zeroed by a loop of
/// 64 byte stores, which the verifier walks at every use).
#[inline(always)]
fn zeroed_key(scan: *mut PathScan) -> *mut LeafKey {
    // SAFETY: `scan` is this CPU's slot (see `names_watched`); `words` covers the key's
    // NAME_LEN bytes exactly, 8-byte aligned as the slot is.
    unsafe {
        let words = &raw mut (*scan).key;
        for i in 0..NAME_LEN / 8 {
            core::ptr::write_volatile((words as *mut u64).add(i), 0);
        }
        words.cast()
    }
}

/// Whether the key at `key` (in this CPU's slot) is a watched name.
#[inline(always)]
fn leaf_watched(key: *mut LeafKey) -> bool {
    // By reference: the key stays in the slot instead of being copied to the stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    // SAFETY: the key is initialised, in map memory valid while the program runs; the
    // element is only tested for presence.
    let found = unsafe { WATCHED_LEAVES.get(&*key) }.is_some();
    found
}

/// The dentry of the directory a relative path starts from: `dfd`'s, or the working
/// directory's for `AT_FDCWD`.
#[inline(always)]
fn base_dentry(task: BtfPtr, dfd: i32) -> Result<RawPtr, i64> {
    if dfd == AT_FDCWD {
        let fs = task.get_ptr(off!(task_struct_fs));
        Ok(RawPtr(fs.get::<u64>(off!(fs_struct_pwd_dentry))))
    } else if dfd >= 0 {
        fd_file(task, dfd as u64)?.load_ptr(off!(file_f_path_dentry))
    } else {
        Err(-1)
    }
}

/// (`s_dev`, inode) of the directory a relative path starts from; (0, 0) for an absolute
/// path or when it cannot be read.
#[inline(always)]
fn base_identity(task: BtfPtr, buf: *const [u8; REQUESTED_LEN], dfd: i32) -> (u32, u64) {
    // SAFETY: `buf` points to a string field of this CPU's `PATH_SCRATCH` slot.
    if unsafe { *(buf as *const u8) } == b'/' {
        return (0, 0);
    }
    base_identity_of(task, dfd).unwrap_or((0, 0))
}

/// See [`base_identity`]. A function of its own, inlined: as a closure LLVM made it a call,
/// whose frame on top of the program's exceeds the 512 bytes kernels before 6.4 allow.
#[inline(always)]
fn base_identity_of(task: BtfPtr, dfd: i32) -> Result<(u32, u64), i64> {
    let inode = base_dentry(task, dfd)?.load_ptr(off!(dentry_d_inode))?;
    let ino: u64 = inode.load(off!(inode_i_ino))?;
    let dev: u32 = inode
        .load_ptr(off!(inode_i_sb))?
        .load(off!(super_block_s_dev))?;
    Ok((dev, ino))
}

/// Whether the name of the directory a relative path starts from is a watched name.
/// Unreadable: passes.
#[inline(always)]
fn base_dir_watched(task: BtfPtr, scan: *mut PathScan, dfd: i32) -> bool {
    let Ok(dentry) = base_dentry(task, dfd) else {
        return true;
    };
    let Ok(name) = dentry.load::<u64>(off!(dentry_d_name_name)) else {
        return true;
    };
    let key = zeroed_key(scan);
    // SAFETY: the key is NAME_LEN bytes of this CPU's slot, the size the helper writes at most.
    if unsafe { read_kernel_str(&raw mut (*key).name, name) }.is_err() {
        return true;
    }
    leaf_watched(key)
}
