//! Syscall numbers the programs dispatch on, for the x86-64 native and ia32 compat entries.
//! A 64-bit process can still enter through `int 0x80` with 32-bit numbers, so both tables
//! are checked: skipping compat would be an evasion route.

use crate::EventKind;

/// A syscall the sensor reports; its name is the kernel's (`__x64_sys_<name>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Watched {
    Open,
    Openat,
    Openat2,
    Creat,
    OpenByHandleAt,
    Ptrace,
    ProcessVmReadv,
    ProcessVmWritev,
    PidfdGetfd,
    Keyctl,
    AddKey,
    RequestKey,
    PerfEventOpen,
    Bpf,
    /// Only `PERF_EVENT_IOC_SET_BPF`: attaching a BPF program to a perf event (a kprobe,
    /// uprobe or tracepoint) without a `bpf` command.
    Ioctl,
    Prlimit64,
    FanotifyMark,
    Rename,
    Renameat,
    Renameat2,
    Unlink,
    Unlinkat,
    Link,
    Linkat,
    Kill,
    Tkill,
    Tgkill,
    PidfdSendSignal,
}

impl Watched {
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// An open-family syscall: reported by the file-open hook, not the syscalls hook (but for
    /// a failed `open_by_handle_at`: [`Watched::by_syscalls_hook`]).
    #[inline(always)]
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Watched::Open
                | Watched::Openat
                | Watched::Openat2
                | Watched::Creat
                | Watched::OpenByHandleAt
        )
    }

    /// Whether the syscalls hook reports this call ending with `ret`: every syscall but the
    /// opens (whose files the file-open hook reports), and a failed `open_by_handle_at`,
    /// which fails before the kernel's open path (its capability check, the handle's
    /// decoding), where no file-open hook sees it.
    #[inline(always)]
    pub fn by_syscalls_hook(self, ret: i64) -> bool {
        !self.is_open() || (self == Watched::OpenByHandleAt && ret < 0)
    }

    /// Whether the syscalls hook is attached to this syscall: for some result it reports it.
    pub fn syscalls_hook_attaches(self) -> bool {
        self.by_syscalls_hook(-1)
    }

    /// The kind of event a call is reported as. For the opens it is `FileOpen`, what kprobe
    /// mode counts a missed one as; the opened file decides the kind of a reported one
    /// (`proc_access`, `tracefs_write`, ...).
    #[inline(always)]
    pub fn event_kind(self) -> EventKind {
        match self {
            Watched::Open
            | Watched::Openat
            | Watched::Openat2
            | Watched::Creat
            | Watched::OpenByHandleAt => EventKind::FileOpen,
            Watched::Ptrace => EventKind::Ptrace,
            Watched::ProcessVmReadv => EventKind::ProcessVmReadv,
            Watched::ProcessVmWritev => EventKind::ProcessVmWritev,
            Watched::PidfdGetfd => EventKind::PidfdGetfd,
            Watched::Keyctl => EventKind::Keyctl,
            Watched::AddKey => EventKind::AddKey,
            Watched::RequestKey => EventKind::RequestKey,
            Watched::PerfEventOpen => EventKind::PerfEventOpen,
            // `PERF_EVENT_IOC_SET_BPF` attaches a BPF program.
            Watched::Bpf | Watched::Ioctl => EventKind::Bpf,
            Watched::Prlimit64 => EventKind::Prlimit64,
            Watched::FanotifyMark => EventKind::FanotifyMark,
            Watched::Rename | Watched::Renameat | Watched::Renameat2 => EventKind::FileRename,
            Watched::Unlink | Watched::Unlinkat => EventKind::FileUnlink,
            Watched::Link | Watched::Linkat => EventKind::FileLink,
            Watched::Kill | Watched::Tkill | Watched::Tgkill | Watched::PidfdSendSignal => {
                EventKind::CoreSignal
            }
        }
    }
}

/// The highest syscall number either table maps, for listing them.
pub const MAX_NR: u64 = 512;

/// `io_uring_enter` (the same number on both entries).
pub const IO_URING_ENTER: u64 = 426;
/// `execve` and `execveat`, native then compat.
pub const EXEC_NATIVE: [u64; 2] = [59, 322];
pub const EXEC_COMPAT: [u64; 2] = [11, 358];
/// `PF_IO_WORKER` in `task_struct.flags`: an io_uring worker thread.
pub const PF_IO_WORKER: u32 = 0x10;
/// `O_PATH`.
pub const O_PATH: u64 = 0o10000000;

/// Maps a native x86-64 syscall number.
#[inline(always)]
pub fn native(nr: u64) -> Option<Watched> {
    Some(match nr {
        2 => Watched::Open,
        16 => Watched::Ioctl,
        62 => Watched::Kill,
        82 => Watched::Rename,
        85 => Watched::Creat,
        86 => Watched::Link,
        87 => Watched::Unlink,
        101 => Watched::Ptrace,
        200 => Watched::Tkill,
        234 => Watched::Tgkill,
        248 => Watched::AddKey,
        249 => Watched::RequestKey,
        250 => Watched::Keyctl,
        257 => Watched::Openat,
        263 => Watched::Unlinkat,
        264 => Watched::Renameat,
        265 => Watched::Linkat,
        298 => Watched::PerfEventOpen,
        301 => Watched::FanotifyMark,
        302 => Watched::Prlimit64,
        304 => Watched::OpenByHandleAt,
        310 => Watched::ProcessVmReadv,
        311 => Watched::ProcessVmWritev,
        316 => Watched::Renameat2,
        321 => Watched::Bpf,
        424 => Watched::PidfdSendSignal,
        437 => Watched::Openat2,
        438 => Watched::PidfdGetfd,
        _ => return None,
    })
}

