//! Opens: which file did the open actually open, and is it watched? Entered from the
//! `sys_exit` tracepoint (the new descriptor) or from a hook on the kernel's open path (the
//! `struct file` itself).

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes,
    bpf_probe_read_user,
    generated::{self, bpf_d_path},
};
use sensor_common::{
    name_length_bit,
    syscall::{
        self, Watched, AT_FDCWD, EACCES, EPERM, EXEC_COMPAT, EXEC_NATIVE, FOLD_FLAGS,
        IO_URING_ENTER, OVERLAYFS_SUPER_MAGIC, PF_IO_WORKER, PROC_SUPER_MAGIC, TRACEFS_MAGIC,
        WRITE_FLAGS,
    },
    tree_depth_bit, EventKind, FileEvent, FileHandleHeader, FoldKey, InodeKey, MatchKind, NameKey,
    OpenSyscall, TreeMiss, DIR_ANY_NAME, MAX_HANDLE_SZ, MAX_TREE_DEPTH, NAME_FILE, NAME_LEN,
    OVL_REALFILE_IS_PRIVATE_DATA, PROC_CMDLINE, PROC_ENVIRON, PROC_KCORE, PROC_MAPS, PROC_MEM,
    REQUESTED_LEN, WATCH_FILTER_WORDS,
};

use crate::{
    flood,
    kernel::{
        fd_file, in_compat_syscall, off, pid_nr, read_kernel_str, read_user_str, syscall_nr,
        user_regs, BtfPtr, FieldPtr, RawPtr, Regs, SyscallArgs,
    },
    output::{header, is_agent, reserve, submit},
    OpenScratch, CONFIG, OPEN_SCRATCH, TREE_GATE, TREE_MISSES, WATCHED_DIRS, WATCHED_INODES,
    WATCHED_NAMES, WATCH_FILTER,
};

/// `creat(path, mode)` is `open(path, O_CREAT | O_WRONLY | O_TRUNC, mode)`.
const CREAT_FLAGS: u64 = 0o100 | 0o1 | 0o1000;

/// The "error" that ends processing of an open that is not watched. Returning it through
/// `Result` keeps the verifier away from half-initialised `Option<Match>` copies.
pub const NOT_WATCHED: i64 = 0;

/// A kernel read of the ancestry walk failed (`EFAULT`): not a result to remember.
const UNREADABLE: i64 = -14;

struct Match {
    kind: MatchKind,
    rule: u32,
    dev: u32,
    ino: u64,
    target_tgid: u32,
    /// Address of the opened dentry's name; 0 when the open failed.
    name: u64,
    /// The overlay the file was opened through, 0 when none.
    overlay_dev: u32,
}

/// A successful open is classified from its new descriptor alone; the arguments are read
/// only for an open that matched. The `sys_exit` tracepoint's entry.
#[inline(always)]
pub fn on_open(
    task: BtfPtr,
    regs: impl Regs,
    compat: bool,
    watched: Watched,
    ret: i64,
) -> Result<(), i64> {
    let m = if ret >= 0 {
        classify(fd_file(task, ret as u64)?)?
    } else if ret == -EACCES || ret == -EPERM {
        // No file was opened: user space resolves the requested path against the caller's
        // root and working directory (or compares the handle with the watched files') and
        // keeps the event only if it names a watched file.
        Match::denied(watched == Watched::OpenByHandleAt)
    } else {
        return Ok(());
    };
    let args = SyscallArgs::read(regs, compat);
    let mut call = OpenCall::of_syscall(watched, &args, compat).ok_or(NOT_WATCHED)?;
    if m.kind == MatchKind::DeniedHandle {
        call.path = args.0[1];
    }
    report(&m, &call, ret, None)
}

