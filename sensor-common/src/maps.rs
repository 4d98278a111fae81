//! Map names (shared so the loader and the programs cannot drift) and map key/value types.

use zerocopy::{FromBytes, Immutable, IntoBytes};

pub const EVENTS: &str = "EVENTS";
pub const WATCHED_INODES: &str = "WATCHED_INODES";
pub const WATCHED_DIRS: &str = "WATCHED_DIRS";
pub const WATCHED_NAMES: &str = "WATCHED_NAMES";
pub const WATCHED_LEAVES: &str = "WATCHED_LEAVES";
pub const TREE_GATE: &str = "TREE_GATE";
pub const WATCH_FILTER: &str = "WATCH_FILTER";
pub const TREE_MISSES: &str = "TREE_MISSES";
pub const LOST_EVENTS: &str = "LOST_EVENTS";
pub const FOLDS: &str = "FOLDS";
pub const BUDGET_LOST: &str = "BUDGET_LOST";
pub const HOOKS: &str = "HOOKS";
pub const KPROBE_MISSED: &str = "KPROBE_MISSED";
/// Name of the global holding [`crate::KernelOffsets`].
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// Name of the global holding [`SensorConfig`].
pub const CONFIG_GLOBAL: &str = "CONFIG";

/// A submit to `EVENTS` wakes the reader only when it has not been woken for this long
/// (`CLOCK_MONOTONIC`), or for [`WAKEUP_SHARE_NS`] with a [`WAKEUP_SHARE`]th of the ring
/// buffer waiting; a sooner event waits for the reader's next look, which it takes this
/// long after each wake (so at most this long). Waking the reader per event cost an
/// interrupt on both sides of every event (fork and exit included) whenever the agent kept
/// up.
pub const WAKEUP_NS: u64 = 10_000_000;
/// The share of the ring buffer (64 KiB of the default 32 MiB) from which a submit wakes
/// the reader sooner than [`WAKEUP_NS`], so a small ring buffer is read as it fills.
pub const WAKEUP_SHARE: u64 = 512;
/// Least time between two wakes for [`WAKEUP_SHARE`].
pub const WAKEUP_SHARE_NS: u64 = 1_000_000;

/// Capacity of the watched-set maps.
pub const MAX_WATCHED: u32 = 16384;

/// Capacity of `KPROBES_IN_FLIGHT` (kprobe mode): calls inside a kretprobed function at
/// once, blocked ones included, one per thread and hook (a preallocated hash map, as
/// kprobes require: about 1 MiB). A call that finds it full is counted in
/// [`KPROBE_MISSED`], since its return could not be vouched for.
pub const MAX_KPROBES_IN_FLIGHT: u32 = 16384;

/// A file identity: the superblock device and the inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InodeKey {
    /// Kernel `s_dev` (`MAJOR << 20 | MINOR`), not the user-space `st_dev` encoding.
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// `WATCH_FILTER` has 2^`WATCH_FILTER_BITS_LOG2` bits, one array element of this many words.
pub const WATCH_FILTER_BITS_LOG2: u32 = 18;
pub const WATCH_FILTER_WORDS: usize = 1 << (WATCH_FILTER_BITS_LOG2 - 6);

/// `WATCH_FILTER`'s one element: a bit per hash slot of an [`InodeKey`]
/// ([`InodeKey::filter_bit`]), set for every key of `WATCHED_INODES` and `WATCHED_DIRS`.
/// Every open looks up its file's inode and its directory in those two hash maps; a clear
/// bit spares the lookup (a hash and a bucket walk) for the many opens of files that are
/// not watched, a set bit only means "look". So that no watched key is ever skipped, the
/// agent sets a key's bit before it inserts the key, and clears bits only of keys already
/// removed: a bit read while the agent rewrites the filter is then set wherever the maps
/// may hold the key, whatever mix of the old and new words the read sees.
pub type WatchFilter = [u64; WATCH_FILTER_WORDS];

impl InodeKey {
    /// The key's bit in [`WatchFilter`]: its word's index and the bit's mask (Fibonacci
    /// hashing: the product's top bits).
    #[inline(always)]
    pub fn filter_bit(&self) -> (usize, u64) {
        let mixed = self.ino ^ (u64::from(self.dev) << 40);
        let slot = mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - WATCH_FILTER_BITS_LOG2);
        ((slot >> 6) as usize, 1 << (slot & 63))
    }
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

