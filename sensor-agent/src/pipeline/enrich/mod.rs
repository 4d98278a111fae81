//! Enrich stage: decoded kernel events → `sensor_log::Event`, with the watched file named,
//! the process and identity attributed, and syscall arguments spelled out.
//!
//! Lifecycle events (exec/fork/exit) only update the process table. Kernel matches that
//! user space must confirm (a `DirAny` name against its glob, a denied path against the
//! watched set, a procfs target against the actor) are dropped here when they do not hold,
//! and counted in [`EnrichStats`].

mod clock;
mod file;
mod names;
mod path_change;
mod route;
mod syscall;

use std::path::{Path, PathBuf};
use std::sync::{atomic::Ordering, Arc};

use sensor_common::{EventHeader, EventKind, ARGS_LEN};
use sensor_log::{Detail, Event, Kind, Target};
use tokio::sync::{mpsc, watch};

use crate::attribution::Attribution;
use crate::config::Config;
use crate::pipeline::{
    decode::{c_bytes, Decoded},
    fault, Batch, Counters,
};
use crate::watch::WatchSet;
use clock::Clock;

/// What the stage did with the events it was given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnrichStats {
    /// exec/fork/exit events applied to the process table.
    pub lifecycle: u64,
    /// Events turned into output.
    pub emitted: u64,
    /// Opens in a glob-watched directory whose name matched no rule.
    pub unmatched_names: u64,
    /// Opens the kernel matched by ancestry (a directory newer than the set) whose path
    /// matched no rule.
    pub tree_unmatched: u64,
    /// Denied opens whose path resolved to no watched file.
    pub denied_unwatched: u64,
    /// procfs opens of the actor's own process through another thread's pid.
    pub self_access: u64,
    /// Records with a match or kind byte this stage does not know (a kernel/agent mismatch).
    pub malformed: u64,
    /// Inode matches on a stale entry (a replaced file's reused inode) naming no watched file.
    pub stale_inode: u64,
    /// Renames, unlinks and links that passed the kernel's name prefilter but named no
    /// watched file or directory.
    pub path_unwatched: u64,
}

pub struct Enricher {
    watch: watch::Receiver<Arc<WatchSet>>,
    set: Arc<WatchSet>,
    attribution: Attribution,
    proc_root: PathBuf,
    agent_pid: u32,
    clock: Clock,
    kinds: LogKinds,
    stats: EnrichStats,
}

/// The log's kind of each kernel kind byte, found by name once: a kernel kind is logged as
/// the log kind of the same name, and one with none (exec, fork, exit) is not logged.
struct LogKinds([Option<Kind>; EventKind::COUNT as usize]);

impl LogKinds {
    fn new() -> LogKinds {
        let mut table = [None; EventKind::COUNT as usize];
        for &kernel in EventKind::ALL {
            table[kernel as usize] = Kind::ALL
                .iter()
                .copied()
                .find(|k| k.as_str() == kernel.name());
        }
        LogKinds(table)
    }

    fn log_kind(&self, byte: u8) -> Option<Kind> {
        self.0.get(usize::from(byte)).copied().flatten()
    }
}

impl Enricher {
    /// Scans `/proc` for the running processes; `watch` delivers watched-set refreshes.
    pub fn new(config: &Config, watch: watch::Receiver<Arc<WatchSet>>) -> Enricher {
        Enricher::with_proc_root(config, watch, Path::new("/proc"))
    }

    /// As [`Enricher::new`] with procfs mounted at `proc_root` (tests; an agent in a
    /// container with the host's procfs mounted elsewhere).
    pub fn with_proc_root(
        config: &Config,
        watch: watch::Receiver<Arc<WatchSet>>,
        proc_root: &Path,
    ) -> Enricher {
        let set = watch.borrow().clone();
        Enricher {
            watch,
            set,
            attribution: Attribution::new(proc_root, "/etc/passwd", config.owners.clone()),
            proc_root: proc_root.to_path_buf(),
            agent_pid: std::process::id(),
            clock: Clock::new(),
            kinds: LogKinds::new(),
            stats: EnrichStats::default(),
        }
    }

    pub fn stats(&self) -> &EnrichStats {
        &self.stats
    }