/// Maps an ia32 compat syscall number.
#[inline(always)]
pub fn compat(nr: u64) -> Option<Watched> {
    Some(match nr {
        5 => Watched::Open,
        8 => Watched::Creat,
        9 => Watched::Link,
        10 => Watched::Unlink,
        26 => Watched::Ptrace,
        54 => Watched::Ioctl,
        37 => Watched::Kill,
        38 => Watched::Rename,
        238 => Watched::Tkill,
        270 => Watched::Tgkill,
        286 => Watched::AddKey,
        287 => Watched::RequestKey,
        288 => Watched::Keyctl,
        295 => Watched::Openat,
        301 => Watched::Unlinkat,
        302 => Watched::Renameat,
        303 => Watched::Linkat,
        336 => Watched::PerfEventOpen,
        339 => Watched::FanotifyMark,
        340 => Watched::Prlimit64,
        342 => Watched::OpenByHandleAt,
        347 => Watched::ProcessVmReadv,
        348 => Watched::ProcessVmWritev,
        353 => Watched::Renameat2,
        357 => Watched::Bpf,
        424 => Watched::PidfdSendSignal,
        437 => Watched::Openat2,
        438 => Watched::PidfdGetfd,
        _ => return None,
    })
}

/// The signals whose default action dumps core (`SIGQUIT`, `SIGILL`, `SIGTRAP`, `SIGABRT`,
/// `SIGBUS`, `SIGFPE`, `SIGSEGV`, `SIGXCPU`, `SIGXFSZ`, `SIGSYS`), by bit: sent to another
/// process they write its memory to wherever `core_pattern` says.
pub const CORE_SIGNALS: u64 =
    1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 11 | 1 << 24 | 1 << 25 | 1 << 31;

/// `TS_COMPAT` in x86 `thread_info.status`.
pub const TS_COMPAT: u32 = 0x0002;
/// `PROC_SUPER_MAGIC`.
pub const PROC_SUPER_MAGIC: u64 = 0x9fa0;
/// `OVERLAYFS_SUPER_MAGIC`.
pub const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;
/// `AT_FDCWD`.
pub const AT_FDCWD: i32 = -100;
/// The open flags that change what an open can do with the file (access mode, `O_CREAT`,
/// `O_TRUNC`, `O_APPEND`, `O_PATH`, `O_TMPFILE`'s bit): the ones a fold key keeps. The
/// others (`O_CLOEXEC`, `O_NONBLOCK`, ... and bits `open` ignores) would let a flood pick a
/// new key for every open.
pub const FOLD_FLAGS: u64 = 0o3 | 0o100 | 0o1000 | 0o2000 | 0o10000000 | 0o20000000;
/// `renameat2` flags.
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;
pub const RENAME_WHITEOUT: u32 = 4;
pub const EACCES: i64 = 13;
pub const EPERM: i64 = 1;
/// `TRACEFS_MAGIC`.
pub const TRACEFS_MAGIC: u64 = 0x7472_6163;
/// Open flags that make an open one for writing: `O_WRONLY`, `O_RDWR`, `O_TRUNC`, `O_APPEND`.
pub const WRITE_FLAGS: u64 = 0o1 | 0o2 | 0o1000 | 0o2000;
/// `RLIMIT_CORE`.
pub const RLIMIT_CORE: u64 = 4;
/// `bpf` commands that load or attach a program (the others, map operations, are frequent
/// and not a route to anyone's memory).
pub const BPF_PROG_LOAD: u64 = 5;
pub const BPF_PROG_ATTACH: u64 = 8;
pub const BPF_RAW_TRACEPOINT_OPEN: u64 = 17;
pub const BPF_LINK_CREATE: u64 = 28;
/// `PERF_EVENT_IOC_SET_BPF` (`_IOW('$', 8, __u32)`): the `ioctl` that attaches the program
/// whose descriptor is its argument to a perf event. A `bpf` event records it with this in
/// `RouteEvent::values[3]` (a `bpf` command is never this large).
pub const PERF_EVENT_IOC_SET_BPF: u64 = 0x4004_2408;
/// `FAN_MARK_ADD`.
pub const FAN_MARK_ADD: u64 = 0x1;
/// The fanotify events that hand a listener the opened file or let it read it:
/// `FAN_ACCESS`, `FAN_CLOSE_WRITE`, `FAN_CLOSE_NOWRITE`, `FAN_OPEN`, `FAN_OPEN_EXEC`,
/// `FAN_OPEN_PERM`, `FAN_ACCESS_PERM`, `FAN_OPEN_EXEC_PERM`.
pub const FAN_READ_MASK: u64 = 0x1 | 0x8 | 0x10 | 0x20 | 0x1000 | 0x1_0000 | 0x2_0000 | 0x4_0000;
