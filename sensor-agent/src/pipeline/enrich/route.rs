//! Routes to another process's secrets around the file and ptrace syscalls
//! (`perf_event_open`, `bpf`, `prlimit64`, `fanotify_mark`): the arguments and what they
//! pointed to spelled out, the target process named in the host's pid namespace, and a
//! fanotify mark's object checked against the watched set.

use std::path::Path;

use sensor_common::{EventKind, InodeKey, RouteEvent};
use sensor_log::{Detail, Event, SyscallDetail, Target};

use super::names::{
    bpf_attach_type, bpf_command, bpf_prog_type, fanotify_flags, fanotify_mark_type, fanotify_mask,
    perf_samples, perf_type, rlimit_resource, BPF_LINK_CREATE, BPF_PROG_ATTACH, BPF_PROG_LOAD,
    BPF_RAW_TRACEPOINT_OPEN, PERF_EVENT_IOC_SET_BPF, PERF_SAMPLE_USER_MEMORY,
};
use super::Enricher;
use crate::pipeline::decode::{c_bytes, c_string};
use crate::watch::{resolve_object, WatchSet};

/// `PERF_FLAG_PID_CGROUP`: the pid argument is a cgroup directory's descriptor.
const PERF_FLAG_PID_CGROUP: u64 = 1 << 2;

/// Where the kernel lists its performance monitoring units and their type numbers.
const PMUS: &str = "/sys/bus/event_source/devices";

/// Most watched files a `fanotify_mark` event lists.
const MAX_COVERED: usize = 16;

impl Enricher {
    pub(super) fn route_event(&mut self, e: &RouteEvent) -> Option<Event> {
        let (kind, out_kind) = self.kinds_of(e.header.kind)?;
        let (a, v) = (&e.args, &e.values);
        let mut syscall = SyscallDetail {
            compat: e.compat != 0,
            ..SyscallDetail::default()
        };
        let (target, detail) = match kind {
            EventKind::PerfEventOpen => {
                let pid = e.target_tgid as i32;
                let target = if a[4] & PERF_FLAG_PID_CGROUP != 0 {
                    syscall.target_fd = Some(pid);
                    None
                } else {
                    self.other_process(e, pid)?
                };
                let sample_type = v[3];
                let detail = Detail::PerfEventOpen {
                    event_type: perf_type(v[0] as u32, Path::new(PMUS)),
                    config: v[1],
                    sample_type,
                    samples: perf_samples(sample_type),
                    reads_user_memory: sample_type & PERF_SAMPLE_USER_MEMORY != 0,
                    cpu: a[2] as u32 as i32,
                    system_wide: pid == -1,
                };
                (target, detail)
            }
            EventKind::Bpf => {
                // An `ioctl` attaching a program to a perf event says so in `values[3]`.
                let cmd = if v[3] == PERF_EVENT_IOC_SET_BPF {
                    PERF_EVENT_IOC_SET_BPF
                } else {
                    a[0] & 0xffff_ffff
                };
                let command = bpf_command(cmd);
                syscall.operation = Some(command.clone());
                (None, bpf_detail(command, cmd, e))
            }
            EventKind::Prlimit64 => {
                syscall.operation = Some(rlimit_resource(a[1] & 0xffff_ffff));
                let target = self.other_process(e, e.target_tgid as i32)?;
                (
                    target,
                    Detail::CoreLimit {
                        soft: v[0],
                        hard: v[1],
                    },
                )
            }
            EventKind::FanotifyMark => (None, self.mark_detail(e)),
            // A file, syscall or lifecycle kind in a route record: a kernel/agent mismatch.
            _ => {
                self.stats.malformed += 1;
                return None;
            }
        };
        let mut event = self.base(out_kind, &e.header, Some(e.ret));
        event.target = target;
        event.syscall = Some(syscall);
        event.detail = Some(detail);
        Some(event)
    }

    /// The target of a pid argument: `Ok(None)` for none (-1, every process), `None` (drop
    /// the event) when it is the caller itself seen through its own pid namespace.
    fn other_process(&mut self, e: &RouteEvent, pid: i32) -> Option<Option<Target>> {
        if pid <= 0 {
            return Some(None);
        }
        let target = self.caller_target(&e.header, pid as u32);
        if target.as_ref().is_some_and(|t| t.pid == e.header.tgid) {
            self.stats.self_access += 1;
            return None;
        }
        Some(target)
    }

