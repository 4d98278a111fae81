//! Denied opens: the open failed with EACCES/EPERM, so the kernel had no file to match and
//! sent the path string. It is resolved here the way the kernel would have, from the
//! caller's root and working directory, and kept only if it names a watched file.
//! Renames, unlinks and links are resolved the same way ([`resolve_path_change`]).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use sensor_common::{syscall::AT_FDCWD, InodeKey};

use super::{inode_key, Located, Passed, WatchSet};

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

    if let Ok(file) = openat2(&base, requested, OFlags::empty(), resolve) {
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
        openat2(&base, parent, OFlags::empty(), resolve).ok()?
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

/// Finds the watched file a denied `open_by_handle_at` by `pid` named: the watched file
/// whose handle is the one passed, on the file system of the caller's mount descriptor `dfd`
/// (its working directory's for `AT_FDCWD`). When the process is gone, on any file system:
/// a handle (inode and generation, for most file systems) is then taken to name the watched
/// file with the same handle, the one with the lowest device number if several have it.
pub fn resolve_denied_handle(
    set: &WatchSet,
    proc_root: &Path,
    pid: u32,
    dfd: i32,
    passed: &Passed,
) -> Option<Located> {
    let dev = caller_base(proc_root, pid, dfd, b".")
        .ok()
        .and_then(|(base, _)| File::from(base).metadata().ok())
        .map(|m| inode_key(&m).dev);
    set.by_handle(passed, dev)
}

/// The watched file an open matched by ancestry (`MatchKind::Tree`: its directory is newer
/// than the set) opened: the path as the caller named it (made absolute from its working
/// directory or `dfd`, normalised lexically), else as the agent sees it (the directory's
/// real path and the name), whichever a rule's pattern matches; unless that name now holds
/// another file than `opened`. A name or directory deleted since (a credential read and
/// removed at once) is matched by pattern alone: the kernel saw the file at a rule's depth
/// below a watched directory. When the process is gone, an absolute path is matched by
/// pattern.
pub fn resolve_created(
    set: &WatchSet,
    proc_root: &Path,
    pid: u32,
    dfd: i32,
    requested: &[u8],
    opened: &InodeKey,
) -> Option<Located> {
    let (parent, name) = split_last(requested)?;
    let (base, resolve) = match caller_base(proc_root, pid, dfd, requested) {
        Ok(base) => base,
        Err(_) if requested[0] == b'/' => return by_pattern(set, requested),
        Err(_) => return None,
    };
    let as_named = if requested[0] == b'/' {
        lexical_normalize(&String::from_utf8_lossy(requested))
    } else {
        fd_path(&base).and_then(|dir| {
            lexical_normalize(&format!("{dir}/{}", String::from_utf8_lossy(requested)))
        })
    };
    let dir = if parent.is_empty() {
        Ok(base)
    } else {
        openat2(&base, parent, OFlags::empty(), resolve)
    };
    let as_seen = dir
        .as_ref()
        .ok()
        .and_then(fd_path)
        .map(|dir| super::join_name(&dir, name));
    let (path, rule) = [as_named, as_seen]
        .into_iter()
        .flatten()
        .find_map(|path| set.rule_for_path(&path).map(|rule| (path, rule)))?;
    let now = dir.and_then(|dir| openat2(&dir, name, OFlags::empty(), ResolveFlags::empty()));
    match now {
        Ok(file) => {
            let meta = File::from(file).metadata().ok()?;
            (inode_key(&meta) == *opened).then_some(Located { path, rule })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(Located { path, rule }),
        Err(_) => None,
    }
}

/// The path of an open file or directory as the agent sees it.
fn fd_path(fd: &OwnedFd) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
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
    let file = openat2(&base, requested, OFlags::empty(), resolve).ok()?;
    let path = fd_path(&file)?;
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

/// One name a rename, unlink or link passed, as the caller saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    /// The canonical directory and the name; the lexically normalised path when the
    /// caller's view is gone; the path as passed when neither can be had.
    pub path: String,
    /// The watched file or directory the name refers to now, or referred to before the call.
    pub watched: Option<Located>,
}

/// Resolves a name a successful rename, unlink or link of `pid` passed. Its directory is
/// resolved as [`resolve_denied`] does (the caller's root, working directory or `dfd`);
/// the name itself is not followed (these calls act on a symlink, not its target). When the
/// process is gone, a relative path is placed under `base`, the identity of the directory
/// it was relative to (the kernel read it at the call), if that is a watched directory.
///
/// The name is watched when the file it refers to now is a watched inode or directory (the
/// new name of a rename, a link's old name), when it is a watched name in a watched
/// directory, when it was a watched directory's path (a renamed or removed `~/.ssh`), or
/// when it matches a rule's pattern (a name that no longer exists is matched lexically).
pub fn resolve_path_change(
    set: &WatchSet,
    proc_root: &Path,
    pid: u32,
    dfd: i32,
    base: Option<InodeKey>,
    requested: &[u8],
) -> Named {
    let as_passed = || String::from_utf8_lossy(requested).into_owned();
    let Some((parent, name)) = split_last(requested) else {
        return Named {
            path: as_passed(),
            watched: None,
        };
    };
    let absolute = requested[0] == b'/';
    let dir = caller_base(proc_root, pid, dfd, requested)
        .ok()
        // The caller may have closed `dfd` or changed directory since the call, and its
        // number now names another directory: the kernel's identity of it decides.
        .filter(|(now, _)| {
            base.is_none()
                || rustix::fs::fstat(now).is_ok_and(|st| {
                    Some(InodeKey {
                        dev: super::kernel_dev(st.st_dev),
                        _pad: 0,
                        ino: st.st_ino,
                    }) == base
                })
        })
        .and_then(|(base, resolve)| {
            if parent.is_empty() {
                Some(base)
            } else {
                openat2(&base, parent, OFlags::empty(), resolve).ok()
            }
        });
    if let Some(dir) = dir {
        // The directory as the agent sees it: the caller's view, named from here.
        let dir_path = fd_path(&dir);
        let now = openat2(&dir, name, OFlags::NOFOLLOW, ResolveFlags::empty())
            .ok()
            .and_then(|fd| File::from(fd).metadata().ok());
        let dir_key = File::from(dir).metadata().ok().map(|m| inode_key(&m));
        if let Some(dir_path) = dir_path {
            let path = super::join_name(&dir_path, name);
            let watched = watched_name(set, &path, dir_key, name, now.as_ref());
            return Named { path, watched };
        }
    }
    // The caller's view is gone: place the path lexically.
    let path = if absolute {
        lexical_normalize(&as_passed())
    } else {
        base.and_then(|key| set.dir_by_inode(&key))
            .and_then(|dir| lexical_normalize(&format!("{}/{}", dir.path, as_passed())))
    };
    match path {
        Some(path) => {
            let watched = watched_name(set, &path, None, name, None);
            Named { path, watched }
        }
        None => Named {
            path: as_passed(),
            watched: None,
        },
    }
}

/// The watched file or directory a name refers to: its place in a watched directory
/// (`dir`), a watched directory's path, a rule's pattern, or else the file it holds now
/// (`now`).
fn watched_name(
    set: &WatchSet,
    path: &str,
    dir: Option<InodeKey>,
    name: &[u8],
    now: Option<&std::fs::Metadata>,
) -> Option<Located> {
    let at_path = |rule| Located {
        path: path.to_owned(),
        rule,
    };
    let by_name = dir
        .and_then(|dir| set.rule_in_dir(&dir, name))
        .map(at_path)
        .or_else(|| set.dir_at(path))
        .or_else(|| set.rule_for_path(path).map(at_path));
    if by_name.is_some() {
        return by_name;
    }
    // Not a watched name: is it a watched file or directory under another name (moved
    // there, or linked)? An inode number a replaced watched file left behind can be reused
    // by an unrelated file before the refresh, so a file is checked to still be watched.
    let meta = now?;
    let key = inode_key(meta);
    if meta.is_dir() {
        set.dir_by_inode(&key)
    } else {
        set.by_inode(&key)
            .filter(|found| super::still_watched(found, &key, path))
    }
}

/// The process is gone: match the lexically normalised path against the rule patterns.
fn by_pattern(set: &WatchSet, requested: &[u8]) -> Option<Located> {
    let path = lexical_normalize(&String::from_utf8_lossy(requested))?;
    let rule = set.rule_for_path(&path)?;
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

/// `openat2(dir, path, O_PATH | flags, resolve)`: following symlinks as the caller's open
/// did, or not the last one with `O_NOFOLLOW`.
fn openat2(
    dir: &OwnedFd,
    path: &[u8],
    flags: OFlags,
    resolve: ResolveFlags,
) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        dir,
        path,
        OFlags::PATH | OFlags::CLOEXEC | flags,
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
