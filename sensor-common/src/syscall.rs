//! Syscall numbers the programs dispatch on, for the x86-64 native and ia32 compat entries.
//! A 64-bit process can still enter through `int 0x80` with 32-bit numbers, so both tables
//! are checked: skipping compat would be an evasion route.

/// A syscall the sensor reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    Rename,
    Renameat,
    Renameat2,
    Unlink,
    Unlinkat,
    Link,
    Linkat,
}

/// Maps a native x86-64 syscall number.
#[inline(always)]
pub fn native(nr: u64) -> Option<Watched> {
    Some(match nr {
        2 => Watched::Open,
        82 => Watched::Rename,
        85 => Watched::Creat,
        86 => Watched::Link,
        87 => Watched::Unlink,
        101 => Watched::Ptrace,
        248 => Watched::AddKey,
        249 => Watched::RequestKey,
        250 => Watched::Keyctl,
        257 => Watched::Openat,
        263 => Watched::Unlinkat,
        264 => Watched::Renameat,
        265 => Watched::Linkat,
        304 => Watched::OpenByHandleAt,
        310 => Watched::ProcessVmReadv,
        311 => Watched::ProcessVmWritev,
        316 => Watched::Renameat2,
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
        38 => Watched::Rename,
        286 => Watched::AddKey,
        287 => Watched::RequestKey,
        288 => Watched::Keyctl,
        295 => Watched::Openat,
        301 => Watched::Unlinkat,
        302 => Watched::Renameat,
        303 => Watched::Linkat,
        342 => Watched::OpenByHandleAt,
        347 => Watched::ProcessVmReadv,
        348 => Watched::ProcessVmWritev,
        353 => Watched::Renameat2,
        437 => Watched::Openat2,
        438 => Watched::PidfdGetfd,
        _ => return None,
    })
}

/// `TS_COMPAT` in x86 `thread_info.status`.
pub const TS_COMPAT: u32 = 0x0002;
/// `PROC_SUPER_MAGIC`.
pub const PROC_SUPER_MAGIC: u64 = 0x9fa0;
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