    fn mark_detail(&mut self, e: &RouteEvent) -> Detail {
        let flags = e.args[1] & 0xffff_ffff;
        let mark = fanotify_mark_type(flags);
        let requested = c_bytes(&e.path);
        let object = resolve_object(
            &self.proc_root,
            e.header.tgid,
            e.values[1] as u32 as i32,
            requested,
        );
        let (covers, mut watched) = match &object {
            Some((key, path, is_dir)) => covered(&self.set, mark, key, path, *is_dir),
            None => (None, Vec::new()),
        };
        let watched_count = watched.len() as u64;
        watched.sort();
        watched.truncate(MAX_COVERED);
        Detail::FanotifyMark {
            mark: mark.to_owned(),
            mask: fanotify_mask(e.values[0]),
            flags: fanotify_flags(flags),
            requested: c_string(&e.path),
            path: object.map(|(_, path, _)| path),
            covers: covers.map(str::to_owned),
            watched,
            watched_count,
        }
    }
}

fn bpf_detail(command: String, cmd: u64, e: &RouteEvent) -> Detail {
    let v = &e.values;
    let low = |x: u64| x as u32 as i32;
    let high = |x: u64| (x >> 32) as u32 as i32;
    let mut detail = Detail::Bpf {
        command,
        prog_type: None,
        prog_name: None,
        attach_type: None,
        tracepoint: None,
        prog_fd: None,
        target_fd: None,
    };
    let Detail::Bpf {
        prog_type,
        prog_name,
        attach_type,
        tracepoint,
        prog_fd,
        target_fd,
        ..
    } = &mut detail
    else {
        return detail;
    };
    match cmd {
        // prog_type @0, ..., expected_attach_type (0 is also "none" for most types).
        BPF_PROG_LOAD => {
            *prog_type = Some(bpf_prog_type(v[0] & 0xffff_ffff));
            let name = c_string(&e.name);
            *prog_name = (!name.is_empty()).then_some(name);
            *attach_type = (v[2] != 0).then(|| bpf_attach_type(v[2]));
        }
        // target_fd @0, attach_bpf_fd @4, attach_type @8
        BPF_PROG_ATTACH => {
            *target_fd = Some(low(v[0]));
            *prog_fd = Some(high(v[0]));
            *attach_type = Some(bpf_attach_type(v[1] & 0xffff_ffff));
        }
        // name @0, prog_fd @8
        BPF_RAW_TRACEPOINT_OPEN => {
            *tracepoint = Some(c_string(&e.path));
            *prog_fd = Some(low(v[1]));
        }
        // ioctl(perf event fd, PERF_EVENT_IOC_SET_BPF, prog fd)
        PERF_EVENT_IOC_SET_BPF => {
            *target_fd = Some(e.args[0] as i32);
            *prog_fd = Some(e.args[2] as i32);
        }
        // prog_fd @0, target_fd @4, attach_type @8
        BPF_LINK_CREATE => {
            *prog_fd = Some(low(v[0]));
            *target_fd = Some(high(v[0]));
            *attach_type = Some(bpf_attach_type(v[1] & 0xffff_ffff));
        }
        _ => {}
    }
    detail
}

/// How a mark of type `mark` on the object `key` (at `path`) covers watched files, and which
/// (all of them, unsorted).
/// An inode mark covers a watched file itself, or a directory's children (holding watched
/// files, or a watched directory of globbed names); a mount or filesystem mark covers every
/// watched file on the same device (a bind mount of a subtree counts as its whole
/// file system: the conservative side).
fn covered(
    set: &WatchSet,
    mark: &'static str,
    key: &InodeKey,
    path: &str,
    is_dir: bool,
) -> (Option<&'static str>, Vec<String>) {
    let mut files: Vec<String> = Vec::new();
    let mut how = None;
    for watched in set.inodes().keys() {
        let Some(found) = set.by_inode(watched) else {
            continue;
        };
        let hit = match mark {
            "inode" if watched == key => Some("file"),
            "inode" if is_dir && Path::new(&found.path).parent() == Some(Path::new(path)) => {
                Some("directory")
            }
            "inode" => None,
            _ if watched.dev == key.dev => Some(mark),
            _ => None,
        };
        if let Some(h) = hit {
            if how != Some("file") {
                how = Some(h);
            }
            files.push(found.path);
        }
    }
    if how.is_none() && mark == "inode" && is_dir && set.dir_by_inode(key).is_some() {
        how = Some("directory");
    }
    (how, files)
}

#[cfg(test)]
mod tests {
    use sensor_common::{EventKind, RouteEvent, BPF_NAME_LEN, REQUESTED_LEN};
    use sensor_log::{Detail, Event, Kind, Target};