/// A file the kernel's open path is opening (LSM `file_open`, fexit on `security_file_open`
/// or `do_filp_open`, kretprobe on `do_filp_open`): every route to it, io_uring's and
/// exec's included, ends here before the descriptor exists, so the event's `ret` is 0. With
/// `typed`, the same file as a typed pointer, the opened path is asked of `bpf_d_path` for a
/// call that passed none.
#[inline(always)]
pub fn on_opened<P: FieldPtr>(file: P, typed: Option<BtfPtr>) -> Result<(), i64> {
    let m = classify(file)?;
    if is_agent() {
        return Ok(());
    }
    let mut call = OpenCall::current(BtfPtr::current_task());
    if call.path == 0 {
        call.flags = file.load::<u32>(off!(file_f_flags))? as u64;
    }
    report(&m, &call, 0, typed.filter(|_| call.path == 0))
}

/// An open that failed on `do_filp_open` (fexit, kretprobe): a denied attempt is resolved
/// in user space from the path the caller passed, or else the kernel's copy of it
/// (`kernel_path`, `filename.name`, 0 when the hook has none) relative to `dfd`.
#[inline(always)]
pub fn on_failed_open(ret: i64, dfd: i32, kernel_path: u64) -> Result<(), i64> {
    if ret != -EACCES && ret != -EPERM || is_agent() {
        return Ok(());
    }
    let mut call = OpenCall::current(BtfPtr::current_task());
    if call.path == 0 {
        call.path = kernel_path;
        call.path_in_kernel = true;
        call.dfd = dfd;
    }
    if call.path == 0 {
        return Ok(());
    }
    report(&Match::denied(false), &call, ret, None)
}

/// What an open's caller asked for, as far as the hook can tell.
struct OpenCall {
    syscall: OpenSyscall,
    dfd: i32,
    /// Address of the path string the caller passed; 0 when there is none.
    path: u64,
    /// `path` is the kernel's copy, not the caller's memory.
    path_in_kernel: bool,
    flags: u64,
    compat: bool,
}

impl OpenCall {
    /// From an open-family syscall's arguments; `None` for another syscall.
    #[inline(always)]
    fn of_syscall(watched: Watched, args: &SyscallArgs, compat: bool) -> Option<OpenCall> {
        let a = &args.0;
        let (syscall, dfd, path, flags) = match watched {
            Watched::Open => (OpenSyscall::Open, AT_FDCWD, a[0], a[1]),
            Watched::Creat => (OpenSyscall::Creat, AT_FDCWD, a[0], CREAT_FLAGS),
            Watched::Openat => (OpenSyscall::Openat, a[0] as i32, a[1], a[2]),
            // open_how.flags is the first field of the caller's struct.
            Watched::Openat2 => {
                // SAFETY: the helper copies into a u64 of its own and fails on an unmapped
                // user address; every bit pattern is a valid u64.
                let how_flags = unsafe { bpf_probe_read_user(a[2] as *const u64) }.unwrap_or(0);
                (OpenSyscall::Openat2, a[0] as i32, a[1], how_flags)
            }
            Watched::OpenByHandleAt => (OpenSyscall::OpenByHandleAt, a[0] as i32, 0, a[2]),
            _ => return None,
        };
        Some(OpenCall {
            syscall,
            dfd,
            path,
            path_in_kernel: false,
            flags,
            compat,
        })
    }

    /// From the current task's saved registers, for a hook that is not handed the
    /// syscall: an open-family syscall's arguments, or which other call it is.
    #[inline(always)]
    fn current(task: BtfPtr) -> OpenCall {
        let compat = in_compat_syscall(task);
        let other = |syscall| OpenCall {
            syscall,
            dfd: AT_FDCWD,
            path: 0,
            path_in_kernel: false,
            flags: 0,
            compat,
        };
        if task.get::<u32>(off!(task_struct_flags)) & PF_IO_WORKER != 0 {
            return other(OpenSyscall::IoUring);
        }
        let Some(regs) = user_regs(task) else {
            return other(OpenSyscall::Kernel);
        };
        let nr = syscall_nr(regs);
        let watched = if compat {
            syscall::compat(nr)
        } else {
            syscall::native(nr)
        };
        if let Some(call) =
            watched.and_then(|w| OpenCall::of_syscall(w, &SyscallArgs::read(regs, compat), compat))
        {
            return call;
        }
        let exec = if compat { EXEC_COMPAT } else { EXEC_NATIVE };
        other(if nr == IO_URING_ENTER {
            OpenSyscall::IoUring
        } else if nr == exec[0] || nr == exec[1] {
            OpenSyscall::Exec
        } else {
            OpenSyscall::Kernel
        })
    }
}

