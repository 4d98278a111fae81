//! The watched set: `[[watch]]` rules resolved to the entries the kernel matches opens
//! against, plus the reverse lookups enrichment needs to name the file that matched.
//!
//! The kernel matches three ways (see `sensor-ebpf/src/file.rs`): by (dev, inode), by
//! (parent directory inode, name) when the directory is `DIR_NAMED`, and every file of a
//! `DIR_ANY_NAME` directory, whose name user space then checks against the rule's glob.
//! Directory and name entries catch files created or replaced after the last resolution;
//! inode entries catch the same file under another name (hard links, bind mounts).
//!
//! A resolution always fits the kernel's maps, whatever users create in watched directories:
//! a crowded directory watches only [`DIR_FILE_BOUND`] files by inode (all stay matched by
//! directory and name), and beyond a map's capacity the entries users can multiply are left
//! out first (docs/probes.md, "The watched set's budget").

mod denied;
mod handle;
mod refresh;

use std::collections::{hash_map::Entry, BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::hash::Hash;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobMatcher};
use sensor_common::{
    name_length_bit, tree_depth_bit, InodeKey, LeafKey, NameKey, TreeGate, WatchValue,
    DIR_ANY_NAME, DIR_NAMED, DIR_TREE, MAX_TREE_DEPTH, MAX_WATCHED, NAME_FILE, NAME_LEN,
};

pub use denied::{
    lexical_normalize, resolve_created, resolve_denied, resolve_denied_handle, resolve_object,
    resolve_path_change, Named,
};
pub use handle::{Handle, Mounts, Passed};
pub use refresh::Watcher;

/// One `[[watch]]` entry, validated and compiled.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The pattern as configured (`/home/*/.ssh/id_*`).
    pub path: String,
    /// Credential kind reported in `file.kind` (`ssh-key`).
    pub kind: String,
    /// Team or person responsible for the credential.
    pub owner: Option<String>,
    /// File-name globs this rule skips (`*.pub`).
    pub exclude: Vec<String>,
    components: Vec<Component>,
    excludes: Vec<GlobMatcher>,
}

#[derive(Clone, Debug)]
enum Component {
    Literal(String),
    Glob(GlobMatcher),
}

impl Component {
    fn matches(&self, name: &OsStr) -> bool {
        match self {
            Component::Literal(l) => l.as_bytes() == name.as_bytes(),
            Component::Glob(g) => g.is_match(name),
        }
    }
}

/// A rule that failed validation: `field` is `path` or `exclude[N]`.
#[derive(Debug, PartialEq, Eq)]
pub struct RuleError {
    pub field: String,
    pub message: String,
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

fn compile_glob(s: &str) -> Result<GlobMatcher, String> {
    Glob::new(s)
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("bad glob: {e}"))
}

impl Rule {
    /// Validates and compiles a rule. Each glob matches within one path component, so that
    /// expansion stays a bounded walk of existing directories.
    pub fn new(
        path: &str,
        kind: &str,
        owner: Option<String>,
        exclude: Vec<String>,
    ) -> Result<Rule, RuleError> {
        let path_err = |message: String| RuleError {
            field: "path".into(),
            message,
        };
        if !path.starts_with('/') {
            return Err(path_err(format!("`{path}` is not an absolute path")));
        }
        let mut components = Vec::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." {
                return Err(path_err(format!("`{path}` contains a `{part}` component")));
            }
            if part.contains("**") {
                return Err(path_err(format!(
                    "`{path}`: `**` is not supported; `*` matches within one path component"
                )));
            }
            components.push(if is_glob(part) {
                Component::Glob(compile_glob(part).map_err(|m| path_err(format!("`{path}`: {m}")))?)
            } else {
                Component::Literal(part.to_owned())
            });
        }
        if components.is_empty() {
            return Err(path_err(format!("`{path}` names no file")));
        }
        let mut excludes = Vec::with_capacity(exclude.len());
        for (i, pattern) in exclude.iter().enumerate() {
            let err = |message: String| RuleError {
                field: format!("exclude[{i}]"),
                message,
            };
            if pattern.contains('/') {
                return Err(err(format!(
                    "`{pattern}` contains `/`; exclude globs match file names"
                )));
            }
            excludes.push(compile_glob(pattern).map_err(|m| err(format!("`{pattern}`: {m}")))?);
        }
        Ok(Rule {
            path: path.to_owned(),
            kind: kind.to_owned(),
            owner,
            exclude,
            components,
            excludes,
        })
    }

    /// Whether a file name in one of this rule's directories is covered (last component
    /// matches, no exclude does).
    pub fn matches_name(&self, name: &[u8]) -> bool {
        let name = OsStr::from_bytes(name);
        self.components.last().is_some_and(|c| c.matches(name))
            && !self.excludes.iter().any(|e| e.is_match(name))
    }

    /// Whether a normalised absolute path matches the whole pattern, component by component.
    pub fn matches_path(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        parts.len() == self.components.len()
            && self
                .components
                .iter()
                .zip(&parts)
                .all(|(c, p)| c.matches(OsStr::new(p)))
            && parts
                .last()
                .is_some_and(|n| self.matches_name(n.as_bytes()))
    }
}