    use super::super::fixture::{c_buf, fixture, header, Fixture, ACTOR, VICTIM};
    use crate::pipeline::decode::Decoded;

    fn route(kind: EventKind, args: [u64; 6], values: [u64; 4], ret: i64) -> RouteEvent {
        RouteEvent {
            header: header(kind),
            ret,
            args,
            values,
            target_tgid: 0,
            compat: 0,
            _pad: [0; 3],
            name: [0; BPF_NAME_LEN],
            path: [0; REQUESTED_LEN],
        }
    }

    fn enrich(f: &mut Fixture, e: RouteEvent) -> Option<Event> {
        f.enricher.enrich(&Decoded::Route(e))
    }

    fn victim() -> Option<Target> {
        Some(Target {
            pid: VICTIM,
            exe: Some("/usr/bin/victim".into()),
        })
    }

    #[test]
    fn perf_event_open_names_the_target_and_the_samples() {
        let mut f = fixture();
        // A thread of the victim, sampling its user stack and registers.
        let mut e = route(
            EventKind::PerfEventOpen,
            [0x1000, 201, u64::from(u32::MAX), u64::from(u32::MAX), 8, 0],
            [1 | 112 << 32, 0, 100_000, 1 | 1 << 12 | 1 << 13],
            3,
        );
        e.target_tgid = 201;
        let event = enrich(&mut f, e).unwrap();
        assert_eq!((event.kind, event.ok), (Kind::PerfEventOpen, true));
        assert_eq!(event.target, victim());
        assert_eq!(
            event.detail,
            Some(Detail::PerfEventOpen {
                event_type: "software".into(),
                config: 0,
                sample_type: 1 | 1 << 12 | 1 << 13,
                samples: vec!["ip".into(), "regs_user".into(), "stack_user".into()],
                reads_user_memory: true,
                cpu: -1,
                system_wide: false,
            })
        );

        // A thread of the caller itself is no other process.
        let mut own = route(EventKind::PerfEventOpen, [0, 101, 0, 0, 0, 0], [0; 4], 3);
        own.target_tgid = 101;
        assert!(enrich(&mut f, own).is_none());
        assert_eq!(f.enricher.stats().self_access, 1);

        // System-wide: no target.
        let mut all = route(EventKind::PerfEventOpen, [0, 0, 0, 0, 0, 0], [0; 4], -13);
        all.target_tgid = u32::MAX;
        let event = enrich(&mut f, all).unwrap();
        assert_eq!(
            (event.ok, event.errno, event.target),
            (false, Some(13), None)
        );
        let Some(Detail::PerfEventOpen {
            system_wide, cpu, ..
        }) = event.detail
        else {
            panic!("{:?}", event.detail);
        };
        assert_eq!((system_wide, cpu), (true, 0));
    }

    #[test]
    fn bpf_loads_and_attachments() {
        let mut f = fixture();
        let mut load = route(EventKind::Bpf, [5, 0x1000, 128, 0, 0, 0], [2, 0, 0, 0], 4);
        load.name = c_buf::<BPF_NAME_LEN>(b"read_buf");
        let event = enrich(&mut f, load).unwrap();
        assert_eq!(event.kind, Kind::Bpf);
        assert_eq!(
            event.syscall.unwrap().operation.as_deref(),
            Some("BPF_PROG_LOAD")
        );
        assert_eq!(
            event.detail,
            Some(Detail::Bpf {
                command: "BPF_PROG_LOAD".into(),
                prog_type: Some("BPF_PROG_TYPE_KPROBE".into()),
                prog_name: Some("read_buf".into()),
                attach_type: None,
                tracepoint: None,
                prog_fd: None,
                target_fd: None,
            })
        );

        let mut open = route(
            EventKind::Bpf,
            [17, 0x1000, 16, 0, 0, 0],
            [0x2000, 4, 0, 0],
            5,
        );
        open.path = c_buf::<REQUESTED_LEN>(b"sys_enter");
        let Some(Detail::Bpf {
            tracepoint,
            prog_fd,
            ..
        }) = enrich(&mut f, open).unwrap().detail
        else {
            panic!("no bpf detail");
        };
        assert_eq!(
            (tracepoint.as_deref(), prog_fd),
            (Some("sys_enter"), Some(4))
        );

        // link_create { prog_fd 4, target_fd 7, attach_type BPF_TRACE_RAW_TP }
        let link = route(
            EventKind::Bpf,
            [28, 0x1000, 64, 0, 0, 0],
            [4 | 7 << 32, 23, 0, 0],
            -1,
        );
        let event = enrich(&mut f, link).unwrap();
        assert_eq!((event.ok, event.errno), (false, Some(1)));
        let Some(Detail::Bpf {
            prog_fd,
            target_fd,
            attach_type,
            ..
        }) = event.detail
        else {
            panic!("no bpf detail");
        };
        assert_eq!(
            (prog_fd, target_fd, attach_type.as_deref()),
            (Some(4), Some(7), Some("BPF_TRACE_RAW_TP"))
        );

        // ioctl(perf event fd 9, PERF_EVENT_IOC_SET_BPF, prog fd 4): the first argument is
        // a descriptor, not a command, and says nothing.
        let set = route(
            EventKind::Bpf,
            [9, 0x4004_2408, 4, 0, 0, 0],
            [0, 0, 0, 0x4004_2408],
            0,
        );
        let event = enrich(&mut f, set).unwrap();
        assert_eq!(
            event.syscall.unwrap().operation.as_deref(),
            Some("PERF_EVENT_IOC_SET_BPF")
        );
        let Some(Detail::Bpf {
            command,
            prog_fd,
            target_fd,
            prog_type,
            ..
        }) = event.detail
        else {
            panic!("no bpf detail");
        };
        assert_eq!(
            (command.as_str(), prog_fd, target_fd, prog_type),
            ("PERF_EVENT_IOC_SET_BPF", Some(4), Some(9), None)
        );
    }

