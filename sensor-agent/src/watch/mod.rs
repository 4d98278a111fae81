//! The watched set: `[[watch]]` rules resolved to the entries the kernel matches opens
//! against, plus the reverse lookups enrichment needs to name the file that matched.
//!
//! The kernel matches three ways (see `sensor-ebpf/src/file.rs`): by (dev, inode), by
//! (parent directory inode, name) when the directory is `DIR_NAMED`, and every file of a
//! `DIR_ANY_NAME` directory, whose name user space then checks against the rule's glob.
//! Directory and name entries catch files created or replaced after the last resolution;
//! inode entries catch the same file under another name (hard links, bind mounts).

mod denied;
mod refresh;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobMatcher};
use sensor_common::{
    name_length_bit, InodeKey, NameKey, WatchValue, DIR_ANY_NAME, DIR_NAMED, NAME_LEN,
};

pub use denied::{lexical_normalize, resolve_denied};
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

/// The resolved watched set. Rule ids are `index + 1` into the rule table.
#[derive(Clone, Debug, Default)]
pub struct WatchSet {
    rules: Arc<[Rule]>,
    inodes: HashMap<InodeKey, WatchValue>,
    dirs: HashMap<InodeKey, WatchValue>,
    names: HashMap<NameKey, WatchValue>,
    inode_paths: HashMap<InodeKey, String>,
    dir_info: HashMap<InodeKey, DirInfo>,
    /// Directories each rule put entries in: where a dir/name event's file can be.
    rule_dirs: HashMap<u32, Vec<InodeKey>>,
    /// Every directory whose changes can change the set (for the refresher).
    inotify_dirs: BTreeSet<PathBuf>,
}

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
    /// Resolves the rules against the file system as it is now. Missing paths are not an
    /// error: their nearest existing directories are watched so they are picked up later.
    pub fn resolve(rules: &[Rule]) -> WatchSet {
        let mut set = WatchSet {
            rules: rules.into(),
            ..WatchSet::default()
        };
        for (i, rule) in rules.iter().enumerate() {
            set.resolve_rule(i as u32 + 1, rule);
        }
        set
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

    /// The rule with this id (`WatchValue.rule`, `FileEvent.rule`).
    pub fn rule(&self, id: u32) -> Option<&Rule> {
        self.rules.get((id as usize).checked_sub(1)?)
    }

    /// Directories the refresher watches with inotify.
    pub fn inotify_dirs(&self) -> &BTreeSet<PathBuf> {
        &self.inotify_dirs
    }

    /// Whether two sets would program the kernel and name files identically.
    pub fn same_entries(&self, other: &WatchSet) -> bool {
        self.inodes == other.inodes
            && self.dirs == other.dirs
            && self.names == other.names
            && self.inode_paths == other.inode_paths
            && self.dir_info == other.dir_info
            && self.inotify_dirs == other.inotify_dirs
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

    /// The rule covering `name` in directory `dir`, by exact name first, then by glob.
    pub fn rule_in_dir(&self, dir: &InodeKey, name: &[u8]) -> Option<u32> {
        let value = self.dirs.get(dir)?;
        if value.flags & DIR_NAMED != 0 {
            if let Some(v) = self.names.get(&name_key(*dir, name)) {
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

    fn resolve_rule(&mut self, id: u32, rule: &Rule) {
        let Some((last, parents)) = rule.components.split_last() else {
            return;
        };
        let mut dirs = vec![PathBuf::from("/")];
        for component in parents {
            let mut next = Vec::new();
            for dir in &dirs {
                self.inotify_dirs.insert(dir.clone());
                match component {
                    Component::Literal(name) => {
                        let path = dir.join(name);
                        if path.is_dir() {
                            next.push(path);
                        }
                    }
                    Component::Glob(glob) => {
                        let Ok(entries) = fs::read_dir(dir) else {
                            continue;
                        };
                        for entry in entries.flatten() {
                            let path = entry.path();
                            if glob.is_match(entry.file_name()) && path.is_dir() {
                                next.push(path);
                            }
                        }
                    }
                }
            }
            dirs = next;
        }
        for dir in dirs {
            self.inotify_dirs.insert(dir.clone());
            let Ok(real_dir) = fs::canonicalize(&dir) else {
                continue;
            };
            let Ok(meta) = fs::metadata(&real_dir) else {
                continue;
            };
            let dir_key = inode_key(&meta);
            self.inotify_dirs.insert(real_dir.clone());
            match last {
                Component::Literal(name) => {
                    self.add_name(id, dir_key, &real_dir, name.as_bytes());
                    self.add_file(id, &dir.join(name), dir_key);
                }
                Component::Glob(_) => {
                    self.add_dir(id, dir_key, &real_dir, DIR_ANY_NAME);
                    let Ok(entries) = fs::read_dir(&dir) else {
                        continue;
                    };
                    for entry in entries.flatten() {
                        if rule.matches_name(entry.file_name().as_bytes()) {
                            self.add_file(id, &entry.path(), dir_key);
                        }
                    }
                }
            }
        }
    }

    /// Adds the real file behind `path` (not directories). When it is a symlink into
    /// another directory, the target's name there is watched too, so a replacement of the
    /// target is caught before the next refresh.
    fn add_file(&mut self, id: u32, path: &Path, dir_key: InodeKey) {
        let Ok(real) = fs::canonicalize(path) else {
            return;
        };
        let Ok(meta) = fs::metadata(&real) else {
            return;
        };
        if meta.is_dir() {
            return;
        }
        let key = inode_key(&meta);
        self.inodes.entry(key).or_insert(WatchValue {
            rule: id,
            ..WatchValue::default()
        });
        self.inode_paths
            .entry(key)
            .or_insert_with(|| real.to_string_lossy().into_owned());
        let (Some(parent), Some(name)) = (real.parent(), real.file_name()) else {
            return;
        };
        let Ok(parent_meta) = fs::metadata(parent) else {
            return;
        };
        let parent_key = inode_key(&parent_meta);
        if parent_key != dir_key {
            self.inotify_dirs.insert(parent.to_path_buf());
            self.add_name(id, parent_key, parent, name.as_bytes());
        }
    }

    fn add_name(&mut self, id: u32, dir: InodeKey, dir_path: &Path, name: &[u8]) {
        self.add_dir(id, dir, dir_path, DIR_NAMED);
        if let Some(value) = self.dirs.get_mut(&dir) {
            value.name_lengths |= name_length_bit(name.len() as u64);
        }
        self.names.entry(name_key(dir, name)).or_insert(WatchValue {
            rule: id,
            ..WatchValue::default()
        });
    }

    fn add_dir(&mut self, id: u32, dir: InodeKey, dir_path: &Path, flag: u32) {
        self.dirs
            .entry(dir)
            .or_insert(WatchValue {
                rule: id,
                ..WatchValue::default()
            })
            .flags |= flag;
        let info = self.dir_info.entry(dir).or_insert_with(|| DirInfo {
            path: dir_path.to_string_lossy().into_owned(),
            any_rules: Vec::new(),
        });
        if flag == DIR_ANY_NAME && !info.any_rules.contains(&id) {
            info.any_rules.push(id);
        }
        let dirs = self.rule_dirs.entry(id).or_default();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
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