/// A watched file found for an event: its path and the id of the rule that covers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub path: String,
    pub rule: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct DirInfo {
    /// Canonical path of the directory.
    path: String,
    /// Rules whose last component is a glob matched in this directory.
    any_rules: Vec<u32>,
}

/// Most files of one directory a rule watches by inode. Beyond it the directory is watched
/// by its `DIR_ANY_NAME` entry alone, one entry whatever the count, so one writable
/// directory takes at most 1/64 of a map and 64 crowded directories fit before the map
/// budget has to choose. Real credential directories (`~/.ssh`, `~/.aws/sso/cache`,
/// `/etc/ssl/private`, kubelet's `pki`) hold tens of files. It also bounds a refresh's work
/// in a crowded directory: its names are listed, but only this many files are resolved.
pub const DIR_FILE_BOUND: usize = 256;

/// What one resolution may put into the kernel's maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Files of one directory watched by inode.
    pub per_dir: usize,
    /// Entries of each map.
    pub per_map: usize,
}

impl Budget {
    /// The kernel's maps.
    pub const KERNEL: Budget = Budget {
        per_dir: DIR_FILE_BOUND,
        per_map: MAX_WATCHED as usize,
    };
}

/// Who can add entries under a directory; the map budget keeps the system tier first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    /// Only root can write the directory, and every directory a glob was expanded in on the
    /// way to it: no user can add these entries or multiply them.
    System,
    /// Anything else: home directories, `/tmp`, directories reached through a user's.
    User,
}

/// An entry's place in the map budget's order: the system tier first; then, within a tier,
/// every owner's n-th entry before anyone's (n+1)-th, so a user who floods pushes out only
/// their own entries, and the ancestry walk's entries last; then resolution order (rules as
/// configured, names sorted). Unique, so what is kept is decided by the file system alone.
type Rank = (Tier, u32, u64);

/// How many files one rule matched in one directory, and how many of them are watched by
/// inode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub files: u64,
    pub watched: u64,
}

impl Coverage {
    fn overflows(&self) -> bool {
        self.watched < self.files
    }
}

/// A change of a directory's overflow state: a rule matched more files there than are
/// watched by inode (`watched < files`: the others are watched by directory and name only,
/// a hard link to them elsewhere is not seen), or no longer does (`watched == files`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overflow {
    /// Canonical path of the directory.
    pub directory: String,
    /// The rule's pattern.
    pub rule: String,
    pub files: u64,
    pub watched: u64,
}

/// Entries of each map the budget left out (the system tier first kept).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub inodes: usize,
    pub dirs: usize,
    pub names: usize,
}

/// The resolved watched set. Rule ids are `index + 1` into the rule table.
#[derive(Clone, Debug, Default)]
pub struct WatchSet {
    rules: Arc<[Rule]>,
    inodes: HashMap<InodeKey, WatchValue>,
    dirs: HashMap<InodeKey, WatchValue>,
    names: HashMap<NameKey, WatchValue>,
    /// Watched names for the kernel's rename/unlink/link prefilter (`WATCHED_LEAVES`).
    leaves: HashMap<LeafKey, WatchValue>,
    inode_paths: HashMap<InodeKey, String>,
    /// Handles of the watched files, where their file systems make them.
    handles: HashMap<InodeKey, Handle>,
    /// Watched inodes that left their watched paths (their `inode_paths` entries): followed
    /// until they are deleted.
    moved: HashSet<InodeKey>,
    dir_info: HashMap<InodeKey, DirInfo>,
    /// Directories each rule put entries in: where a dir/name event's file can be.
    rule_dirs: HashMap<u32, Vec<InodeKey>>,
    /// Every directory whose changes can change the set (for the refresher).
    inotify_dirs: BTreeSet<PathBuf>,
    /// Per (canonical directory, rule id): what the rule matched there.
    coverage: BTreeMap<(String, u32), Coverage>,
    dropped: Dropped,
    /// When the resolution started (seconds since the epoch): every directory on a rule's
    /// path that has not changed since is in the set.
    resolved_at: i64,
}

