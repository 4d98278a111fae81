//! Kernel → user-space event records.
//!
//! The kinds' numbers are their discriminants and their names are derived from the variant
//! names (snake case), so the kernel, the agent and the log share one source for each.

use strum::{FromRepr, IntoStaticStr, VariantArray};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Longest path string copied from the caller's memory (the `requested` field).
pub const REQUESTED_LEN: usize = 256;
/// Longest dentry name copied (the opened file's last component).
pub const NAME_LEN: usize = 64;
/// Bytes of `argv` copied at exec.
pub const ARGS_LEN: usize = 256;
/// Longest key type (`add_key`, `request_key`).
pub const KEY_TYPE_LEN: usize = 32;
/// Longest key description.
pub const KEY_DESC_LEN: usize = 128;
pub const COMM_LEN: usize = 16;

/// The kind byte at offset 0 of every kernel event. Its name (`file_open`) is the one the
/// log's `kind` field and loss counts use.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromRepr, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum EventKind {
    FileOpen = 1,
    ProcAccess = 2,
    Ptrace = 3,
    ProcessVmReadv = 4,
    ProcessVmWritev = 5,
    PidfdGetfd = 6,
    Keyctl = 7,
    AddKey = 8,
    RequestKey = 9,
    IoUring = 10,
    Exec = 11,
    Fork = 12,
    Exit = 13,
    /// `perf_event_open` on another process or system-wide: a [`RouteEvent`].
    PerfEventOpen = 14,
    /// `bpf` program loads and attachments: a [`RouteEvent`].
    Bpf = 15,
    /// `prlimit64` raising another process's core limit: a [`RouteEvent`].
    Prlimit64 = 16,
    /// `fanotify_mark` adding an open or access mark: a [`RouteEvent`].
    FanotifyMark = 17,
    /// An open for writing of a tracefs probe file: a [`FileEvent`].
    TracefsWrite = 18,
    /// An open for writing of `/proc/sys/kernel/core_pattern`: a [`FileEvent`].
    CorePatternWrite = 19,
    /// A successful `rename`/`renameat`/`renameat2` ([`PathChangeEvent`]).
    FileRename = 20,
    /// A successful `unlink`/`unlinkat` ([`PathChangeEvent`]).
    FileUnlink = 21,
    /// A successful `link`/`linkat` ([`PathChangeEvent`]).
    FileLink = 22,
    /// A signal that dumps core (`SIGSEGV`, `SIGABRT`, ...) sent to another process: a
    /// [`SyscallEvent`].
    CoreSignal = 23,
}

impl EventKind {
    pub const ALL: &'static [EventKind] = Self::VARIANTS;

    /// One past the largest kind: the size of per-kind counter arrays.
    pub const COUNT: u32 = {
        let mut max = 0;
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i] as u32 > max {
                max = Self::ALL[i] as u32;
            }
            i += 1;
        }
        max + 1
    };

    /// The name used in JSON output and loss reports.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// The byte was not a known kind: the record is rejected, never reinterpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownKind(pub u8);

impl TryFrom<u8> for EventKind {
    type Error = UnknownKind;
    fn try_from(v: u8) -> Result<Self, UnknownKind> {
        EventKind::from_repr(v).ok_or(UnknownKind(v))
    }
}

/// Common header at offset 0 of every kernel event: who did it, and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct EventHeader {
    /// An [`EventKind`] byte.
    pub kind: u8,
    pub _pad0: [u8; 3],
    /// CPU the event was produced on.
    pub cpu: u32,
    /// `bpf_ktime_get_boot_ns`: monotonic, counts suspend, comparable across CPUs.
    pub boot_ns: u64,
    /// Thread-group id (what user space calls the pid).
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread-group id of the real parent.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    /// Login uid (`u32::MAX` when the process has no login session).
    pub auid: u32,
    /// Inode number of the task's own pid namespace (as `/proc/<pid>/ns/pid`): what the pids
    /// it passes mean (0 when it could not be read).
    pub pid_ns: u32,
    /// cgroup v2 id of the task (inode number of its cgroup directory).
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