/// The event of an open `m` matched (or a denied attempt), unless it folds into one sent.
#[inline(always)]
fn report(m: &Match, call: &OpenCall, ret: i64, d_path_of: Option<BtfPtr>) -> Result<(), i64> {
    // Every way here (each kind of match, each call a hook tells) carries other constants;
    // passed through memory the verifier sees one set of unknown values, so it checks what
    // follows once rather than for each (kernels before 6.4 otherwise give up at a million
    // instructions on the hooks that see every open).
    let slot = OPEN_SCRATCH.get_ptr_mut(0).ok_or(NOT_WATCHED)?;
    // SAFETY: `slot` is this CPU's element of a per-CPU array, valid and aligned for an
    // OpenScratch, used by one program at a time on this CPU (programs do not nest on it);
    // the volatile read makes the compiler load back what was stored.
    let r = unsafe {
        slot.write(OpenScratch {
            ret,
            flags: call.flags,
            ino: m.ino,
            name: m.name,
            path: call.path,
            dev: m.dev,
            rule: m.rule,
            target_tgid: m.target_tgid,
            overlay_dev: m.overlay_dev,
            dfd: call.dfd,
            matched: m.kind as u8,
            syscall: call.syscall as u8,
            compat: call.compat as u8,
            path_in_kernel: call.path_in_kernel as u8,
        });
        core::ptr::read_volatile(slot)
    };
    let (ret, flags, path, dfd) = (r.ret, r.flags, r.path, r.dfd);
    let kind = if r.matched == MatchKind::Proc as u8 {
        EventKind::ProcAccess
    } else if r.matched == MatchKind::Tracefs as u8 || r.matched == MatchKind::CorePattern as u8 {
        // Reading a probe list or the pattern is no route: only an open for writing is.
        if flags & WRITE_FLAGS == 0 {
            return Ok(());
        }
        if r.matched == MatchKind::Tracefs as u8 {
            EventKind::TracefsWrite
        } else {
            EventKind::CorePatternWrite
        }
    } else {
        EventKind::FileOpen
    };
    // Only opens that opened something fold: a denied attempt has no inode to tell files apart.
    let fold = ret >= 0;
    let key = FoldKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        dev: r.dev,
        ino: r.ino,
        flags: flags & FOLD_FLAGS,
        kind: kind as u8,
        syscall: r.syscall,
        _pad: [0; 6],
    };
    // SAFETY: the helper takes no arguments and only returns a number.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if fold && flood::folded(&key, now) {
        return Ok(());
    }
    let head = header(kind);
    if fold {
        flood::open_window(
            &key,
            now,
            &flood::Sent {
                header: &head,
                flags,
                rule: r.rule,
                target_tgid: r.target_tgid,
                matched: r.matched,
                compat: r.compat,
                name: r.name,
            },
        );
    }
    // Reserved after the fold window's bookkeeping and checked at once: kernels before 6.4
    // lose track of an entry carried across other calls and refuse the program (an
    // "unreleased reference" on a path they cannot rule out).
    let Some(mut entry) = reserve::<FileEvent>(kind) else {
        return Ok(());
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points to the reserved entry, valid for writes of a FileEvent and 8-byte
    // aligned (the ring buffer's record alignment, checked by `reserve`). Fields are written
    // through raw pointers, so no reference to the uninitialised entry is formed, and the
    // string helpers write at most the size of their field.
    unsafe {
        (&raw mut (*e).header).write(head);
        (&raw mut (*e).ret).write(ret);
        (&raw mut (*e).flags).write(flags);
        (&raw mut (*e).ino).write(r.ino);
        (&raw mut (*e).dev).write(r.dev);
        (&raw mut (*e).rule).write(r.rule);
        (&raw mut (*e).target_tgid).write(r.target_tgid);
        (&raw mut (*e).dfd).write(dfd);
        (&raw mut (*e).syscall).write(r.syscall);
        (&raw mut (*e).matched).write(r.matched);
        (&raw mut (*e).compat).write(r.compat);
        (&raw mut (*e).overlay_dev).write(r.overlay_dev);
        (&raw mut (*e).name).cast::<u8>().write(0);
        if r.name != 0 {
            let _ = read_kernel_str(&raw mut (*e).name, r.name);
        }
        (&raw mut (*e).requested).cast::<u8>().write(0);
        let requested = if path == 0 {
            if let Some(file) = d_path_of {
                d_path(file, &raw mut (*e).requested);
            }
            0
        } else if r.matched == MatchKind::DeniedHandle as u8 {
            read_user_handle(&raw mut (*e).requested, path)
        } else if r.path_in_kernel != 0 {
            read_kernel_str(&raw mut (*e).requested, path).unwrap_or(0)
        } else {
            read_user_str(&raw mut (*e).requested, path).unwrap_or(0)
        };
        // The helper's length counts the NUL: a string that filled the field was cut.
        (&raw mut (*e).requested_truncated).write((requested >= REQUESTED_LEN) as u8);
    }
    submit(entry);
    Ok(())
}