    /// The stage's thread: enriches until `input` closes (the read stage ended) or `output`
    /// does (the chain stage ended). Blocking (it reads `/proc`), so it runs on its own thread.
    pub fn run(
        mut self,
        mut input: mpsc::Receiver<Batch<Decoded>>,
        output: mpsc::Sender<Batch<Event>>,
        counters: Arc<Counters>,
    ) {
        while let Some(batch) = input.blocking_recv() {
            if fault::fails("enrich") {
                panic!("fault injected into the enrich stage (test build)");
            }
            let events: Vec<_> = batch.iter().filter_map(|d| self.enrich(d)).collect();
            counters
                .events_out
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            if !events.is_empty() && output.blocking_send(events).is_err() {
                return;
            }
        }
    }

    /// One kernel event: `None` for lifecycle events and for matches that do not hold.
    pub fn enrich(&mut self, event: &Decoded) -> Option<Event> {
        if self.watch.has_changed().unwrap_or(false) {
            self.set = self.watch.borrow_and_update().clone();
        }
        let out = match event {
            Decoded::Exec(e) => {
                let argv = &e.args[..(e.args_len as usize).min(ARGS_LEN)];
                self.attribution.procs.on_exec(
                    e.header.tgid,
                    e.header.ppid,
                    c_bytes(&e.filename),
                    argv,
                );
                self.stats.lifecycle += 1;
                return None;
            }
            Decoded::Fork(e) => {
                self.attribution.procs.on_fork(e.header.tgid, e.child_tgid);
                self.stats.lifecycle += 1;
                return None;
            }
            Decoded::Exit(e) => {
                self.attribution
                    .procs
                    .on_exit(e.header.tgid, e.header.boot_ns);
                self.stats.lifecycle += 1;
                return None;
            }
            Decoded::File(e) => self.file_event(e),
            Decoded::Repeat(r) => self.file_event(&r.file).map(|mut event| {
                event.detail = Some(Detail::Repeated {
                    count: r.count,
                    first: self.clock.rfc3339(r.first_ns),
                    last: self.clock.rfc3339(r.last_ns),
                });
                event
            }),
            Decoded::Syscall(e) => self.syscall_event(e),
            Decoded::Route(e) => self.route_event(e),
            Decoded::PathChange(e) => self.path_change_event(e),
            Decoded::IoUring(e) => Some(self.io_uring_event(e)),
        };
        if out.is_some() {
            self.stats.emitted += 1;
        }
        out
    }

    /// The fields every kind shares.
    fn base(&mut self, kind: Kind, h: &EventHeader, ret: Option<i64>) -> Event {
        let errno = ret.filter(|r| *r < 0).map(|r| {
            r.checked_neg()
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or(i32::MAX)
        });
        Event {
            kind,
            time: self.clock.rfc3339(h.boot_ns),
            ok: errno.is_none(),
            errno,
            process: Some(self.attribution.process(h)),
            identity: Some(self.attribution.identity(h)),
            file: None,
            target: None,
            syscall: None,
            loss: None,
            detail: None,
        }
    }

    /// The kernel kind of a record and the log kind it is logged as; `None`, counted as
    /// malformed, when either is unknown (a kernel/agent mismatch).
    fn kinds_of(&mut self, byte: u8) -> Option<(EventKind, Kind)> {
        match (EventKind::try_from(byte), self.kinds.log_kind(byte)) {
            (Ok(kind), Some(log)) => Some((kind, log)),
            _ => {
                self.stats.malformed += 1;
                None
            }
        }
    }

    fn target(&mut self, tgid: u32) -> Target {
        let exe = &self.attribution.procs.get(tgid).exe;
        Target {
            pid: tgid,
            exe: (!exe.is_empty()).then(|| exe.to_string()),
        }
    }

