//! The file event (`file_open`, `proc_access`): the kernel's match confirmed against the
//! watched set, and the watched file named.

use sensor_common::{
    syscall::{AT_FDCWD, PROC_SUPER_MAGIC, TRACEFS_MAGIC, WRITE_FLAGS},
    FileEvent, InodeKey, MatchKind, OpenSyscall,
};
use sensor_log::{Detail, Event, FileAccess, Kind};

use super::names::{access, open_flags};
use super::Enricher;
use crate::pipeline::decode::{c_bytes, c_string};
use crate::watch::{
    lexical_normalize, resolve_created, resolve_denied, resolve_denied_handle, resolve_object,
    still_watched, Located, Mounts, Passed,
};

impl Enricher {
    pub(super) fn file_event(&mut self, e: &FileEvent) -> Option<Event> {
        let (Ok(matched), Some(mut event_kind)) = (
            MatchKind::try_from(e.matched),
            self.kinds.log_kind(e.header.kind),
        ) else {
            self.stats.malformed += 1;
            return None;
        };
        let name = c_bytes(&e.name);
        let key = InodeKey {
            dev: e.dev,
            _pad: 0,
            ino: e.ino,
        };
        let mut target = None;
        let mut detail = None;
        // A denied open by handle passed a handle, not a path: `requested` holds it.
        let handle = (matched == MatchKind::DeniedHandle)
            .then(|| Passed::parse(&e.requested))
            .flatten();
        let (path, kind, owner) = match matched {
            MatchKind::Inode => {
                let found = self.set.by_inode(&key);
                match found {
                    Some(found)
                        if !self.set.is_moved(&key)
                            && still_watched(
                                &found,
                                &key,
                                // No allocation on this path of every inode match; a name
                                // that is not UTF-8 is settled by the `stat`.
                                std::str::from_utf8(c_bytes(&e.requested)).unwrap_or(""),
                            ) =>
                    {
                        self.watched(Some(found), e)
                    }
                    // Not at its watched path now: decide by the path the process asked for,
                    // then by whether the inode is still the watched file, moved away.
                    found => match self.resolve_requested(e, Some(&key)) {
                        Some(found) => self.watched(Some(found), e),
                        None => {
                            match found.filter(|_| self.set.still_linked(&key, &Mounts::read())) {
                                Some(was) => {
                                    detail = Some(Detail::Moved {
                                        was: was.path.clone(),
                                    });
                                    let (_, kind, owner) = self.watched(Some(was), e);
                                    (self.path_as_opened(e), kind, owner)
                                }
                                None => {
                                    self.stats.stale_inode += 1;
                                    return None;
                                }
                            }
                        }
                    },
                }
            }
            MatchKind::DirName => self.watched(self.set.locate(e.rule, e.dev, e.ino, name), e),
            MatchKind::DirAny => match self.set.locate(e.rule, e.dev, e.ino, name) {
                Some(found) => self.watched(Some(found), e),
                None => {
                    self.stats.unmatched_names += 1;
                    return None;
                }
            },
            MatchKind::Tree => {
                let requested = c_bytes(&e.requested);
                let found = resolve_created(
                    &self.set,
                    &self.proc_root,
                    e.header.tgid,
                    e.dfd,
                    requested,
                    &key,
                );
                match found {
                    Some(found) => self.watched(Some(found), e),
                    None => {
                        self.stats.tree_unmatched += 1;
                        return None;
                    }
                }
            }
            MatchKind::Denied => match self.resolve_requested(e, None) {
                Some(found) => self.watched(Some(found), e),
                None => match self.denied_control_file(e) {
                    Some((control, path, kind)) => {
                        event_kind = control;
                        (path, kind.to_owned(), None)
                    }
                    None => {
                        self.stats.denied_unwatched += 1;
                        return None;
                    }
                },
            },
            MatchKind::DeniedHandle => {
                let found = handle.and_then(|handle| {
                    resolve_denied_handle(&self.set, &self.proc_root, e.header.tgid, e.dfd, &handle)
                });
                match found {
                    Some(found) => self.watched(Some(found), e),
                    None => {
                        self.stats.denied_unwatched += 1;
                        return None;
                    }
                }
            }
            MatchKind::Tracefs => (self.path_as_opened(e), "tracefs-probe".to_owned(), None),
            MatchKind::CorePattern => (
                "/proc/sys/kernel/core_pattern".to_owned(),
                "core-pattern".to_owned(),
                None,
            ),
            MatchKind::Proc if name == b"kcore" => {
                ("/proc/kcore".to_owned(), "procfs".to_owned(), None)
            }
            MatchKind::Proc => {
                let tgid = self.attribution.procs.tgid_of(e.target_tgid);
                if tgid == e.header.tgid {
                    self.stats.self_access += 1;
                    return None;
                }
                target = Some(self.target(tgid));
                (
                    format!("/proc/{tgid}/{}", String::from_utf8_lossy(name)),
                    "procfs".to_owned(),
                    None,
                )
            }
        };
        let mut requested = handle.map_or_else(|| c_string(&e.requested), |h| h.describe());
        if e.requested_truncated != 0 {
            requested.push('…');
        }
        let opened = e.ino != 0;
        let file = FileAccess {
            path,
            requested,
            kind,
            access: access(e.flags).to_owned(),
            flags: open_flags(e.flags),
            syscall: OpenSyscall::try_from(e.syscall)
                .map_or("unknown", |s| s.name())
                .to_owned(),
            dev: opened.then(|| dev_name(e.dev)),
            inode: opened.then_some(e.ino),
            owner,
            compat: e.compat != 0,
        };
        let mut event = self.base(event_kind, &e.header, Some(e.ret));
        event.file = Some(file);
        event.target = target;
        if e.overlay_dev != 0 {
            detail = Some(Detail::Overlay {
                opened: self.path_as_opened(e),
                overlay_dev: dev_name(e.overlay_dev),
            });
        }
        event.detail = detail;
        Some(event)
    }