/// Copies the caller's `struct file_handle` at `src` into `dst`: its header, then at most
/// `MAX_HANDLE_SZ` bytes of handle (more is no handle the kernel takes: the length is kept,
/// so user space sees it). Returns the bytes copied; 0 when the header is unreadable (then
/// written with a length no handle has).
///
/// # Safety
/// `dst` must be valid for writes of `REQUESTED_LEN` bytes.
#[inline(always)]
unsafe fn read_user_handle(dst: *mut [u8; REQUESTED_LEN], src: u64) -> usize {
    const HEADER: usize = size_of::<FileHandleHeader>();
    // SAFETY: the helper copies into a value of its own and fails on an unmapped user
    // address; every bit pattern is a valid header.
    let read = unsafe { bpf_probe_read_user(src as *const FileHandleHeader) };
    // An unreadable header is written as a length no handle has, which user space refuses.
    let head = read.unwrap_or(FileHandleHeader {
        handle_bytes: u32::MAX,
        handle_type: 0,
    });
    // SAFETY: the caller guarantees `dst` is writable for `REQUESTED_LEN` bytes, more than
    // the header; the write needs no alignment.
    unsafe { dst.cast::<FileHandleHeader>().write_unaligned(head) };
    if read.is_err() {
        return 0;
    }
    let len = (head.handle_bytes as usize).min(MAX_HANDLE_SZ);
    // SAFETY: `HEADER + len` is at most `HEADER + MAX_HANDLE_SZ` < `REQUESTED_LEN`, so the
    // helper writes inside `dst`; it reads user memory fault-safely (a short handle leaves
    // zeroes, which user space does not match).
    let ok = unsafe {
        generated::bpf_probe_read_user(
            dst.cast::<u8>().add(HEADER).cast(),
            len as u32,
            (src + HEADER as u64) as *const c_void,
        )
    } == 0;
    if ok {
        HEADER + len
    } else {
        HEADER
    }
}

/// Writes the path of the typed `file` in the caller's root into `dst` (empty if the
/// kernel cannot give it whole).
///
/// # Safety
/// `dst` must be valid for writes of `REQUESTED_LEN` bytes.
#[inline(always)]
unsafe fn d_path(file: BtfPtr, dst: *mut [u8; REQUESTED_LEN]) {
    let path = file.field_ptr(off!(file_f_path));
    // SAFETY: `file` is a typed `struct file` pointer the hook was handed, and `f_path` a
    // `struct path` member of it at a load-time constant offset, as the helper's BTF
    // argument check requires; the helper writes at most `REQUESTED_LEN` bytes to `dst`,
    // which the caller guarantees are writable.
    let n = unsafe { bpf_d_path(path as *mut _, dst.cast(), REQUESTED_LEN as u32) };
    if n < 0 {
        // SAFETY: as above.
        unsafe { dst.cast::<u8>().write(0) };
    }
}