/// How long before a resolution started a directory's ctime still opens the kernel's
/// ancestry walk: the inode clock is the coarse wall clock, in whole seconds.
const TREE_GATE_MARGIN_SECS: i64 = 2;

/// The kernel's `s_dev` encoding (`MAJOR << 20 | MINOR`) of a `st_dev`.
pub fn kernel_dev(st_dev: u64) -> u32 {
    (libc::major(st_dev) << 20) | libc::minor(st_dev)
}

fn inode_key(meta: &Metadata) -> InodeKey {
    InodeKey {
        dev: kernel_dev(meta.dev()),
        _pad: 0,
        ino: meta.ino(),
    }
}

/// Whether only root can add or rename entries in this directory.
fn root_only(meta: &Metadata) -> bool {
    meta.uid() == 0 && meta.mode() & 0o022 == 0
}

/// Whether an inode entry still names the file with identity `key` that was reached as
/// `path`: the path is the watched path itself (the common case, settled without a `stat`),
/// or the watched path still holds this inode. Otherwise the file was replaced (its old
/// inode number can be reused by an unrelated file before the kernel map is refreshed) or
/// moved away.
pub fn still_watched(found: &Located, key: &InodeKey, path: &str) -> bool {
    path == found.path
        || denied::lexical_normalize(path).as_deref() == Some(found.path.as_str())
        || fs::metadata(&found.path)
            .is_ok_and(|m| m.ino() == key.ino && kernel_dev(m.dev()) == key.dev)
}

/// A name as the kernel copies it into a `NameKey`: at most `NAME_LEN - 1` bytes, NUL-padded.
pub fn name_key(dir: InodeKey, name: &[u8]) -> NameKey {
    let mut key = NameKey {
        dir,
        name: [0; NAME_LEN],
    };
    let n = name.len().min(NAME_LEN - 1);
    key.name[..n].copy_from_slice(&name[..n]);
    key
}

impl WatchSet {
    /// Resolves the rules against the file system as it is now, within the kernel maps'
    /// budget. Missing paths are not an error: their nearest existing directories are
    /// watched so they are picked up later.
    pub fn resolve(rules: &[Rule]) -> WatchSet {
        WatchSet::resolve_within(rules, Budget::KERNEL)
    }

    /// [`WatchSet::resolve`] with another budget. No map of the result holds more than
    /// `budget.per_map` entries, whatever is on disk.
    pub fn resolve_within(rules: &[Rule], budget: Budget) -> WatchSet {
        let resolved_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut resolver = Resolver {
            set: WatchSet {
                rules: rules.into(),
                resolved_at,
                ..WatchSet::default()
            },
            budget,
            ranks: Ranks::default(),
            claims: HashMap::new(),
            seq: 0,
            sites: Vec::new(),
        };
        for (i, rule) in rules.iter().enumerate() {
            resolver.resolve_rule(i as u32 + 1, rule);
        }
        resolver.finish()
    }

    pub fn inodes(&self) -> &HashMap<InodeKey, WatchValue> {
        &self.inodes
    }

    pub fn dirs(&self) -> &HashMap<InodeKey, WatchValue> {
        &self.dirs
    }

    pub fn names(&self) -> &HashMap<NameKey, WatchValue> {
        &self.names
    }

    /// The names the kernel passes renames, unlinks and links on: the last component of
    /// every watched file's path (as configured and as resolved) and of every watched
    /// directory (which is also the directory a glob rule's files are in).
    pub fn leaves(&self) -> &HashMap<LeafKey, WatchValue> {
        &self.leaves
    }

    /// A watched directory (one holding watched names or a glob's files) at this canonical
    /// path, and the rule that put it there.
    pub fn dir_at(&self, path: &str) -> Option<Located> {
        self.dir_info
            .iter()
            .find(|(_, info)| info.path == path)
            .and_then(|(key, info)| {
                Some(Located {
                    path: info.path.clone(),
                    rule: self.dirs.get(key)?.rule,
                })
            })
    }