    /// Path, credential kind and owner of a kernel-confirmed watched file. When the set
    /// changed between the kernel's match and now, the kernel's rule id still gives the kind
    /// and the requested path (normalised) stands in for the file's path.
    fn watched(&self, found: Option<Located>, e: &FileEvent) -> (String, String, Option<String>) {
        let (path, rule) = match found {
            Some(l) => (l.path, l.rule),
            None => {
                let requested = c_string(&e.requested);
                (lexical_normalize(&requested).unwrap_or(requested), e.rule)
            }
        };
        match self.set.rule(rule) {
            Some(r) => (path, r.kind.clone(), r.owner.clone()),
            None => (path, "unknown".to_owned(), None),
        }
    }

    /// A denied open for writing of a tracefs probe file or `core_pattern` (a process without
    /// root trying): the kernel had no file to recognise, so the requested path is resolved
    /// here as for the caller and its file system checked by magic.
    fn denied_control_file(&self, e: &FileEvent) -> Option<(Kind, String, &'static str)> {
        if e.flags & WRITE_FLAGS == 0 {
            return None;
        }
        let requested = c_bytes(&e.requested);
        let name = requested.rsplit(|&b| b == b'/').next()?;
        let probe = matches!(
            name,
            b"uprobe_events" | b"kprobe_events" | b"dynamic_events"
        );
        if !probe && name != b"core_pattern" {
            return None;
        }
        let (_, path, _) = resolve_object(&self.proc_root, e.header.tgid, e.dfd, requested)?;
        let magic = rustix::fs::statfs(path.as_str()).ok()?.f_type as u64;
        if probe && magic == TRACEFS_MAGIC {
            Some((Kind::TracefsWrite, path, "tracefs-probe"))
        } else if !probe && magic == PROC_SUPER_MAGIC {
            Some((
                Kind::CorePatternWrite,
                "/proc/sys/kernel/core_pattern".to_owned(),
                "core-pattern",
            ))
        } else {
            None
        }
    }

    /// The path the caller opened, made absolute from its working directory or directory
    /// descriptor when they can still be read, and normalised lexically (symlinks kept: the
    /// path as opened, e.g. through `/sys/kernel/debug/tracing`).
    fn path_as_opened(&self, e: &FileEvent) -> String {
        let requested = c_string(&e.requested);
        if requested.starts_with('/') {
            return lexical_normalize(&requested).unwrap_or(requested);
        }
        let base = if e.dfd == AT_FDCWD {
            format!("{}/cwd", e.header.tgid)
        } else {
            format!("{}/fd/{}", e.header.tgid, e.dfd)
        };
        match std::fs::read_link(self.proc_root.join(base)) {
            Ok(dir) => {
                let joined = format!("{}/{requested}", dir.display());
                lexical_normalize(&joined).unwrap_or(joined)
            }
            Err(_) => requested,
        }
    }