    /// A pid the caller passed, in the caller's pid namespace: mapped to the host's (ours)
    /// when the caller lives in another namespace. A pid that names no process of the
    /// caller's namespace is reported as passed, without an executable.
    fn caller_target(&mut self, caller: &EventHeader, pid: u32) -> Option<Target> {
        if pid == 0 {
            return None;
        }
        let procs = &mut self.attribution.procs;
        // The caller's namespace as the kernel saw it at the call (the caller may be gone by
        // now); from procfs only when the kernel could not read it.
        let ns = match caller.pid_ns {
            0 => procs.pid_ns(caller.tgid),
            ns => Some(u64::from(ns)),
        };
        let host = match ns {
            Some(ns) if Some(ns) == procs.pid_ns(self.agent_pid) => Some(pid),
            Some(ns) => procs.host_tgid_in_ns(ns, pid),
            None => None,
        };
        match host {
            Some(tid) => {
                let tgid = self.attribution.procs.tgid_of(tid);
                Some(self.target(tgid))
            }
            None => Some(Target { pid, exe: None }),
        }
    }
}

/// The fake procfs and event builders the stage's tests share.
#[cfg(test)]
mod fixture {
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use sensor_common::{
        EventHeader, EventKind, FileEvent, MatchKind, OpenSyscall, COMM_LEN, NAME_LEN,
        REQUESTED_LEN,
    };
    use tokio::sync::watch;

    use super::Enricher;
    use crate::attribution::OwnerRule;
    use crate::config::Config;
    use crate::watch::{kernel_dev, Rule, WatchSet};

    pub const ACTOR: u32 = 100;
    pub const VICTIM: u32 = 200;

    /// A fake procfs (`base/proc`) and root (`base/root`) with /etc/shadow and an ~/.ssh.
    pub struct Fixture {
        _tmp: tempfile::TempDir,
        pub root: PathBuf,
        pub enricher: Enricher,
    }

    fn fake_proc(proc: &Path, ns: &Path, pid: u32, ppid: u32, exe: &str, cgroup: &str) {
        let dir = proc.join(pid.to_string());
        fs::create_dir_all(dir.join("ns")).unwrap();
        fs::write(dir.join("stat"), format!("{pid} (x) S {ppid} 0 0")).unwrap();
        fs::write(dir.join("cmdline"), format!("{exe}\0-c\0")).unwrap();
        fs::write(dir.join("cgroup"), cgroup).unwrap();
        fs::write(dir.join("status"), format!("Tgid:\t{pid}\n")).unwrap();
        symlink(exe, dir.join("exe")).unwrap();
        fs::hard_link(ns, dir.join("ns/pid")).unwrap();
    }

    pub fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(tmp.path()).unwrap();
        let root = base.join("root");
        for f in ["etc/shadow", "home/a/.ssh/id_rsa", "home/a/.ssh/id_rsa.pub"] {
            fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            fs::write(root.join(f), "x").unwrap();
        }
        let proc = base.join("proc");
        let ns = base.join("pid-ns");
        fs::write(&ns, "").unwrap();
        fake_proc(&proc, &ns, 1, 0, "/sbin/init", "0::/init.scope\n");
        fake_proc(
            &proc,
            &ns,
            ACTOR,
            1,
            "/usr/sbin/nginx",
            "0::/system.slice/nginx.service\n",
        );
        fake_proc(
            &proc,
            &ns,
            VICTIM,
            1,
            "/usr/bin/victim",
            "0::/system.slice/victim.service\n",
        );
        fake_proc(
            &proc,
            &ns,
            std::process::id(),
            1,
            "/usr/bin/sensor-agent",
            "0::/\n",
        );
        // Threads: 201 of the victim, 101 of the actor.
        for (tid, tgid) in [(201, VICTIM), (101, ACTOR)] {
            fs::create_dir_all(proc.join(tid.to_string())).unwrap();
            fs::write(
                proc.join(format!("{tid}/status")),
                format!("Tgid:\t{tgid}\n"),
            )
            .unwrap();
        }
        fs::create_dir_all(proc.join(format!("{ACTOR}/fd"))).unwrap();
        symlink(&root, proc.join(format!("{ACTOR}/root"))).unwrap();
        symlink(root.join("home/a"), proc.join(format!("{ACTOR}/cwd"))).unwrap();