/// How an opened file matched the watched set.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromRepr)]
pub enum MatchKind {
    /// The opened inode is in `WATCHED_INODES`.
    Inode = 1,
    /// The file's name in its parent directory is in `WATCHED_NAMES`.
    DirName = 2,
    /// The parent directory is in `WATCHED_DIRS`: user space matches the name against the glob.
    DirAny = 3,
    /// The open failed with EACCES/EPERM: user space resolves the requested path.
    Denied = 4,
    /// A procfs file of another process (`environ`, `mem`, ...) or `/proc/kcore`.
    Proc = 5,
    /// A tracefs probe file (`uprobe_events`, `kprobe_events`, `dynamic_events`), opened
    /// for writing.
    Tracefs = 6,
    /// `/proc/sys/kernel/core_pattern`, opened for writing.
    CorePattern = 7,
    /// The file's directory is not in the watched set, but an ancestor's is and the file is
    /// on a rule's path below it (created since the set was resolved): user space resolves
    /// the requested path and matches it against the rules.
    Tree = 8,
    /// A failed `open_by_handle_at` (EACCES/EPERM, before the kernel's open path: the
    /// capability check comes first): no file and no path, so `requested` holds the caller's
    /// `struct file_handle` ([`FileHandleHeader`] and at most [`MAX_HANDLE_SZ`] bytes) and
    /// user space compares it with the watched files' handles.
    DeniedHandle = 9,
}

/// `MAX_HANDLE_SZ`: the largest handle a file system makes.
pub const MAX_HANDLE_SZ: usize = 128;

/// The header of `struct file_handle`, before its `handle_bytes` bytes of handle.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct FileHandleHeader {
    pub handle_bytes: u32,
    pub handle_type: i32,
}

impl TryFrom<u8> for MatchKind {
    type Error = UnknownKind;
    fn try_from(v: u8) -> Result<Self, UnknownKind> {
        MatchKind::from_repr(v).ok_or(UnknownKind(v))
    }
}

/// Which open-family syscall produced a [`FileEvent`]; its name is the syscall's. The hooks
/// on the kernel's open path (docs/probes.md "Probe modes") also see opens made for other
/// calls, named by the last three.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromRepr, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum OpenSyscall {
    Open = 1,
    Openat = 2,
    Openat2 = 3,
    Creat = 4,
    OpenByHandleAt = 5,
    /// An open submitted through io_uring (in `io_uring_enter` or an io_uring worker).
    #[strum(serialize = "io_uring")]
    IoUring = 6,
    /// The image an `execve`/`execveat` opened.
    Exec = 7,
    /// An open the kernel made for any other call, or whose call could not be told.
    Kernel = 8,
}

impl OpenSyscall {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

impl TryFrom<u8> for OpenSyscall {
    type Error = UnknownKind;
    fn try_from(v: u8) -> Result<Self, UnknownKind> {
        OpenSyscall::from_repr(v).ok_or(UnknownKind(v))
    }
}

/// `file_open` and `proc_access`: an open-family syscall that touched a watched file.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct FileEvent {
    pub header: EventHeader,
    /// Syscall return: the new fd, or `-errno`. The hooks on the kernel's open path run
    /// before the descriptor exists: 0 for an open that succeeded there.
    pub ret: i64,
    /// Open flags as passed (`O_*`; `open_how.flags` for openat2).
    pub flags: u64,
    /// Inode number of the opened file (0 when the open failed).
    pub ino: u64,
    /// Kernel `s_dev` of the file's superblock (`MAJOR << 20 | MINOR`).
    pub dev: u32,
    /// Value of the watched-set entry that matched (the rule id), or 0.
    pub rule: u32,
    /// For `proc_access`: the thread-group id owning the procfs file.
    pub target_tgid: u32,
    /// Directory fd argument (`AT_FDCWD` = -100 for plain `open`/`creat`).
    pub dfd: i32,
    /// An [`OpenSyscall`] byte.
    pub syscall: u8,
    /// A [`MatchKind`] byte.
    pub matched: u8,
    /// Set when `requested` was cut to fit.
    pub requested_truncated: u8,
    /// 1 when the open came through the ia32 compat entry (`int 0x80`).
    pub compat: u8,
    /// Kernel `s_dev` of the overlay the file was opened through, 0 when none: `dev` and
    /// `ino` are then the real file's, on the layer below.
    pub overlay_dev: u32,
    /// The opened dentry's name (for procfs: `environ`, `mem`, ...).
    pub name: [u8; NAME_LEN],
    /// The path string the process passed, as it passed it; for an open that no
    /// open-family syscall passed a path to ([`OpenSyscall::IoUring`], `Exec`, `Kernel`),
    /// the opened file's path in the caller's root as the kernel gives it (`bpf_d_path`),
    /// where the hook allows it, or empty.
    pub requested: [u8; REQUESTED_LEN],
}

