//! Renames, unlinks and links (`file_rename`, `file_unlink`, `file_link`): the kernel passed
//! the call on a watched *name* near the end of either path; here both paths are resolved as
//! the caller saw them and the event is kept only when one names a watched file or directory.

use sensor_common::{
    syscall::{RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT},
    EventKind, InodeKey, PathChangeEvent, PathSyscall,
};
use sensor_log::{Detail, Event, FileAccess};

use super::Enricher;
use crate::pipeline::decode::c_bytes;
use crate::watch::{resolve_path_change, Named};

/// `unlinkat`'s and `linkat`'s flags (`<fcntl.h>`).
const AT_REMOVEDIR: u32 = 0x200;
const AT_SYMLINK_FOLLOW: u32 = 0x400;
const AT_EMPTY_PATH: u32 = 0x1000;

impl Enricher {
    pub(super) fn path_change_event(&mut self, e: &PathChangeEvent) -> Option<Event> {
        let (Some(event_kind), Ok(syscall), Ok(kernel_kind)) = (
            self.kinds.log_kind(e.header.kind),
            PathSyscall::try_from(e.syscall),
            EventKind::try_from(e.header.kind),
        ) else {
            self.stats.malformed += 1;
            return None;
        };
        let old = self.resolve_name(e, e.old_dfd, e.old_base_dev, e.old_base_ino, &e.old);
        let new = (kernel_kind != EventKind::FileUnlink)
            .then(|| self.resolve_name(e, e.new_dfd, e.new_base_dev, e.new_base_ino, &e.new));
        // The old name first: a watched file renamed away, unlinked or linked elsewhere; then
        // the new one: a file renamed or linked onto a watched name.
        let (watched, requested, truncated) = match (&old.watched, &new) {
            (Some(w), _) => (w.clone(), &e.old, e.old_truncated),
            (
                None,
                Some(Named {
                    watched: Some(w), ..
                }),
            ) => (w.clone(), &e.new, e.new_truncated),
            _ => {
                self.stats.path_unwatched += 1;
                return None;
            }
        };
        let (kind, owner) = match self.set.rule(watched.rule) {
            Some(r) => (r.kind.clone(), r.owner.clone()),
            None => ("unknown".to_owned(), None),
        };
        let mut requested = String::from_utf8_lossy(c_bytes(requested)).into_owned();
        if truncated != 0 {
            requested.push('…');
        }
        let file = FileAccess {
            path: watched.path,
            requested,
            kind,
            access: access(kernel_kind).to_owned(),
            flags: String::new(),
            syscall: syscall.name().to_owned(),
            dev: None,
            inode: None,
            owner,
            compat: e.compat != 0,
        };
        let mut event = self.base(event_kind, &e.header, Some(e.ret));
        event.file = Some(file);
        event.detail = Some(Detail::PathChange {
            from: old.path,
            to: new.map(|n| n.path),
            flags: flag_names(syscall, e.flags),
        });
        Some(event)
    }

    /// One of the event's names, resolved for its caller.
    fn resolve_name(
        &self,
        e: &PathChangeEvent,
        dfd: i32,
        base_dev: u32,
        base_ino: u64,
        path: &[u8],
    ) -> Named {
        let base = (base_ino != 0).then_some(InodeKey {
            dev: base_dev,
            _pad: 0,
            ino: base_ino,
        });
        resolve_path_change(
            &self.set,
            &self.proc_root,
            e.header.tgid,
            dfd,
            base,
            c_bytes(path),
        )
    }
}

/// `file.access` of each kind: what the call did to the name.
fn access(kind: EventKind) -> &'static str {
    match kind {
        EventKind::FileUnlink => "unlink",
        EventKind::FileLink => "link",
        _ => "rename",
    }
}

/// The call's flags by name; unknown bits in hex.
fn flag_names(syscall: PathSyscall, flags: u32) -> Vec<String> {
    let known: &[(u32, &str)] = match syscall {
        PathSyscall::Renameat2 => &[
            (RENAME_NOREPLACE, "RENAME_NOREPLACE"),
            (RENAME_EXCHANGE, "RENAME_EXCHANGE"),
            (RENAME_WHITEOUT, "RENAME_WHITEOUT"),
        ],
        PathSyscall::Unlinkat => &[(AT_REMOVEDIR, "AT_REMOVEDIR")],
        PathSyscall::Linkat => &[
            (AT_SYMLINK_FOLLOW, "AT_SYMLINK_FOLLOW"),
            (AT_EMPTY_PATH, "AT_EMPTY_PATH"),
        ],
        _ => &[],
    };
    let mut names: Vec<String> = known
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| (*name).to_owned())
        .collect();
    let rest = known.iter().fold(flags, |rest, (bit, _)| rest & !bit);
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names
}