    /// A watched directory by identity.
    pub fn dir_by_inode(&self, key: &InodeKey) -> Option<Located> {
        let info = self.dir_info.get(key)?;
        Some(Located {
            path: info.path.clone(),
            rule: self.dirs.get(key)?.rule,
        })
    }

    /// The rule whose whole pattern a normalised absolute path matches (its id).
    pub fn rule_for_path(&self, path: &str) -> Option<u32> {
        self.rules
            .iter()
            .position(|r| r.matches_path(path))
            .map(|i| i as u32 + 1)
    }

    /// The rule with this id (`WatchValue.rule`, `FileEvent.rule`).
    pub fn rule(&self, id: u32) -> Option<&Rule> {
        self.rules.get((id as usize).checked_sub(1)?)
    }

    /// Directories the refresher watches with inotify.
    pub fn inotify_dirs(&self) -> &BTreeSet<PathBuf> {
        &self.inotify_dirs
    }

    /// What `rule` (its id) matched in `directory`, if it reached that directory.
    pub fn coverage(&self, directory: &str, rule: u32) -> Option<Coverage> {
        self.coverage.get(&(directory.to_owned(), rule)).copied()
    }

    /// The directories whose overflow started or ended since `old`, as this set sees them
    /// (a directory no longer reached has no files).
    pub fn overflow_changes(&self, old: &WatchSet) -> Vec<Overflow> {
        let overflows = |set: &WatchSet, site: &(String, u32)| {
            set.coverage.get(site).is_some_and(Coverage::overflows)
        };
        let changed: BTreeSet<&(String, u32)> = self
            .coverage
            .keys()
            .chain(old.coverage.keys())
            .filter(|site| overflows(self, site) != overflows(old, site))
            .collect();
        changed
            .into_iter()
            .map(|site| {
                let coverage = self.coverage.get(site).copied().unwrap_or_default();
                Overflow {
                    directory: site.0.clone(),
                    rule: self
                        .rule(site.1)
                        .map(|r| r.path.clone())
                        .unwrap_or_default(),
                    files: coverage.files,
                    watched: coverage.watched,
                }
            })
            .collect()
    }

    /// The kernel's ancestry walk for this set: directories changed since a little before
    /// it was resolved, as deep as its deepest watched tree.
    pub fn tree_gate(&self) -> TreeGate {
        let depths = self
            .dirs
            .values()
            .chain(self.names.values())
            .fold(0, |all, v| all | v.tree_depths);
        TreeGate {
            not_before: self.resolved_at - TREE_GATE_MARGIN_SECS,
            generation: 0,
            max_depth: 31 - depths.leading_zeros().min(31),
            _pad: 0,
        }
    }

    /// Entries the map budget left out of this set.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// Whether two sets would program the kernel, name files and report overflows
    /// identically.
    pub fn same_entries(&self, other: &WatchSet) -> bool {
        self.inodes == other.inodes
            && self.dirs == other.dirs
            && self.names == other.names
            && self.leaves == other.leaves
            && self.inode_paths == other.inode_paths
            && self.moved == other.moved
            && self.dir_info == other.dir_info
            && self.inotify_dirs == other.inotify_dirs
            && self.coverage == other.coverage
    }

    /// A watched inode: its canonical path and rule.
    pub fn by_inode(&self, key: &InodeKey) -> Option<Located> {
        let value = self.inodes.get(key)?;
        let path = self.inode_paths.get(key)?;
        Some(Located {
            path: path.clone(),
            rule: value.rule,
        })
    }

    /// The watched file whose handle a caller passed, on the file system `dev` when known:
    /// a handle names a file within one file system only.
    pub fn by_handle(&self, passed: &Passed, dev: Option<u32>) -> Option<Located> {
        self.handles
            .iter()
            .filter(|(key, handle)| dev.is_none_or(|d| key.dev == d) && handle.is(passed))
            .min_by_key(|(key, _)| **key)
            .and_then(|(key, _)| self.by_inode(key))
    }

    /// Whether watched inode `key` left its watched path (it is watched as a moved file).
    pub fn is_moved(&self, key: &InodeKey) -> bool {
        self.moved.contains(key)
    }

    /// Whether the watched inode `key` is still the file that was watched (not another file
    /// given a freed inode number) and still linked somewhere. Without a handle (a file
    /// system that makes none) the inode number is all there is, and it is trusted.
    pub fn still_linked(&self, key: &InodeKey, mounts: &Mounts) -> bool {
        self.handles
            .get(key)
            .is_none_or(|handle| handle.still_links(key, mounts))
    }