/// Which syscall changed a name ([`PathChangeEvent`]); its name is the syscall's.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromRepr, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum PathSyscall {
    Rename = 1,
    Renameat = 2,
    Renameat2 = 3,
    Unlink = 4,
    Unlinkat = 5,
    Link = 6,
    Linkat = 7,
}

impl PathSyscall {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

impl TryFrom<u8> for PathSyscall {
    type Error = UnknownKind;
    fn try_from(v: u8) -> Result<Self, UnknownKind> {
        PathSyscall::from_repr(v).ok_or(UnknownKind(v))
    }
}

/// `file_rename`, `file_unlink`, `file_link`: a successful syscall that changed which file a
/// name refers to, with both path strings as the caller passed them. The kernel sends it
/// only when a name near the end of either path is a watched name (docs/probes.md,
/// "Renames, unlinks and links"); user space resolves the paths and keeps the event only
/// when one of them names a watched file or directory.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct PathChangeEvent {
    pub header: EventHeader,
    /// Syscall return (0: only successful calls are sent).
    pub ret: i64,
    /// `renameat2`'s `RENAME_*` flags, `unlinkat`'s `AT_REMOVEDIR`, `linkat`'s
    /// `AT_SYMLINK_FOLLOW`/`AT_EMPTY_PATH`; 0 for the others.
    pub flags: u32,
    /// Directory fd the old path is relative to (`AT_FDCWD` = -100 when none was passed).
    pub old_dfd: i32,
    /// Directory fd the new path is relative to (`AT_FDCWD` when none; unused for unlinks).
    pub new_dfd: i32,
    /// A [`PathSyscall`] byte.
    pub syscall: u8,
    /// Set when `old`, `new` was cut to fit.
    pub old_truncated: u8,
    pub new_truncated: u8,
    /// 1 when the call came through the ia32 compat entry (`int 0x80`).
    pub compat: u8,
    /// For a relative `old`/`new`: the inode and kernel `s_dev` of the directory it is
    /// relative to (`*_dfd`, or the working directory), so user space can place the path
    /// after the caller has exited; 0 for absolute paths.
    pub old_base_ino: u64,
    pub new_base_ino: u64,
    pub old_base_dev: u32,
    pub new_base_dev: u32,
    /// The path removed or renamed (`oldpath`; the path for unlinks), as passed.
    pub old: [u8; REQUESTED_LEN],
    /// The new name (`newpath` of renames and links; empty for unlinks), as passed.
    pub new: [u8; REQUESTED_LEN],
}

