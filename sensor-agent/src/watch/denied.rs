//! Denied opens: the open failed with EACCES/EPERM, so the kernel had no file to match and
//! sent the path string. It is resolved here the way the kernel would have, from the
//! caller's root and working directory, and kept only if it names a watched file.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use sensor_common::{syscall::AT_FDCWD, InodeKey};

use super::{inode_key, Located, WatchSet};

/// Finds the watched file a denied open of `requested` by `pid` would have opened.
///
/// Absolute paths resolve beneath `<proc_root>/<pid>/root` with `RESOLVE_IN_ROOT`, so `..`
/// and absolute symlinks stay inside the caller's root as they did for the caller. Relative
/// paths resolve from `<proc_root>/<pid>/cwd` or `<proc_root>/<pid>/fd/<dfd>` (an absolute
/// symlink met on a relative walk resolves against the agent's root: a known limit). When
/// the process is gone, an absolute path is normalised lexically and matched by pattern.
///
/// `stale` is an inode entry known to be out of date (its number was reused by another
/// file): a file with that identity is matched by name only.
pub fn resolve_denied(
    set: &WatchSet,
    proc_root: &Path,
    pid: u32,
    dfd: i32,
    requested: &[u8],
    stale: Option<&InodeKey>,
) -> Option<Located> {
    if requested.is_empty() {
        return None;
    }
    let (base, resolve) = match caller_base(proc_root, pid, dfd, requested) {
        Ok(base) => base,
        Err(_) if requested[0] == b'/' => return by_pattern(set, requested),
        Err(_) => return None,
    };

    if let Ok(file) = openat2(&base, requested, resolve) {
        if let Some(found) = File::from(file)
            .metadata()
            .ok()
            .map(|m| inode_key(&m))
            .filter(|key| Some(key) != stale)
            .and_then(|key| set.by_inode(&key))
        {
            return Some(found);
        }
    }
    // Not a watched inode (or it does not exist): is it a watched name in a watched directory?
    let (parent, name) = split_last(requested)?;
    let dir = if parent.is_empty() {
        base
    } else {
        openat2(&base, parent, resolve).ok()?
    };
    let dir_key = inode_key(&File::from(dir).metadata().ok()?);
    let rule = set.rule_in_dir(&dir_key, name)?;
    let dir_path = &set.dir_info.get(&dir_key)?.path;
    // A directory renamed since the set was resolved (`mv ~/.ssh ~/.ssh-away`): the names in
    // it are no longer at their watched paths.
    if !std::fs::metadata(dir_path).is_ok_and(|m| inode_key(&m) == dir_key) {
        return None;
    }
    Some(Located {
        path: super::join_name(dir_path, name),
        rule,
    })
}

/// What a path argument of `pid` names (a fanotify mark's object): its
/// identity, its path as the agent sees it, and whether it is a directory. Resolved as
/// [`resolve_denied`] does, following symlinks; when the process is gone, an absolute path
/// is looked up in the agent's own root (the host's, for an agent on the host).
pub fn resolve_object(
    proc_root: &Path,
    pid: u32,
    dfd: i32,
    requested: &[u8],
) -> Option<(InodeKey, String, bool)> {
    let (base, resolve) = match caller_base(proc_root, pid, dfd, requested) {
        Ok(base) => base,
        Err(_) if requested.first() == Some(&b'/') => {
            (open_path(Path::new("/")).ok()?, ResolveFlags::empty())
        }
        Err(_) => return None,
    };
    let file = openat2(&base, requested, resolve).ok()?;
    let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()?
        .to_string_lossy()
        .into_owned();
    let meta = File::from(file).metadata().ok()?;
    Some((inode_key(&meta), path, meta.is_dir()))
}

/// Where the kernel started a path walk for `pid`, and how to follow it: beneath its root
/// for an absolute path (`RESOLVE_IN_ROOT`, so `..` and absolute symlinks stay inside it as
/// they did for the caller), from its working directory or the directory fd `dfd` for a
/// relative one. An error when the process (or its `dfd`) is gone, or `requested` is empty.
fn caller_base(
    proc_root: &Path,
    pid: u32,
    dfd: i32,
    requested: &[u8],
) -> io::Result<(OwnedFd, ResolveFlags)> {
    let absolute = match requested.first() {
        None => return Err(io::ErrorKind::InvalidInput.into()),
        Some(&first) => first == b'/',
    };
    let base = if absolute {
        proc_root.join(format!("{pid}/root"))
    } else if dfd == AT_FDCWD {
        proc_root.join(format!("{pid}/cwd"))
    } else {
        proc_root.join(format!("{pid}/fd/{dfd}"))
    };
    let resolve = if absolute {
        ResolveFlags::IN_ROOT
    } else {
        ResolveFlags::empty()
    };
    Ok((open_path(&base)?, resolve))
}

/// The process is gone: match the lexically normalised path against the rule patterns.
fn by_pattern(set: &WatchSet, requested: &[u8]) -> Option<Located> {
    let path = lexical_normalize(&String::from_utf8_lossy(requested))?;
    let rule = set.rules.iter().position(|r| r.matches_path(&path))? as u32 + 1;
    Some(Located { path, rule })
}

/// Normalises an absolute path without touching the file system: `//` and `.` collapse and
/// `..` removes the previous component (never above `/`). `None` for a relative path.
pub fn lexical_normalize(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// `(parent, last component)` of a path string, ignoring trailing slashes. `None` when the
/// last component is `.` or `..` (a directory, never a watched file).
fn split_last(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = path.iter().rposition(|&b| b != b'/')? + 1;
    let path = &path[..end];
    let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
        Some(0) => (&path[..1], &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], path),
    };
    (name != b"." && name != b"..").then_some((parent, name))
}

fn open_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `openat2(dir, path, O_PATH, resolve)`, following symlinks as the caller's open did.
fn openat2(dir: &OwnedFd, path: &[u8], resolve: ResolveFlags) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        dir,
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        resolve,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_lexically() {
        assert_eq!(
            lexical_normalize("/etc//./ssh/../shadow").as_deref(),
            Some("/etc/shadow")
        );
        assert_eq!(
            lexical_normalize("/../../etc/shadow").as_deref(),
            Some("/etc/shadow")
        );
        assert_eq!(lexical_normalize("/"), Some("/".to_owned()));
        assert_eq!(lexical_normalize("etc/shadow"), None);
    }

    #[test]
    fn splits_last_component() {
        assert_eq!(
            split_last(b"/etc/shadow"),
            Some((&b"/etc"[..], &b"shadow"[..]))
        );
        assert_eq!(split_last(b"/shadow"), Some((&b"/"[..], &b"shadow"[..])));
        assert_eq!(split_last(b"shadow"), Some((&b""[..], &b"shadow"[..])));
        assert_eq!(split_last(b"a/b//"), Some((&b"a"[..], &b"b"[..])));
        assert_eq!(split_last(b"/etc/.."), None);
        assert_eq!(split_last(b"///"), None);
    }
}
