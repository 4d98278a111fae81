//! Map names (shared so the loader and the programs cannot drift) and map key/value types.

pub const EVENTS: &str = "EVENTS";
pub const WATCHED_INODES: &str = "WATCHED_INODES";
pub const WATCHED_DIRS: &str = "WATCHED_DIRS";
pub const WATCHED_NAMES: &str = "WATCHED_NAMES";
pub const LOST_EVENTS: &str = "LOST_EVENTS";
/// Name of the global holding [`crate::KernelOffsets`].
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// Name of the global holding [`SensorConfig`].
pub const CONFIG_GLOBAL: &str = "CONFIG";

/// Capacity of the watched-set maps.
pub const MAX_WATCHED: u32 = 16384;

/// A file identity: the superblock device and the inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InodeKey {
    /// Kernel `s_dev` (`MAJOR << 20 | MINOR`), not the user-space `st_dev` encoding.
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// A name inside a watched directory: catches a file that replaces a watched one
/// (write-then-rename) before user space has seen the new inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NameKey {
    pub dir: InodeKey,
    /// NUL-padded last path component.
    pub name: [u8; crate::NAME_LEN],
}

/// Value of a watched-set entry: which rule put it there.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WatchValue {
    pub rule: u32,
    /// `DIR_*` flags for `WATCHED_DIRS`.
    pub flags: u32,
    /// For a `DIR_NAMED` directory: [`name_length_bit`] of every watched name in it, so an
    /// open of a name of another length skips the name copy and `WATCHED_NAMES` lookup.
    pub name_lengths: u64,
}

/// The bit of `name_lengths` for a name of `len` bytes (names of 64 bytes and more share
/// the last bit).
pub const fn name_length_bit(len: u64) -> u64 {
    let index = if len == 0 {
        0
    } else if len > 64 {
        63
    } else {
        len - 1
    };
    1 << index
}

/// `WATCHED_DIRS` flag: every file opened in this directory goes to user space, which
/// matches its name against the rule's glob.
pub const DIR_ANY_NAME: u32 = 1;
/// `WATCHED_DIRS` flag: some names in this directory are in `WATCHED_NAMES`.
pub const DIR_NAMED: u32 = 2;

/// Set at load time by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SensorConfig {
    /// The agent's own thread-group id: its activity is never reported.
    pub agent_tgid: u32,
    /// `PROC_*` bits: which procfs files of other processes are reported.
    pub proc_files: u32,
}

impl SensorConfig {
    pub const fn zeroed() -> Self {
        SensorConfig {
            agent_tgid: 0,
            proc_files: 0,
        }
    }
}

pub const PROC_ENVIRON: u32 = 1;
pub const PROC_MEM: u32 = 2;
pub const PROC_MAPS: u32 = 4;
pub const PROC_CMDLINE: u32 = 8;
/// `/proc/kcore` (physical memory): always reported.
pub const PROC_KCORE: u32 = 16;

/// aya::Pod requires a type with no uninitialised byte (no implicit padding) for which every
/// bit pattern is a valid value: these are #[repr(C)] integers and byte arrays, with their
/// padding spelled out as fields.
#[cfg(feature = "user")]
mod pod {
    // SAFETY: u32 dev, u32 _pad, u64 ino: no implicit padding, any bits are valid.
    unsafe impl aya::Pod for super::InodeKey {}
    // SAFETY: a 16-byte InodeKey then a byte array: no implicit padding, any bits are valid.
    unsafe impl aya::Pod for super::NameKey {}
    // SAFETY: u32 rule, u32 flags, u64 name_lengths: no implicit padding, any bits are valid.
    unsafe impl aya::Pod for super::WatchValue {}
    // SAFETY: two u32: no padding, any bits are valid.
    unsafe impl aya::Pod for super::SensorConfig {}
    // SAFETY: only u32 fields: no padding, any bits are valid.
    unsafe impl aya::Pod for crate::KernelOffsets {}
}