        let rule = |p: &str, kind: &str, exclude: Vec<String>| {
            Rule::new(root.join(p).to_str().unwrap(), kind, None, exclude).unwrap()
        };
        let mut config = Config::load(None).unwrap();
        config.watches = vec![
            rule("etc/shadow", "password-db", vec![]),
            rule("home/*/.ssh/id_*", "ssh-key", vec!["*.pub".into()]),
        ];
        config.owners =
            vec![OwnerRule::new("web", Some("nginx.service"), None, None, None).unwrap()];
        let (_tx, rx) = watch::channel(Arc::new(WatchSet::resolve(&config.watches)));
        let enricher = Enricher::with_proc_root(&config, rx, &proc);
        Fixture {
            _tmp: tmp,
            root,
            enricher,
        }
    }

    pub fn header(kind: EventKind) -> EventHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..5].copy_from_slice(b"nginx");
        EventHeader {
            kind: kind as u8,
            _pad0: [0; 3],
            cpu: 0,
            boot_ns: 5_000_000_000,
            tgid: ACTOR,
            tid: ACTOR,
            ppid: 1,
            uid: 0,
            gid: 0,
            euid: 0,
            auid: u32::MAX,
            pid_ns: 0,
            cgroup_id: 0,
            comm,
        }
    }

    pub fn c_buf<const N: usize>(s: &[u8]) -> [u8; N] {
        let mut buf = [0u8; N];
        buf[..s.len()].copy_from_slice(s);
        buf
    }

    pub fn open_event(matched: MatchKind, path: &Path, requested: &[u8], ret: i64) -> FileEvent {
        let (dev, ino) = fs::metadata(path)
            .map(|m| (kernel_dev(m.dev()), m.ino()))
            .unwrap_or((0, 0));
        let name = path.file_name().unwrap().as_encoded_bytes();
        FileEvent {
            header: header(EventKind::FileOpen),
            ret,
            flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
            ino: if ret >= 0 { ino } else { 0 },
            dev: if ret >= 0 { dev } else { 0 },
            rule: match matched {
                MatchKind::DirAny => 2,
                MatchKind::Denied => 0,
                _ => 1,
            },
            target_tgid: 0,
            dfd: sensor_common::syscall::AT_FDCWD,
            syscall: OpenSyscall::Openat as u8,
            matched: matched as u8,
            requested_truncated: 0,
            compat: 0,
            overlay_dev: 0,
            name: if ret >= 0 {
                c_buf::<NAME_LEN>(name)
            } else {
                [0; NAME_LEN]
            },
            requested: c_buf::<REQUESTED_LEN>(requested),
        }
    }
}

#[cfg(test)]
mod tests {
    use sensor_common::{EventKind, ExecEvent, MatchKind, ARGS_LEN, REQUESTED_LEN};

    use super::fixture::{c_buf, fixture, header, open_event};
    use super::*;

    /// Every kernel kind but the lifecycle ones is logged under its own name; a renamed
    /// variant on either side fails here.
    #[test]
    fn kernel_kinds_are_logged_under_their_own_name() {
        let kinds = LogKinds::new();
        for &kernel in EventKind::ALL {
            let logged = kinds.log_kind(kernel as u8).map(Kind::as_str);
            match kernel {
                EventKind::Exec | EventKind::Fork | EventKind::Exit => assert_eq!(logged, None),
                _ => assert_eq!(logged, Some(kernel.name()), "{kernel:?}"),
            }
        }
        assert_eq!(kinds.log_kind(0), None);
        assert_eq!(kinds.log_kind(u8::MAX), None);
    }

    #[test]
    fn exec_updates_the_process_table() {
        let mut f = fixture();
        let args = b"cat\0/etc/shadow\0";
        let exec = ExecEvent {
            header: header(EventKind::Exec),
            args_len: args.len() as u32,
            _pad: 0,
            filename: c_buf::<REQUESTED_LEN>(b"/usr/bin/cat"),
            args: c_buf::<ARGS_LEN>(args),
        };
        assert!(f.enricher.enrich(&Decoded::Exec(exec)).is_none());
        let e = open_event(
            MatchKind::Inode,
            &f.root.join("etc/shadow"),
            b"/etc/shadow",
            3,
        );
        let p = f
            .enricher
            .enrich(&Decoded::File(e))
            .unwrap()
            .process
            .unwrap();
        assert_eq!(
            (p.exe.as_str(), p.cmdline.as_str()),
            ("/usr/bin/cat", "cat /etc/shadow")
        );
        assert_eq!(f.enricher.stats().lifecycle, 1);
    }
}