/// `ptrace`, `process_vm_readv`, `process_vm_writev`, `pidfd_getfd`, `keyctl`, `add_key`,
/// `request_key`: the raw arguments and result, plus what the kernel resolved.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct SyscallEvent {
    pub header: EventHeader,
    pub ret: i64,
    /// Syscall arguments in ABI order (already mapped from the ia32 registers for compat calls).
    pub args: [u64; 6],
    /// Thread-group id of the target process: resolved from the pidfd for `pidfd_getfd`,
    /// the pid argument otherwise (0 when none).
    pub target_tgid: u32,
    /// 1 when the call came through the 32-bit compat entry.
    pub compat: u8,
    /// 1 when the kernel resolved `target_tgid` to a host tgid (from a pidfd); else it is
    /// the pid argument, in the caller's pid namespace.
    pub target_on_host: u8,
    /// For `core_signal`: the signal sent.
    pub signal: u8,
    pub _pad: u8,
    /// Key type for `add_key`/`request_key`.
    pub key_type: [u8; KEY_TYPE_LEN],
    /// Key description for `add_key`/`request_key`.
    pub key_desc: [u8; KEY_DESC_LEN],
}

/// `perf_event_open`, `bpf`, `prlimit64`, `fanotify_mark`: routes to another process's
/// memory or to every opened file that go around the file and ptrace syscalls. The raw
/// arguments and result, plus what the kernel program read from the caller's memory.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct RouteEvent {
    pub header: EventHeader,
    pub ret: i64,
    /// Syscall arguments in ABI order (already mapped from the ia32 registers for compat
    /// calls; for compat `fanotify_mark`, whose mask takes two registers, see `values`).
    pub args: [u64; 6],
    /// Read from the caller's memory (0 where the read failed):
    /// - `perf_event_open`: the first 32 bytes of `perf_event_attr` (`type` | `size` << 32,
    ///   `config`, `sample_period`, `sample_type`);
    /// - `bpf`: the first 16 bytes of `bpf_attr`, and for `BPF_PROG_LOAD`
    ///   `expected_attach_type` in `values[2]`; for an `ioctl(PERF_EVENT_IOC_SET_BPF)`
    ///   (the arguments are the perf event's descriptor, the request and the program's),
    ///   nothing but [`crate::syscall::PERF_EVENT_IOC_SET_BPF`] in `values[3]`;
    /// - `prlimit64`: the new `rlim_cur`, `rlim_max`;
    /// - `fanotify_mark`: the 64-bit mask (joined from two registers for compat), the
    ///   directory fd (as i32).
    pub values: [u64; 4],
    /// The pid argument for `perf_event_open` and `prlimit64` (as passed, in the caller's pid
    /// namespace; `u32::MAX` for -1).
    pub target_tgid: u32,
    /// 1 when the call came through the 32-bit compat entry.
    pub compat: u8,
    pub _pad: [u8; 3],
    /// `bpf_attr.prog_name` for `BPF_PROG_LOAD`.
    pub name: [u8; BPF_NAME_LEN],
    /// The tracepoint name for `BPF_RAW_TRACEPOINT_OPEN`; the path as passed for
    /// `fanotify_mark`.
    pub path: [u8; REQUESTED_LEN],
}

/// `BPF_OBJ_NAME_LEN`.
pub const BPF_NAME_LEN: usize = 16;

/// An open submitted through io_uring, which bypasses the syscall tracepoints.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct IoUringEvent {
    pub header: EventHeader,
    /// `IORING_OP_*` of the submitted request.
    pub opcode: u8,
    pub _pad: [u8; 7],
    pub user_data: u64,
}

/// A successful exec: new image of `header.tgid`.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Length of the valid bytes in `args` (NUL-separated argv).
    pub args_len: u32,
    pub _pad: u32,
    pub filename: [u8; REQUESTED_LEN],
    pub args: [u8; ARGS_LEN],
}

/// A new process (not a new thread): `header` describes the parent.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub child_tgid: u32,
    pub _pad: u32,
}

/// A thread-group leader exited.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// `task->exit_code` (`status << 8 | signal`).
    pub exit_code: u32,
    pub _pad: u32,
}

/// The `IORING_OP_*` codes flagged as opens.
pub const IORING_OP_OPENAT: u8 = 18;
pub const IORING_OP_OPENAT2: u8 = 28;