    #[test]
    fn prlimit_core_of_another_process() {
        let mut f = fixture();
        let mut e = route(
            EventKind::Prlimit64,
            [200, 4, 0x1000, 0, 0, 0],
            [u64::MAX, u64::MAX, 0, 0],
            0,
        );
        e.target_tgid = 200;
        let event = enrich(&mut f, e).unwrap();
        assert_eq!((event.kind, event.target), (Kind::Prlimit64, victim()));
        assert_eq!(
            event.syscall.unwrap().operation.as_deref(),
            Some("RLIMIT_CORE")
        );
        assert_eq!(
            event.detail,
            Some(Detail::CoreLimit {
                soft: u64::MAX,
                hard: u64::MAX
            })
        );
        let mut own = route(
            EventKind::Prlimit64,
            [ACTOR as u64, 4, 1, 0, 0, 0],
            [0; 4],
            0,
        );
        own.target_tgid = ACTOR;
        assert!(enrich(&mut f, own).is_none());
    }

    fn mark(f: &mut Fixture, flags: u64, path: &[u8]) -> (String, Option<String>, Vec<String>) {
        let mut e = route(
            EventKind::FanotifyMark,
            [3, flags, 0x21, u64::from(u32::MAX - 99), 0x1000, 0],
            [0x21, (-100i64) as u64, 0, 0],
            0,
        );
        e.path = c_buf::<REQUESTED_LEN>(path);
        let event = enrich(f, e).unwrap();
        assert_eq!(event.kind, Kind::FanotifyMark);
        let Some(Detail::FanotifyMark {
            mark,
            mask,
            requested,
            covers,
            watched,
            watched_count,
            ..
        }) = event.detail
        else {
            panic!("no fanotify detail");
        };
        assert_eq!(mask, "FAN_ACCESS|FAN_OPEN");
        assert_eq!(requested.as_bytes(), path);
        assert_eq!(watched_count, watched.len() as u64);
        (mark, covers, watched)
    }

    #[test]
    fn fanotify_marks_are_checked_against_the_watched_set() {
        let mut f = fixture();
        let shadow = f.root.join("etc/shadow").to_str().unwrap().to_owned();
        let key = f
            .root
            .join("home/a/.ssh/id_rsa")
            .to_str()
            .unwrap()
            .to_owned();
        // Absolute, resolved in the caller's root.
        assert_eq!(
            mark(&mut f, 1, b"/etc/shadow"),
            ("inode".into(), Some("file".into()), vec![shadow.clone()])
        );
        // Relative to the caller's working directory (its home).
        assert_eq!(
            mark(&mut f, 1, b".ssh"),
            ("inode".into(), Some("directory".into()), vec![key.clone()])
        );
        assert_eq!(
            mark(&mut f, 1, b".ssh/id_rsa.pub"),
            ("inode".into(), None, vec![])
        );
        // A mount mark covers the device's watched files.
        let (how, covers, watched) = mark(&mut f, 0x11, b"/home");
        assert_eq!((how.as_str(), covers.as_deref()), ("mount", Some("mount")));
        assert_eq!(watched, [shadow, key]);
        // Nothing there.
        assert_eq!(
            mark(&mut f, 0x101, b"/nonexistent"),
            ("filesystem".into(), None, vec![])
        );
    }
}