/// A path component (NUL-padded, at most `NAME_LEN - 1` bytes, as [`NameKey::name`]) that
/// ends a watched file's or directory's path, or names a directory a glob rule watches: the
/// key of the rename/unlink/link prefilter (`WATCHED_LEAVES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeafKey {
    pub name: [u8; crate::NAME_LEN],
}

/// Value of a watched-set entry: which rule put it there.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WatchValue {
    pub rule: u32,
    /// `DIR_*` flags for `WATCHED_DIRS`, `NAME_*` flags for `WATCHED_NAMES`.
    pub flags: u32,
    /// For a `DIR_NAMED` directory: [`name_length_bit`] of every watched file name of it
    /// (`NAME_FILE`), so an open of a name of another length skips the name copy and the
    /// lookup.
    pub name_lengths: u64,
    /// The same for its names that are child directories on a rule's path (the walk's).
    pub tree_name_lengths: u64,
    /// [`tree_depth_bit`]s: a file this many levels below a `DIR_TREE` directory, through
    /// any child of it (`WATCHED_DIRS`) or through the child of this name (`WATCHED_NAMES`),
    /// is on a rule's path (the ancestry walk, docs/probes.md "Watched trees").
    pub tree_depths: u32,
    pub _pad: u32,
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
/// `WATCHED_DIRS` flag: a directory on a rule's path. The kernel's ancestry walk from a file
/// in a directory the set does not hold stops at the first directory the set holds, and
/// this flag with `tree_depths` says whether the file is on a rule's path below it.
pub const DIR_TREE: u32 = 4;
/// `WATCHED_NAMES` flag: files of this name in the directory are watched. A name without it
/// is only a child directory on a rule's path (`tree_depths`).
pub const NAME_FILE: u32 = 1;

/// Deepest level below a watched directory the ancestry walk looks (a rule's components
/// after its deepest existing directory, plus one for a symlink farm's hidden directory).
pub const MAX_TREE_DEPTH: u32 = 8;

/// The bit of `tree_depths` for a file `depth` levels below the directory (2 to
/// [`MAX_TREE_DEPTH`]; level 1 is the directory's own names and `DIR_ANY_NAME`).
pub const fn tree_depth_bit(depth: u32) -> u32 {
    1 << depth
}

/// When the kernel walks a file's ancestors (`TREE_GATE`, written by the agent after each
/// refresh it put into the maps). A directory missing from the set was created or changed
/// after the set was resolved, so only a file whose directory's ctime is at least
/// `not_before` is walked: the directories the set knows stay a lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeGate {
    /// Seconds since the epoch (the inode ctime's clock), a margin before the resolution
    /// in the maps started; `i64::MIN` walks every such file (the maps are not current).
    pub not_before: i64,
    /// Changes with every write: a walk's result cached under another generation is void.
    pub generation: u64,
    /// Levels to walk (the set's deepest `tree_depths` bit), at most [`MAX_TREE_DEPTH`].
    pub max_depth: u32,
    pub _pad: u32,
}

/// Capacity of `TREE_MISSES` (least recently used directories are forgotten).
pub const MAX_TREE_MISSES: u32 = 4096;

/// A directory whose walk found no rule (`TREE_MISSES`, keyed by the directory's device and
/// inode number): the walk is not repeated while it is the same directory (its inode's
/// `i_generation`: a new directory given a freed inode number gets another), unchanged (its
/// ctime: a rename of it changes it) and the gate's generation is the same.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeMiss {
    pub ctime: i64,
    /// [`TreeGate::generation`].
    pub gate: u64,
    /// The directory inode's `i_generation`.
    pub inode_generation: u32,
    pub _pad: u32,
}

/// Bits of the `HOOKS` map's one element: the events another hook than the `sys_exit`
/// tracepoint reports, so that, attached beside it, the tracepoint leaves them alone.
pub const OPENS_BY_HOOK: u32 = 1;
pub const SYSCALLS_BY_HOOK: u32 = 2;

/// Set at load time by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SensorConfig {
    /// The agent's own thread-group id: its activity is never reported.
    pub agent_tgid: u32,
    /// `PROC_*` bits: which procfs files of other processes are reported.
    pub proc_files: u32,
    /// An identity's event budget: one event per this many ns on average...
    pub budget_interval_ns: u64,
    /// ...with bursts of up to `budget_tolerance_ns / budget_interval_ns + 1` events; an
    /// interval of 0 switches budgets off.
    pub budget_tolerance_ns: u64,
    /// A repeat of a sent access within this long is folded; 0 switches folding off.
    pub fold_window_ns: u64,
}