    /// Keeps watching, with the rule and path they had, the files of `old` that are no
    /// longer at a watched path but still linked somewhere (renamed, moved, their directory
    /// renamed, or reached by a hard link after the watched path got a new file), while the
    /// inode map has room (`per_map`). A file without a handle cannot be followed: it is
    /// forgotten, as it would be deleted.
    pub fn keep_moved(&mut self, old: &WatchSet, per_map: usize) {
        let mounts = Mounts::read();
        for (key, value) in &old.inodes {
            if self.inodes.contains_key(key) {
                continue;
            }
            let (Some(path), Some(handle)) = (old.inode_paths.get(key), old.handles.get(key))
            else {
                continue;
            };
            if !handle.still_links(key, &mounts) {
                continue;
            }
            if self.inodes.len() >= per_map {
                self.dropped.inodes += 1;
                continue;
            }
            self.inodes.insert(*key, *value);
            self.inode_paths.insert(*key, path.clone());
            self.handles.insert(*key, handle.clone());
            self.moved.insert(*key);
        }
    }

    /// The rule covering `name` in directory `dir`, by exact name first, then by glob.
    pub fn rule_in_dir(&self, dir: &InodeKey, name: &[u8]) -> Option<u32> {
        let value = self.dirs.get(dir)?;
        if value.flags & DIR_NAMED != 0 {
            if let Some(v) = self
                .names
                .get(&name_key(*dir, name))
                .filter(|v| v.flags & NAME_FILE != 0)
            {
                return Some(v.rule);
            }
        }
        let info = self.dir_info.get(dir)?;
        info.any_rules
            .iter()
            .copied()
            .find(|&id| self.rule(id).is_some_and(|r| r.matches_name(name)))
    }

    /// The watched file a `DirName`/`DirAny` event opened. The event carries the rule id of
    /// the directory entry but not the directory, so the rule's directories on that device
    /// are candidates; when several hold a matching name, the one whose `name` is the opened
    /// inode wins (one `stat` each, only in that ambiguous case).
    pub fn locate(&self, rule: u32, dev: u32, ino: u64, name: &[u8]) -> Option<Located> {
        let mut found: Option<(&DirInfo, u32)> = None;
        for dir in self.rule_dirs.get(&rule)?.iter().filter(|d| d.dev == dev) {
            let Some(id) = self.rule_in_dir(dir, name) else {
                continue;
            };
            let Some(info) = self.dir_info.get(dir) else {
                continue;
            };
            if found.is_none() {
                found = Some((info, id));
            }
            let candidate = Path::new(&info.path).join(OsStr::from_bytes(name));
            if fs::metadata(&candidate).is_ok_and(|m| m.ino() == ino) {
                found = Some((info, id));
                break;
            }
        }
        let (info, id) = found?;
        Some(Located {
            path: join_name(&info.path, name),
            rule: id,
        })
    }
}

/// A directory a rule reached: its key, and what the budget ranks its entries by.
#[derive(Clone, Copy)]
struct Place {
    key: InodeKey,
    tier: Tier,
    owner: u32,
}

impl Place {
    /// The directory with metadata `meta`, reached through directories only root can write
    /// wherever a glob was expanded (`trusted`).
    fn of(meta: &Metadata, trusted: bool) -> Place {
        Place {
            key: inode_key(meta),
            tier: if trusted && root_only(meta) {
                Tier::System
            } else {
                Tier::User
            },
            owner: meta.uid(),
        }
    }
}

/// The maps, for counting each owner's entries per map.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum MapId {
    Inodes,
    Dirs,
    Names,
}

#[derive(Default)]
struct Ranks {
    inodes: HashMap<InodeKey, Rank>,
    dirs: HashMap<InodeKey, Rank>,
    names: HashMap<NameKey, Rank>,
}

/// Files one rule matched in one directory, and the inodes it watches of them.
struct Site {
    directory: String,
    rule: u32,
    files: u64,
    inodes: Vec<InodeKey>,
}

/// One resolution in progress: the set, and what the budget needs to trim it.
struct Resolver {
    set: WatchSet,
    budget: Budget,
    ranks: Ranks,
    /// Entries claimed so far per map and owner uid: the middle of a [`Rank`].
    claims: HashMap<(MapId, u32), u32>,
    seq: u64,
    sites: Vec<Site>,
}