/// Whether `file` is watched: by inode, by procfs identity, or by its place in a watched
/// directory. A file opened through an overlay is judged as the file it opened on the layer
/// below (an overlay's inode matches nothing watched). Unwatched opens end here with
/// [`NOT_WATCHED`] and never reach user space.
#[inline(always)]
fn classify<P: FieldPtr>(file: P) -> Result<Match, i64> {
    let f = Opened::read(file)?;
    if let Some(v) = watched_inode(f.key) {
        return Ok(f.hit(MatchKind::Inode, v.rule, 0));
    }
    // procfs, tracefs and overlays, like every pseudo file system, have an anonymous device
    // (major 0): files on block devices skip the superblock's magic.
    if f.key.dev >> 20 == 0 {
        let magic: u64 = f.sb.load(off!(super_block_s_magic))?;
        if let Some(kind) = kernel_control_file(magic, f.dentry, f.name)? {
            return Ok(f.hit(kind, 0, 0));
        }
        if magic == PROC_SUPER_MAGIC {
            return proc_match(f.inode, f.name, f.key.dev, f.key.ino);
        }
        if magic == OVERLAYFS_SUPER_MAGIC {
            return through_overlay(file, f.key.dev);
        }
    }
    let (kind, rule) = in_watched_dir(&f)?;
    Ok(f.hit(kind, rule, 0))
}

/// A file opened through an overlay: the file it opened on the layer below (itself maybe
/// an overlay's, once: `FILESYSTEM_MAX_STACK_DEPTH`), classified by inode and directory.
#[inline(always)]
fn through_overlay<P: FieldPtr>(file: P, overlay_dev: u32) -> Result<Match, i64> {
    let mut f = Opened::read(real_file(file)?)?;
    if f.key.dev >> 20 == 0 && f.sb.load::<u64>(off!(super_block_s_magic))? == OVERLAYFS_SUPER_MAGIC
    {
        f = Opened::read(real_file(f.file)?)?;
    }
    if let Some(v) = watched_inode(f.key) {
        return Ok(f.hit(MatchKind::Inode, v.rule, overlay_dev));
    }
    let (kind, rule) = in_watched_dir(&f)?;
    Ok(f.hit(kind, rule, overlay_dev))
}

/// Whether `f`'s directory is watched: for every name, or for `f`'s name; how, and the
/// rule id of the entry. A directory the set does not hold may be new under one it holds:
/// then the file's ancestors decide.
#[inline(always)]
fn in_watched_dir<P: FieldPtr>(f: &Opened<P>) -> Result<(MatchKind, u32), i64> {
    let parent = f.dentry.load_ptr(off!(dentry_d_parent))?;
    let parent_inode = parent.load_ptr(off!(dentry_d_inode))?;
    let dir = InodeKey {
        dev: f.key.dev,
        _pad: 0,
        ino: parent_inode.load(off!(inode_i_ino))?,
    };
    let dv = if may_be_watched(&dir) {
        // SAFETY: as for WATCHED_INODES in `watched_inode`.
        unsafe { WATCHED_DIRS.get(dir) }
    } else {
        None
    };
    let Some(dv) = dv else {
        // A change time that cannot be read is taken as new: the directory is walked. (A
        // typed load cannot fail, it reads 0 at a bad address; only a parent without an
        // inode would give one, which the directory of an opened file never is.)
        let ctime = parent_inode
            .load(off!(inode_i_ctime_sec))
            .unwrap_or(i64::MAX);
        return Ok((
            MatchKind::Tree,
            in_watched_tree(dir, parent.raw(), parent_inode, ctime)?,
        ));
    };
    if dv.flags & DIR_ANY_NAME != 0 {
        return Ok((MatchKind::DirAny, dv.rule));
    }
    match child_entry(dir, dv.name_lengths, f.dentry, f.name)? {
        Some(v) if v.flags & NAME_FILE != 0 => Ok((MatchKind::DirName, v.rule)),
        _ => Err(NOT_WATCHED),
    }
}

