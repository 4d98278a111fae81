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
    BPF_RAW_TRACEPOINT_OPEN, PERF_SAMPLE_USER_MEMORY,
};
use super::Enricher;
use crate::pipeline::decode::{c_bytes, c_string};
use crate::watch::{resolve_object, WatchSet};

/// `PERF_FLAG_PID_CGROUP`: the pid argument is a cgroup directory's descriptor.
const PERF_FLAG_PID_CGROUP: u64 = 1 << 2;

/// Most watched files a `fanotify_mark` event lists.
const MAX_COVERED: usize = 16;

impl Enricher {
    pub(super) fn route_event(&mut self, e: &RouteEvent) -> Option<Event> {
        let (Ok(kind), Some(out_kind)) = (
            EventKind::try_from(e.header.kind),
            self.kinds.log_kind(e.header.kind),
        ) else {
            self.stats.malformed += 1;
            return None;
        };
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
                    event_type: perf_type(v[0] as u32),
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
                let cmd = a[0] & 0xffff_ffff;
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
    if how.is_none() && mark == "inode" && is_dir && set.dirs().contains_key(key) {
        how = Some("directory");
    }
    (how, files)
}