impl Resolver {
    fn resolve_rule(&mut self, id: u32, rule: &Rule) {
        let Some((last, parents)) = rule.components.split_last() else {
            return;
        };
        // Each directory reached, and whether every directory a glob was expanded in on the
        // way is root's alone (a literal step cannot multiply directories).
        let mut dirs = vec![(PathBuf::from("/"), true)];
        for (i, component) in parents.iter().enumerate() {
            let mut next = Vec::new();
            // The rule's file is this many levels below each directory of this step.
            let depth = (rule.components.len() - i) as u32;
            for (dir, trusted) in &dirs {
                self.set.inotify_dirs.insert(dir.clone());
                self.add_tree(id, dir, *trusted, component, depth);
                match component {
                    Component::Literal(name) => {
                        let path = dir.join(name);
                        if path.is_dir() {
                            next.push((path, *trusted));
                        }
                    }
                    Component::Glob(glob) => {
                        let trusted = *trusted && fs::metadata(dir).is_ok_and(|m| root_only(&m));
                        for name in sorted_names(dir, |name, _| glob.is_match(name)) {
                            let path = dir.join(name);
                            if path.is_dir() {
                                next.push((path, trusted));
                            }
                        }
                    }
                }
            }
            dirs = next;
        }
        for (dir, trusted) in dirs {
            self.set.inotify_dirs.insert(dir.clone());
            let Ok(real_dir) = fs::canonicalize(&dir) else {
                continue;
            };
            let Ok(meta) = fs::metadata(&real_dir) else {
                continue;
            };
            let place = Place::of(&meta, trusted);
            self.set.inotify_dirs.insert(real_dir.clone());
            let names = match last {
                Component::Literal(name) => {
                    self.add_name(id, place, &real_dir, name.as_bytes());
                    vec![OsString::from(name)]
                }
                Component::Glob(_) => {
                    self.add_dir(id, place, &real_dir, DIR_ANY_NAME);
                    sorted_names(&dir, |name, file_type| {
                        !file_type.is_dir() && rule.matches_name(name.as_bytes())
                    })
                }
            };
            let inodes: Vec<InodeKey> = names
                .iter()
                .take(self.budget.per_dir)
                .filter_map(|name| self.add_file(id, &dir.join(name), place, &real_dir))
                .collect();
            // Beyond the bound, files are counted by name, without resolving them.
            let files = if names.len() > self.budget.per_dir {
                names.len()
            } else {
                inodes.len()
            };
            self.sites.push(Site {
                directory: real_dir.to_string_lossy().into_owned(),
                rule: id,
                files: files as u64,
                inodes,
            });
        }
    }

    /// Adds the real file behind `path` (not directories) and returns its key. When it is a
    /// symlink into another directory, the target's name there is watched too, so a
    /// replacement of the target is caught before the next refresh. When that directory is
    /// below the rule's (`real_dir`), a symlink farm such as a Kubernetes volume's
    /// `token -> ..data/token`, `..data -> ..2026_01_01_…`, the rule's directory is a tree
    /// at the target's depth: the next hidden directory's files match at once.
    fn add_file(
        &mut self,
        id: u32,
        path: &Path,
        place: Place,
        real_dir: &Path,
    ) -> Option<InodeKey> {
        let real = fs::canonicalize(path).ok()?;
        let meta = fs::metadata(&real).ok()?;
        if meta.is_dir() {
            return None;
        }
        let key = inode_key(&meta);
        entry_of(&mut self.set.inodes, key, id);
        let rank = self.rank(MapId::Inodes, place.tier, meta.uid());
        claim(&mut self.ranks.inodes, key, rank);
        self.set
            .inode_paths
            .entry(key)
            .or_insert_with(|| real.to_string_lossy().into_owned());
        if let Entry::Vacant(slot) = self.set.handles.entry(key) {
            if let Some(handle) = Handle::of(&real) {
                slot.insert(handle);
            }
        }
        if let (Some(parent), Some(name)) = (real.parent(), real.file_name()) {
            if let Ok(parent_meta) = fs::metadata(parent) {
                let parent_key = inode_key(&parent_meta);
                if parent_key != place.key {
                    let depth = real.strip_prefix(real_dir).map_or(0, |r| r.iter().count());
                    if (2..=MAX_TREE_DEPTH as usize).contains(&depth) {
                        if let Some(value) = self.set.dirs.get_mut(&place.key) {
                            value.flags |= DIR_TREE;
                            value.tree_depths |= tree_depth_bit(depth as u32);
                        }
                    }
                    self.set.inotify_dirs.insert(parent.to_path_buf());
                    let target = Place {
                        key: parent_key,
                        ..place
                    };
                    self.add_name(id, target, parent, name.as_bytes());
                }
            }
        }
        Some(key)
    }