impl SensorConfig {
    pub const fn zeroed() -> Self {
        SensorConfig {
            agent_tgid: 0,
            proc_files: 0,
            budget_interval_ns: 0,
            budget_tolerance_ns: 0,
            fold_window_ns: 0,
        }
    }
}

/// Capacity of [`FOLDS`]: (process, file, access) triples folded at once. When it is full,
/// further accesses are not folded: each is an event of its own, under the budget.
pub const MAX_FOLDS: u32 = 8192;
/// Capacity of [`BUDGETS`] (least recently used identities are forgotten: their budget
/// starts full again) and of [`BUDGET_LOST`].
pub const MAX_IDENTITIES: u32 = 4096;
/// Bit of an identity ([`identity`]) that marks a cgroup id rather than a uid.
pub const IDENTITY_CGROUP: u64 = 1 << 63;
/// The [`BUDGET_LOST`] entry, made by the agent at start, that counts the losses of
/// identities the full map has no entry for.
pub const IDENTITY_OTHER: u64 = u64::MAX;

/// Whose budget an event is charged to: its real uid, except for uid 0, whose processes are
/// told apart by cgroup (a container's root from the host's services). An unprivileged user
/// cannot change its real uid, so it has exactly one budget whatever it forks or creates.
pub const fn identity(uid: u32, cgroup_id: u64) -> u64 {
    if uid == 0 {
        // Never IDENTITY_OTHER: cgroup ids are inode numbers, far below 2^63 - 1.
        IDENTITY_CGROUP | (cgroup_id & !IDENTITY_CGROUP)
    } else {
        uid as u64
    }
}

/// A folded access: which process opened which file, how.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    FromBytes,
    IntoBytes,
    Immutable,
)]
pub struct FoldKey {
    pub tgid: u32,
    /// Kernel `s_dev` and inode of the opened file.
    pub dev: u32,
    pub ino: u64,
    /// Open flags as passed, masked with [`crate::syscall::FOLD_FLAGS`].
    pub flags: u64,
    /// An [`crate::EventKind`] byte (`file_open` or `proc_access`).
    pub kind: u8,
    /// An [`crate::OpenSyscall`] byte.
    pub syscall: u8,
    pub _pad: [u8; 6],
}

/// The state of one [`FoldKey`]. The kernel only ever adds to `folded` (an atomic add), so
/// user space reads a total that only grows and reports the difference: every folded access
/// is reported once, with no write from user space racing the kernel's.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable)]
pub struct FoldValue {
    /// When the last access that was sent (not folded) happened (`bpf_ktime_get_boot_ns`).
    pub window_start: u64,
    /// Accesses folded since the entry was made.
    pub folded: u64,
    /// When the last folded access happened.
    pub last_ns: u64,
    /// The sent access's open flags, all of them.
    pub flags: u64,
    /// The sent access's rule id, procfs target, [`crate::MatchKind`] and compat flag.
    pub rule: u32,
    pub target_tgid: u32,
    pub matched: u8,
    pub compat: u8,
    pub _pad: [u8; 6],
    /// The sent access's header and opened name, so a summary can be enriched like it.
    pub header: crate::EventHeader,
    pub name: [u8; crate::NAME_LEN],
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
    // SAFETY: a byte array: no padding, any bits are valid.
    unsafe impl aya::Pod for super::LeafKey {}
    // SAFETY: u32 rule, u32 flags, u64 name_lengths, u64 tree_name_lengths, u32
    // tree_depths, u32 _pad: no implicit padding, any bits are valid.
    unsafe impl aya::Pod for super::WatchValue {}
    // SAFETY: i64, u64, u32, u32: no implicit padding, any bits are valid.
    unsafe impl aya::Pod for super::TreeGate {}
    // SAFETY: two u32 then three u64: no padding, any bits are valid.
    unsafe impl aya::Pod for super::SensorConfig {}
    // SAFETY: only u32 fields: no padding, any bits are valid.
    unsafe impl aya::Pod for crate::KernelOffsets {}
    // SAFETY: u32, u32, u64, u64, u8, u8, [u8; 6]: no implicit padding, any bits are valid.
    unsafe impl aya::Pod for super::FoldKey {}
    // SAFETY: u64 fields, then u32 u32 u8 u8 [u8; 6], then the header (itself without
    // implicit padding, 8-byte aligned) and a byte array: no implicit padding, any bits valid.
    unsafe impl aya::Pod for super::FoldValue {}
}