/// The `WATCHED_INODES` entry of `key`, if its `WATCH_FILTER` bit says it may have one.
#[inline(always)]
fn watched_inode(key: InodeKey) -> Option<&'static sensor_common::WatchValue> {
    if !may_be_watched(&key) {
        return None;
    }
    // SAFETY: the element stays mapped while the program runs (RCU read side) and is only
    // read here. WatchValue is plain integers, valid for every bit pattern, so an update by
    // user space racing with this read can at worst give one event a stale rule id.
    unsafe { WATCHED_INODES.get(key) }
}

/// Whether `key` may be in `WATCHED_INODES` or `WATCHED_DIRS`: its `WATCH_FILTER` bit.
/// Without the filter's element (it always has one) every key is looked up.
#[inline(always)]
fn may_be_watched(key: &InodeKey) -> bool {
    let (word, mask) = key.filter_bit();
    WATCH_FILTER
        .get(0)
        .is_none_or(|filter| filter[word & (WATCH_FILTER_WORDS - 1)] & mask != 0)
}

/// The ancestry walk, for a file whose directory `parent` (identity `dir`, inode
/// `parent_inode`, change time `ctime`) the set does not hold: the rule id of the entry
/// that matched. Only a directory changed since the set was resolved can be missing from
/// it (created, or given a new entry), so an older one is not walked; nor one whose walk
/// found nothing before, unchanged since.
#[inline(always)]
fn in_watched_tree(
    dir: InodeKey,
    parent: RawPtr,
    parent_inode: impl FieldPtr,
    ctime: i64,
) -> Result<u32, i64> {
    let gate = TREE_GATE.get(0).ok_or(NOT_WATCHED)?;
    if ctime < gate.not_before {
        return Err(NOT_WATCHED);
    }
    let miss = TreeMiss {
        ctime,
        gate: gate.generation,
        inode_generation: parent_inode.load(off!(inode_i_generation))?,
        _pad: 0,
    };
    // SAFETY: the element stays mapped while the program runs and is only read; TreeMiss is
    // plain integers, so a concurrent update can at worst cause one more walk.
    if unsafe { TREE_MISSES.get(dir) } == Some(&miss) {
        return Err(NOT_WATCHED);
    }
    match walk(dir.dev, parent, gate.max_depth) {
        NOT_WATCHED => {
            // A full map forgets its least recently used directory: it is walked again.
            let _ = TREE_MISSES.insert(dir, miss, 0);
            Err(NOT_WATCHED)
        }
        rule if rule > 0 => Ok(rule as u32),
        error => Err(error),
    }
}

/// From `parent` up to the first directory the set holds, at most `MAX_TREE_DEPTH` levels
/// above the file, no further than `max_depth`, never past the file system's root: the file
/// is watched if that directory puts a rule's file exactly that many levels below it,
/// through any child (a glob) or the child the walk came through (a name). The entry's rule
/// id (from 1), [`NOT_WATCHED`] or [`UNREADABLE`]: a plain number, because LLVM compiled
/// the `Result` of this unrolled loop into code the verifier rejects.
#[inline(always)]
fn walk(dev: u32, parent: RawPtr, max_depth: u32) -> i64 {
    let mut child = parent;
    for depth in 2..=MAX_TREE_DEPTH {
        if depth > max_depth {
            break;
        }
        let Ok(dentry) = child.load_ptr(off!(dentry_d_parent)) else {
            return UNREADABLE;
        };
        // The root of its file system is its own parent.
        if dentry.0 == child.0 {
            break;
        }
        let Ok(ino) = dentry
            .load_ptr(off!(dentry_d_inode))
            .and_then(|inode| inode.load(off!(inode_i_ino)))
        else {
            return UNREADABLE;
        };
        let dir = InodeKey { dev, _pad: 0, ino };
        // SAFETY: as for WATCHED_INODES in `watched_inode`.
        if let Some(dv) = unsafe { WATCHED_DIRS.get(dir) } {
            let bit = tree_depth_bit(depth);
            if dv.tree_depths & bit != 0 {
                return dv.rule as i64;
            }
            let Ok(name) = child.load::<u64>(off!(dentry_d_name_name)) else {
                return UNREADABLE;
            };
            return match child_entry(dir, dv.tree_name_lengths, child, name) {
                Ok(Some(v)) if v.tree_depths & bit != 0 => v.rule as i64,
                Ok(_) => NOT_WATCHED,
                Err(_) => UNREADABLE,
            };
        }
        child = dentry;
    }
    NOT_WATCHED
}