    fn add_name(&mut self, id: u32, place: Place, dir_path: &Path, name: &[u8]) {
        self.add_dir(id, place, dir_path, DIR_NAMED);
        if let Some(value) = self.set.dirs.get_mut(&place.key) {
            value.name_lengths |= name_length_bit(name.len() as u64);
        }
        let key = name_key(place.key, name);
        entry_of(&mut self.set.names, key, id).flags |= NAME_FILE;
        let rank = self.rank(MapId::Names, place.tier, place.owner);
        claim(&mut self.ranks.names, key, rank);
    }

    /// Puts `dir`, a directory a rule's path goes through, into the set for the kernel's
    /// ancestry walk: the rule's file is `depth` levels below it, through the child
    /// `component` names. A walk from a file in a directory the set does not hold (created
    /// since) stops at the first directory it holds and matches only by these entries, so
    /// every directory of every rule's path is held; none of them names files, and they
    /// stay out of `dir_info` (no file event is located in them, no rename is filtered by
    /// their names). Deeper than [`MAX_TREE_DEPTH`], the refresh alone catches new files.
    fn add_tree(&mut self, id: u32, dir: &Path, trusted: bool, component: &Component, depth: u32) {
        if depth > MAX_TREE_DEPTH {
            return;
        }
        let Ok(meta) = fs::metadata(dir) else {
            return;
        };
        let place = Place::of(&meta, trusted);
        let value = entry_of(&mut self.set.dirs, place.key, id);
        value.flags |= DIR_TREE;
        match component {
            Component::Glob(_) => value.tree_depths |= tree_depth_bit(depth),
            Component::Literal(name) => {
                value.flags |= DIR_NAMED;
                value.tree_name_lengths |= name_length_bit(name.len() as u64);
                let key = name_key(place.key, name.as_bytes());
                entry_of(&mut self.set.names, key, id).tree_depths |= tree_depth_bit(depth);
                let rank = self.tree_rank(place.tier);
                claim(&mut self.ranks.names, key, rank);
            }
        }
        let rank = self.tree_rank(place.tier);
        claim(&mut self.ranks.dirs, place.key, rank);
    }

    fn add_dir(&mut self, id: u32, place: Place, dir_path: &Path, flag: u32) {
        let dir = place.key;
        entry_of(&mut self.set.dirs, dir, id).flags |= flag;
        let rank = self.rank(MapId::Dirs, place.tier, place.owner);
        claim(&mut self.ranks.dirs, dir, rank);
        let info = self.set.dir_info.entry(dir).or_insert_with(|| DirInfo {
            path: dir_path.to_string_lossy().into_owned(),
            any_rules: Vec::new(),
        });
        if flag == DIR_ANY_NAME && !info.any_rules.contains(&id) {
            info.any_rules.push(id);
        }
        let dirs = self.set.rule_dirs.entry(id).or_default();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }

    /// An ancestry-walk entry's rank: after every entry that names files in its tier, since
    /// it only shortens the wait for the refresh.
    fn tree_rank(&mut self, tier: Tier) -> Rank {
        self.seq += 1;
        (tier, u32::MAX, self.seq)
    }

    fn rank(&mut self, map: MapId, tier: Tier, owner: u32) -> Rank {
        let claims = self.claims.entry((map, owner)).or_default();
        *claims += 1;
        self.seq += 1;
        (tier, *claims, self.seq)
    }

    /// Trims each map to the budget and records what each rule's directories kept.
    fn finish(self) -> WatchSet {
        let Resolver {
            mut set,
            budget,
            ranks,
            sites,
            ..
        } = self;
        set.dropped = Dropped {
            inodes: trim(&mut set.inodes, &ranks.inodes, budget.per_map),
            dirs: trim(&mut set.dirs, &ranks.dirs, budget.per_map),
            names: trim(&mut set.names, &ranks.names, budget.per_map),
        };
        let inodes = &set.inodes;
        set.inode_paths.retain(|key, _| inodes.contains_key(key));
        set.handles.retain(|key, _| inodes.contains_key(key));
        set.leaves = leaves(&set, budget.per_map);
        for site in sites {
            let watched = site
                .inodes
                .iter()
                .filter(|k| inodes.contains_key(k))
                .count();
            set.coverage
                .entry((site.directory, site.rule))
                .or_insert(Coverage {
                    files: site.files,
                    watched: watched as u64,
                });
        }
        set
    }
}