    /// The watched file the requested path names, resolved as the kernel would for the
    /// caller; a file with the identity `stale` is matched by name only.
    fn resolve_requested(&self, e: &FileEvent, stale: Option<&InodeKey>) -> Option<Located> {
        let requested = c_bytes(&e.requested);
        resolve_denied(
            &self.set,
            &self.proc_root,
            e.header.tgid,
            e.dfd,
            requested,
            stale,
        )
    }
}

/// `major:minor` of a kernel `s_dev`.
fn dev_name(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xf_ffff)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use sensor_common::{EventKind, FileEvent, MatchKind, NAME_LEN};
    use sensor_log::{Kind, Target};

    use super::super::fixture::{c_buf, fixture, open_event, ACTOR, VICTIM};
    use crate::pipeline::decode::Decoded;

    #[test]
    fn inode_match_is_fully_attributed() {
        let mut f = fixture();
        let shadow = f.root.join("etc/shadow");
        let e = open_event(MatchKind::Inode, &shadow, b"/etc/shadow", 3);
        let event = f.enricher.enrich(&Decoded::File(e)).unwrap();
        assert_eq!(event.kind, Kind::FileOpen);
        assert!(event.ok);
        assert_eq!(event.errno, None);
        assert!(
            event.time.ends_with('Z') && event.time.len() == "2024-01-01T00:00:00.000000000Z".len(),
            "{}",
            event.time
        );
        let file = event.file.unwrap();
        let meta = fs::metadata(&shadow).unwrap();
        assert_eq!(file.path, shadow.to_str().unwrap());
        assert_eq!(file.requested, "/etc/shadow");
        assert_eq!(
            (file.kind.as_str(), file.access.as_str()),
            ("password-db", "read")
        );
        assert_eq!(
            (file.flags.as_str(), file.syscall.as_str()),
            ("O_RDONLY|O_CLOEXEC", "openat")
        );
        assert_eq!(
            file.dev,
            Some(format!(
                "{}:{}",
                libc::major(meta.dev()),
                libc::minor(meta.dev())
            ))
        );
        assert_eq!(file.inode, Some(meta.ino()));
        let p = event.process.unwrap();
        assert_eq!(
            (p.pid, p.comm.as_str(), p.exe.as_str()),
            (ACTOR, "nginx", "/usr/sbin/nginx")
        );
        assert_eq!(p.cmdline, "/usr/sbin/nginx -c");
        assert_eq!(p.ancestors, ["init"]);
        let id = event.identity.unwrap();
        assert_eq!(
            (id.user.as_str(), id.unit.as_deref()),
            ("root", Some("nginx.service"))
        );
        assert!(!id.human);
        assert_eq!(id.human_reason, "no login uid; unit nginx.service");
        assert_eq!(id.owner.as_deref(), Some("web"));
        assert_eq!(f.enricher.stats().emitted, 1);
    }

    #[test]
    fn login_uid_makes_a_human() {
        let mut f = fixture();
        let mut e = open_event(
            MatchKind::Inode,
            &f.root.join("etc/shadow"),
            b"/etc/shadow",
            3,
        );
        e.header.auid = 0;
        let id = f
            .enricher
            .enrich(&Decoded::File(e))
            .unwrap()
            .identity
            .unwrap();
        assert!(id.human);
        assert_eq!(id.human_reason, "login uid 0 (root)");
    }

    #[test]
    fn dir_any_names_are_checked_against_the_glob() {
        let mut f = fixture();
        let key = f.root.join("home/a/.ssh/id_rsa");
        let hit = f
            .enricher
            .enrich(&Decoded::File(open_event(
                MatchKind::DirAny,
                &key,
                b".ssh/id_rsa",
                4,
            )))
            .unwrap();
        let file = hit.file.unwrap();
        assert_eq!(
            (file.path.as_str(), file.kind.as_str()),
            (key.to_str().unwrap(), "ssh-key")
        );
        let public = f.root.join("home/a/.ssh/id_rsa.pub");
        assert!(f
            .enricher
            .enrich(&Decoded::File(open_event(
                MatchKind::DirAny,
                &public,
                b"x",
                4
            )))
            .is_none());
        assert_eq!(f.enricher.stats().unmatched_names, 1);
    }

    #[test]
    fn denied_opens_resolve_in_the_callers_root() {
        let mut f = fixture();
        let shadow = f.root.join("etc/shadow");
        let e = open_event(MatchKind::Denied, &shadow, b"/etc/../etc/shadow", -13);
        let event = f.enricher.enrich(&Decoded::File(e)).unwrap();
        assert_eq!((event.ok, event.errno), (false, Some(13)));
        let file = event.file.unwrap();
        assert_eq!(
            (file.path.as_str(), file.dev, file.inode),
            (shadow.to_str().unwrap(), None, None)
        );
        let rel = open_event(MatchKind::Denied, &shadow, b".ssh/id_dsa", -1);
        let file = f
            .enricher
            .enrich(&Decoded::File(rel))
            .unwrap()
            .file
            .unwrap();
        assert_eq!(
            file.path,
            f.root.join("home/a/.ssh/id_dsa").to_str().unwrap()
        );
        let other = open_event(MatchKind::Denied, &shadow, b"/etc/passwd", -13);
        assert!(f.enricher.enrich(&Decoded::File(other)).is_none());
        assert_eq!(f.enricher.stats().denied_unwatched, 1);
    }

    fn proc_event(target: u32, name: &[u8]) -> FileEvent {
        let mut e = open_event(
            MatchKind::Proc,
            Path::new("/proc/self/environ"),
            b"/proc/201/environ",
            3,
        );
        e.header.kind = EventKind::ProcAccess as u8;
        e.target_tgid = target;
        e.rule = sensor_common::PROC_ENVIRON;
        e.name = c_buf::<NAME_LEN>(name);
        e
    }

    #[test]
    fn proc_access_maps_threads_and_drops_self_access() {
        let mut f = fixture();
        let event = f
            .enricher
            .enrich(&Decoded::File(proc_event(201, b"environ")))
            .unwrap();
        assert_eq!(event.kind, Kind::ProcAccess);
        let file = event.file.unwrap();
        assert_eq!(
            (file.path.as_str(), file.kind.as_str()),
            ("/proc/200/environ", "procfs")
        );
        assert_eq!(
            event.target,
            Some(Target {
                pid: VICTIM,
                exe: Some("/usr/bin/victim".into())
            })
        );
        assert!(f
            .enricher
            .enrich(&Decoded::File(proc_event(101, b"mem")))
            .is_none());
        assert_eq!(f.enricher.stats().self_access, 1);
        let kcore = f
            .enricher
            .enrich(&Decoded::File(proc_event(0, b"kcore")))
            .unwrap();
        assert_eq!(
            (kcore.file.unwrap().path.as_str(), kcore.target),
            ("/proc/kcore", None)
        );
    }

    /// tracefs probe files by the path as opened (absolute, or from the working directory),
    /// `core_pattern` by its one path.
    #[test]
    fn kernel_control_files_opened_for_writing() {
        let mut f = fixture();
        let control = |kind: EventKind, matched: MatchKind, name: &[u8], requested: &[u8]| {
            let mut e = open_event(matched, Path::new("/nonexistent/x"), requested, 3);
            e.header.kind = kind as u8;
            e.flags = (libc::O_WRONLY | libc::O_APPEND) as u64;
            e.name = c_buf::<NAME_LEN>(name);
            e
        };
        let e = control(
            EventKind::TracefsWrite,
            MatchKind::Tracefs,
            b"uprobe_events",
            b"/sys/kernel/debug/tracing/./uprobe_events",
        );
        let event = f.enricher.enrich(&Decoded::File(e)).unwrap();
        assert_eq!(event.kind, Kind::TracefsWrite);
        let file = event.file.unwrap();
        assert_eq!(
            (file.path.as_str(), file.kind.as_str(), file.access.as_str()),
            (
                "/sys/kernel/debug/tracing/uprobe_events",
                "tracefs-probe",
                "write"
            )
        );
        // Relative to the caller's working directory (the fixture's home/a).
        let e = control(
            EventKind::TracefsWrite,
            MatchKind::Tracefs,
            b"kprobe_events",
            b"t/kprobe_events",
        );
        let file = f.enricher.enrich(&Decoded::File(e)).unwrap().file.unwrap();
        let expected = f.root.join("home/a/t/kprobe_events");
        assert_eq!(file.path, expected.to_str().unwrap());

        let e = control(
            EventKind::CorePatternWrite,
            MatchKind::CorePattern,
            b"core_pattern",
            b"core_pattern",
        );
        let event = f.enricher.enrich(&Decoded::File(e)).unwrap();
        assert_eq!(event.kind, Kind::CorePatternWrite);
        let file = event.file.unwrap();
        assert_eq!(
            (file.path.as_str(), file.kind.as_str()),
            ("/proc/sys/kernel/core_pattern", "core-pattern")
        );
    }
}