/// The `WATCHED_NAMES` entry of `dentry`'s name in `dir`, if names of its length are there
/// (`name_lengths`).
#[inline(always)]
fn child_entry(
    dir: InodeKey,
    name_lengths: u64,
    dentry: impl FieldPtr,
    name: u64,
) -> Result<Option<&'static sensor_common::WatchValue>, i64> {
    let len: u32 = dentry.load(off!(dentry_d_name_len))?;
    if name_lengths & name_length_bit(len as u64) == 0 {
        return Ok(None);
    }
    let mut name_key = NameKey {
        dir,
        name: [0; NAME_LEN],
    };
    read_name(name, &mut name_key.name)?;
    // SAFETY: as for WATCHED_INODES in `watched_inode`.
    Ok(unsafe { WATCHED_NAMES.get(name_key) })
}

/// What `classify` reads of an open file.
struct Opened<P> {
    file: P,
    inode: P,
    sb: P,
    dentry: P,
    key: InodeKey,
    /// Address of the dentry's name.
    name: u64,
}

impl Match {
    /// A failed open: no file to match; `by_handle` for `open_by_handle_at`, whose
    /// `requested` is then the caller's file handle.
    #[inline(always)]
    fn denied(by_handle: bool) -> Match {
        Match {
            kind: if by_handle {
                MatchKind::DeniedHandle
            } else {
                MatchKind::Denied
            },
            rule: 0,
            dev: 0,
            ino: 0,
            target_tgid: 0,
            name: 0,
            overlay_dev: 0,
        }
    }
}

impl<P: FieldPtr> Opened<P> {
    #[inline(always)]
    fn read(file: P) -> Result<Opened<P>, i64> {
        let inode = file.load_ptr(off!(file_f_inode))?;
        let sb = inode.load_ptr(off!(inode_i_sb))?;
        let dentry = file.load_ptr(off!(file_f_path_dentry))?;
        Ok(Opened {
            file,
            inode,
            sb,
            dentry,
            key: InodeKey {
                dev: sb.load(off!(super_block_s_dev))?,
                _pad: 0,
                ino: inode.load(off!(inode_i_ino))?,
            },
            name: dentry.load(off!(dentry_d_name_name))?,
        })
    }

    #[inline(always)]
    fn hit(&self, kind: MatchKind, rule: u32, overlay_dev: u32) -> Match {
        Match {
            kind,
            rule,
            dev: self.key.dev,
            ino: self.key.ino,
            target_tgid: 0,
            name: self.name,
            overlay_dev,
        }
    }
}

/// The file an overlayfs file opened on the layer below (`ovl_real_file`): what was really
/// read. An `O_PATH` descriptor has none (`private_data` is NULL) and is not followed.
#[inline(always)]
fn real_file(overlay_file: impl FieldPtr) -> Result<RawPtr, i64> {
    // `void *`: a number to the verifier, and so read as one.
    let private = RawPtr(overlay_file.load(off!(file_private_data))?);
    let at = off!(ovl_file_realfile);
    let real = if at == OVL_REALFILE_IS_PRIVATE_DATA as u64 {
        private
    } else {
        private.load_ptr(at)?
    };
    if real.0 == 0 {
        return Err(NOT_WATCHED);
    }
    Ok(real)
}