/// The prefilter's names, within `capacity`: directories' names first (one covers every
/// file a glob matches in it), then the watched names, then the resolved files' own names
/// (a symlink's target, a glob's matches), each group sorted, so what a full map leaves out
/// is decided by the set alone and is what the other groups already cover best.
fn leaves(set: &WatchSet, capacity: usize) -> HashMap<LeafKey, WatchValue> {
    let last = |path: &str| -> Option<Vec<u8>> {
        let name = path.trim_end_matches('/').rsplit('/').next()?;
        (!name.is_empty()).then(|| name.as_bytes().to_vec())
    };
    let mut groups: [Vec<(Vec<u8>, u32)>; 3] = Default::default();
    for (key, info) in &set.dir_info {
        if let (Some(name), Some(v)) = (last(&info.path), set.dirs.get(key)) {
            groups[0].push((name, v.rule));
        }
    }
    for (key, v) in set.names.iter().filter(|(_, v)| v.flags & NAME_FILE != 0) {
        let end = key.name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        groups[1].push((key.name[..end].to_vec(), v.rule));
    }
    for (key, path) in &set.inode_paths {
        if let (Some(name), Some(v)) = (last(path), set.inodes.get(key)) {
            groups[2].push((name, v.rule));
        }
    }
    let mut out = HashMap::new();
    for mut group in groups {
        group.sort_unstable();
        for (name, rule) in group {
            if out.len() >= capacity {
                return out;
            }
            entry_of(&mut out, leaf_key(&name), rule);
        }
    }
    out
}

/// A name as the kernel copies it into a `LeafKey`: as [`name_key`].
pub fn leaf_key(name: &[u8]) -> LeafKey {
    LeafKey {
        name: name_key(InodeKey::default(), name).name,
    }
}

/// The entry of `key`, made with `rule` if it is new (the first rule to reach an entry
/// names it).
fn entry_of<K: Eq + Hash>(map: &mut HashMap<K, WatchValue>, key: K, rule: u32) -> &mut WatchValue {
    map.entry(key).or_insert(WatchValue {
        rule,
        ..WatchValue::default()
    })
}

/// Keeps the better of two claims on one entry: a system rule's claim wins.
fn claim<K: Eq + Hash>(ranks: &mut HashMap<K, Rank>, key: K, rank: Rank) {
    ranks
        .entry(key)
        .and_modify(|r| *r = (*r).min(rank))
        .or_insert(rank);
}

/// Keeps the `capacity` best-ranked entries of `map`; returns how many it removed.
fn trim<K: Copy + Eq + Hash>(
    map: &mut HashMap<K, WatchValue>,
    ranks: &HashMap<K, Rank>,
    capacity: usize,
) -> usize {
    if map.len() <= capacity {
        return 0;
    }
    // Every entry was ranked when it was added; one that was not would go first.
    const UNRANKED: Rank = (Tier::User, u32::MAX, u64::MAX);
    let mut order: Vec<(Rank, K)> = map
        .keys()
        .map(|k| (ranks.get(k).copied().unwrap_or(UNRANKED), *k))
        .collect();
    order.select_nth_unstable_by_key(capacity, |(rank, _)| *rank);
    for (_, key) in &order[capacity..] {
        map.remove(key);
    }
    order.len() - capacity
}

/// The names in `dir` that `keep` accepts, sorted, so that resolution order (and with it
/// what a bound keeps) depends on the names alone, not on the directory's hash order.
fn sorted_names(dir: &Path, keep: impl Fn(&OsStr, fs::FileType) -> bool) -> Vec<OsString> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<OsString> = entries
        .flatten()
        .filter(|entry| {
            entry
                .file_type()
                .is_ok_and(|file_type| keep(&entry.file_name(), file_type))
        })
        .map(|entry| entry.file_name())
        .collect();
    names.sort_unstable();
    names
}

/// `dir/name`, without doubling the slash for `/`.
fn join_name(dir: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests;