#[cfg(test)]
mod tests {
    use std::fs;

    use sensor_common::{
        syscall::{AT_FDCWD, RENAME_EXCHANGE},
        EventKind, PathChangeEvent, PathSyscall, REQUESTED_LEN,
    };
    use sensor_log::{Detail, Kind};

    use super::super::fixture::{c_buf, fixture, header, ACTOR};
    use super::flag_names;
    use crate::pipeline::decode::Decoded;

    fn change(kind: EventKind, syscall: PathSyscall, old: &[u8], new: &[u8]) -> PathChangeEvent {
        PathChangeEvent {
            header: header(kind),
            ret: 0,
            flags: 0,
            old_dfd: AT_FDCWD,
            new_dfd: AT_FDCWD,
            syscall: syscall as u8,
            old_truncated: 0,
            new_truncated: 0,
            compat: 0,
            old_base_ino: 0,
            new_base_ino: 0,
            old_base_dev: 0,
            new_base_dev: 0,
            old: c_buf::<REQUESTED_LEN>(old),
            new: c_buf::<REQUESTED_LEN>(new),
        }
    }

    /// `sed -i`: a temporary file renamed over the watched one names the watched path, seen
    /// through the caller's root.
    #[test]
    fn a_rename_onto_a_watched_name_names_it() {
        let mut f = fixture();
        fs::write(f.root.join("etc/shadow.tmp"), "y").unwrap();
        fs::rename(f.root.join("etc/shadow.tmp"), f.root.join("etc/shadow")).unwrap();
        let e = change(
            EventKind::FileRename,
            PathSyscall::Rename,
            b"/etc/shadow.tmp",
            b"/etc/shadow",
        );
        let event = f.enricher.enrich(&Decoded::PathChange(e)).unwrap();
        assert_eq!(event.kind, Kind::FileRename);
        let file = event.file.unwrap();
        let shadow = f.root.join("etc/shadow");
        assert_eq!(file.path, shadow.to_str().unwrap());
        assert_eq!(file.kind, "password-db");
        assert_eq!(file.requested, "/etc/shadow");
        assert_eq!(event.process.unwrap().pid, ACTOR);
        assert_eq!(
            event.detail,
            Some(Detail::PathChange {
                from: f.root.join("etc/shadow.tmp").to_str().unwrap().to_owned(),
                to: Some(shadow.to_str().unwrap().to_owned()),
                flags: vec![],
            })
        );
    }

    /// A relative unlink in a glob directory names the file; an unwatched one is dropped
    /// and counted.
    #[test]
    fn unlinks_are_kept_only_for_watched_names() {
        let mut f = fixture();
        fs::remove_file(f.root.join("home/a/.ssh/id_rsa")).unwrap();
        // The actor's working directory is home/a.
        let e = change(
            EventKind::FileUnlink,
            PathSyscall::Unlink,
            b".ssh/id_rsa",
            b"",
        );
        let event = f.enricher.enrich(&Decoded::PathChange(e)).unwrap();
        let file = event.file.unwrap();
        assert!(file.path.ends_with("/home/a/.ssh/id_rsa"), "{}", file.path);
        assert_eq!(
            (file.kind.as_str(), file.access.as_str()),
            ("ssh-key", "unlink")
        );
        assert!(matches!(
            event.detail,
            Some(Detail::PathChange { to: None, .. })
        ));
        let e = change(
            EventKind::FileUnlink,
            PathSyscall::Unlink,
            b".ssh/id_rsa.pub",
            b"",
        );
        assert!(f.enricher.enrich(&Decoded::PathChange(e)).is_none());
        assert_eq!(f.enricher.stats().path_unwatched, 1);
    }

    #[test]
    fn flags_are_named() {
        assert_eq!(
            flag_names(PathSyscall::Renameat2, RENAME_EXCHANGE | 0x100),
            ["RENAME_EXCHANGE", "0x100"]
        );
        assert_eq!(flag_names(PathSyscall::Unlinkat, 0x200), ["AT_REMOVEDIR"]);
        assert!(flag_names(PathSyscall::Rename, 0).is_empty());
    }
}