/// Files whose writing changes what the kernel hands out of other processes: the tracefs
/// probe files (a uprobe fetches another process's buffers) and `core_pattern` (where every
/// process's core dump goes). Only their opens for writing are events (`on_open` checks).
#[inline(always)]
fn kernel_control_file(
    magic: u64,
    dentry: impl FieldPtr,
    name: u64,
) -> Result<Option<MatchKind>, i64> {
    if magic != TRACEFS_MAGIC && magic != PROC_SUPER_MAGIC {
        return Ok(None);
    }
    // Every name checked is 12 to 14 bytes: a length check spares the copy for the others
    // (procfs's `environ`, `mem`, ... among them).
    let len: u32 = dentry.load(off!(dentry_d_name_len))?;
    if !(12..=14).contains(&len) {
        return Ok(None);
    }
    let mut buf = [0u8; 16];
    read_name(name, &mut buf)?;
    let half = |b: &[u8; 16], i: usize| {
        u64::from_le_bytes([
            b[i],
            b[i + 1],
            b[i + 2],
            b[i + 3],
            b[i + 4],
            b[i + 5],
            b[i + 6],
            b[i + 7],
        ])
    };
    let (lo, hi) = (half(&buf, 0), half(&buf, 8));
    let is = |s: &[u8; 16]| lo == half(s, 0) && hi == half(s, 8);
    Ok(if magic == TRACEFS_MAGIC {
        (is(b"uprobe_events\0\0\0") || is(b"kprobe_events\0\0\0") || is(b"dynamic_events\0\0"))
            .then_some(MatchKind::Tracefs)
    } else {
        is(b"core_pattern\0\0\0\0").then_some(MatchKind::CorePattern)
    })
}

/// procfs files of another process that expose its secrets, and `/proc/kcore`.
#[inline(always)]
fn proc_match(inode: impl FieldPtr, name: u64, dev: u32, ino: u64) -> Result<Match, i64> {
    // 16 zeroed bytes: comparing the first 8 (NUL included) rejects longer names.
    let mut buf = [0u8; 16];
    read_name(name, &mut buf)?;
    let head = u64::from_le_bytes([
        buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7],
    ]);
    let bit = match &head.to_le_bytes() {
        b"environ\0" => PROC_ENVIRON,
        b"mem\0\0\0\0\0" => PROC_MEM,
        b"maps\0\0\0\0" => PROC_MAPS,
        b"cmdline\0" => PROC_CMDLINE,
        b"kcore\0\0\0" => PROC_KCORE,
        _ => return Err(NOT_WATCHED),
    };
    // SAFETY: CONFIG is a plain-data static that lives for the whole program; the volatile
    // read keeps the compiler from folding the compiled-in zero the agent overrides at load.
    let enabled = unsafe { core::ptr::read_volatile(&CONFIG.proc_files) } | PROC_KCORE;
    if enabled & bit == 0 {
        return Err(NOT_WATCHED);
    }
    // container_of(inode, struct proc_inode, vfs_inode)
    let proc_inode = RawPtr(inode.raw().0 - off!(proc_inode_vfs_inode));
    let pid: u64 = proc_inode.load(off!(proc_inode_pid))?;
    let target_tgid = if pid == 0 { 0 } else { pid_nr(pid)? };
    if bit != PROC_KCORE {
        if pid == 0 {
            return Err(NOT_WATCHED);
        }
        // A process reading its own environment or memory is not an access to another's secrets.
        let pid_tgid = bpf_get_current_pid_tgid();
        if target_tgid == (pid_tgid >> 32) as u32 || target_tgid == pid_tgid as u32 {
            return Err(NOT_WATCHED);
        }
    }
    Ok(Match {
        kind: MatchKind::Proc,
        rule: bit,
        dev,
        ino,
        target_tgid,
        name,
        overlay_dev: 0,
    })
}

/// Copies a kernel string (a dentry name) into `buf`, NUL-terminated.
#[inline(always)]
fn read_name(name: u64, buf: &mut [u8]) -> Result<(), i64> {
    // SAFETY: `buf` is an initialised buffer the helper writes at most `buf.len()` bytes of;
    // the kernel memory is read fault-safely.
    unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, buf) }?;
    Ok(())
}
