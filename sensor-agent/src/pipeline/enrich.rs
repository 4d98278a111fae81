//! Enrich stage: decoded kernel events → `sensor_log::Event`, with the watched file named,
//! the process and identity attributed, and syscall arguments spelled out.
//!
//! Lifecycle events (exec/fork/exit) only update the process table. Kernel matches that
//! user space must confirm (a `DirAny` name against its glob, a denied path against the
//! watched set, a procfs target against the actor) are dropped here when they do not hold,
//! and counted in [`EnrichStats`].

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{atomic::Ordering, Arc};
use std::time::{Duration, SystemTime};

use sensor_common::{
    EventHeader, EventKind, FileEvent, InodeKey, IoUringEvent, MatchKind, OpenSyscall,
    SyscallEvent, ARGS_LEN, IORING_OP_OPENAT, IORING_OP_OPENAT2,
};
use sensor_log::{Event, FileAccess, Kind, SyscallDetail, Target};
use tokio::sync::{mpsc, watch};

use crate::attribution::Attribution;
use crate::config::Config;
use crate::pipeline::{
    decode::{c_bytes, c_string, Decoded},
    fault, Batch, Counters,
};
use crate::watch::{kernel_dev, lexical_normalize, resolve_denied, Located, WatchSet};

/// What the stage did with the events it was given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnrichStats {
    /// exec/fork/exit events applied to the process table.
    pub lifecycle: u64,
    /// Events turned into output.
    pub emitted: u64,
    /// Opens in a glob-watched directory whose name matched no rule.
    pub unmatched_names: u64,
    /// Denied opens whose path resolved to no watched file.
    pub denied_unwatched: u64,
    /// procfs opens of the actor's own process through another thread's pid.
    pub self_access: u64,
    /// Records with a match or kind byte this stage does not know (a kernel/agent mismatch).
    pub malformed: u64,
    /// Inode matches on a stale entry (a replaced file's reused inode) naming no watched file.
    pub stale_inode: u64,
}

/// Converts `CLOCK_BOOTTIME` event stamps to wall-clock time. The offset is re-measured
/// every second of event time so an NTP step is followed.
struct Clock {
    offset_ns: i128,
    next_measure_ns: u64,
}

const CLOCK_REMEASURE_NS: u64 = 1_000_000_000;

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only `ts`, a timespec on this stack frame; an unknown
    // clock id returns EINVAL and leaves it zero.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    fn new() -> Clock {
        Clock {
            offset_ns: Self::measure(),
            next_measure_ns: 0,
        }
    }

    fn measure() -> i128 {
        clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME)
    }

    fn rfc3339(&mut self, boot_ns: u64) -> String {
        if boot_ns >= self.next_measure_ns {
            self.offset_ns = Self::measure();
            self.next_measure_ns = boot_ns.saturating_add(CLOCK_REMEASURE_NS);
        }
        let unix_ns = (boot_ns as i128 + self.offset_ns).clamp(0, u64::MAX as i128) as u64;
        let time = SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_ns);
        humantime::format_rfc3339_nanos(time).to_string()
    }
}

pub struct Enricher {
    watch: watch::Receiver<Arc<WatchSet>>,
    set: Arc<WatchSet>,
    attribution: Attribution,
    proc_root: PathBuf,
    agent_pid: u32,
    clock: Clock,
    stats: EnrichStats,
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
            Decoded::Syscall(e) => self.syscall_event(e),
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
        }
    }

    fn file_event(&mut self, e: &FileEvent) -> Option<Event> {
        let Ok(matched) = MatchKind::try_from(e.matched) else {
            self.stats.malformed += 1;
            return None;
        };
        let name = c_bytes(&e.name);
        let mut target = None;
        let (path, kind, owner) = match matched {
            MatchKind::Inode => {
                let key = InodeKey {
                    dev: e.dev,
                    _pad: 0,
                    ino: e.ino,
                };
                match self.set.by_inode(&key) {
                    Some(found) if Self::inode_still_watched(&found, &key, name) => {
                        self.watched(Some(found), e)
                    }
                    // A stale entry: decide by the path the process asked for.
                    _ => match self.resolve_requested(e, Some(&key)) {
                        Some(found) => self.watched(Some(found), e),
                        None => {
                            self.stats.stale_inode += 1;
                            return None;
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
            MatchKind::Denied => match self.resolve_requested(e, None) {
                Some(found) => self.watched(Some(found), e),
                None => {
                    self.stats.denied_unwatched += 1;
                    return None;
                }
            },
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
        let event_kind = if e.header.kind == EventKind::ProcAccess as u8 {
            Kind::ProcAccess
        } else {
            Kind::FileOpen
        };
        let mut requested = c_string(&e.requested);
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
            dev: opened.then(|| format!("{}:{}", e.dev >> 20, e.dev & 0xf_ffff)),
            inode: opened.then_some(e.ino),
            owner,
            compat: e.compat != 0,
        };
        let mut event = self.base(event_kind, &e.header, Some(e.ret));
        event.file = Some(file);
        event.target = target;
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

    /// Whether an inode entry still names the file the kernel saw. When a watched file is
    /// replaced, its old inode number can be reused by an unrelated file before the kernel
    /// map is refreshed; the opened name matching the watched name settles the common case
    /// without a `stat`, and a `stat` of the watched path settles the rest (hard links).
    fn inode_still_watched(found: &Located, key: &InodeKey, name: &[u8]) -> bool {
        let watched_name = found.path.rsplit('/').next().unwrap_or_default();
        watched_name.as_bytes() == name
            || std::fs::metadata(&found.path)
                .is_ok_and(|m| m.ino() == key.ino && kernel_dev(m.dev()) == key.dev)
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

    fn target(&mut self, tgid: u32) -> Target {
        let exe = &self.attribution.procs.get(tgid).exe;
        Target {
            pid: tgid,
            exe: (!exe.is_empty()).then(|| exe.to_string()),
        }
    }

    /// A pid the caller passed: it means the same process to us only in our pid namespace.
    /// In another namespace it is reported as passed, without an executable.
    fn caller_target(&mut self, caller: u32, pid: u32) -> Option<Target> {
        if pid == 0 {
            return None;
        }
        if self.attribution.procs.same_pid_ns(caller, self.agent_pid) == Some(true) {
            let tgid = self.attribution.procs.tgid_of(pid);
            Some(self.target(tgid))
        } else {
            Some(Target { pid, exe: None })
        }
    }

    fn syscall_event(&mut self, e: &SyscallEvent) -> Option<Event> {
        let Ok(kind) = EventKind::try_from(e.header.kind) else {
            self.stats.malformed += 1;
            return None;
        };
        let ok = e.ret >= 0;
        let mut detail = SyscallDetail {
            compat: e.compat != 0,
            ..SyscallDetail::default()
        };
        let caller = e.header.tgid;
        let (out_kind, target) = match kind {
            EventKind::Ptrace => {
                let request = e.args[0];
                detail.operation = Some(ptrace_request(request));
                let target = if request == PTRACE_TRACEME {
                    None
                } else {
                    self.caller_target(caller, e.target_tgid)
                };
                (Kind::Ptrace, target)
            }
            EventKind::ProcessVmReadv | EventKind::ProcessVmWritev => {
                detail.bytes = ok.then_some(e.ret as u64);
                let k = if kind == EventKind::ProcessVmReadv {
                    Kind::ProcessVmReadv
                } else {
                    Kind::ProcessVmWritev
                };
                (k, self.caller_target(caller, e.target_tgid))
            }
            EventKind::PidfdGetfd => {
                detail.target_fd = Some(e.args[1] as u32 as i32);
                // The kernel resolved the pidfd to a host tgid.
                (
                    Kind::PidfdGetfd,
                    (e.target_tgid != 0).then(|| self.target(e.target_tgid)),
                )
            }
            EventKind::Keyctl => {
                let op = e.args[0];
                detail.operation = Some(keyctl_operation(op));
                // key_serial_t is a 32-bit int; special keyrings are negative.
                detail.key_serial =
                    keyctl_arg1_is_key(op).then_some(e.args[1] as u32 as i32 as i64);
                (Kind::Keyctl, None)
            }
            EventKind::AddKey | EventKind::RequestKey => {
                detail.key_type = Some(c_string(&e.key_type));
                detail.key_description = Some(c_string(&e.key_desc));
                detail.key_serial = ok.then_some(e.ret);
                (
                    if kind == EventKind::AddKey {
                        Kind::AddKey
                    } else {
                        Kind::RequestKey
                    },
                    None,
                )
            }
            _ => {
                self.stats.malformed += 1;
                return None;
            }
        };
        let mut event = self.base(out_kind, &e.header, Some(e.ret));
        event.target = target;
        event.syscall = Some(detail);
        Some(event)
    }

    fn io_uring_event(&mut self, e: &IoUringEvent) -> Event {
        let operation = match e.opcode {
            IORING_OP_OPENAT => "IORING_OP_OPENAT".to_owned(),
            IORING_OP_OPENAT2 => "IORING_OP_OPENAT2".to_owned(),
            other => format!("IORING_OP {other}"),
        };
        let mut event = self.base(Kind::IoUring, &e.header, None);
        event.syscall = Some(SyscallDetail {
            operation: Some(operation),
            ..SyscallDetail::default()
        });
        event
    }
}

/// `read`, `write`, `read-write`, or `path` for `O_PATH` (no data access).
pub fn access(flags: u64) -> &'static str {
    if flags & libc::O_PATH as u64 != 0 {
        return "path";
    }
    match flags & libc::O_ACCMODE as u64 {
        0 => "read",
        1 => "write",
        _ => "read-write",
    }
}

/// Open flags, symbolic (`O_RDONLY|O_CLOEXEC`); unknown bits as hex.
pub fn open_flags(flags: u64) -> String {
    const NAMED: [(i32, &str); 15] = [
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_NOCTTY, "O_NOCTTY"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        // O_SYNC includes O_DSYNC's bit, so it is tested first.
        (libc::O_SYNC, "O_SYNC"),
        (libc::O_DSYNC, "O_DSYNC"),
        (libc::O_ASYNC, "O_ASYNC"),
        (libc::O_DIRECT, "O_DIRECT"),
        // The kernel's value: glibc defines O_LARGEFILE as 0 on 64-bit targets.
        (0o100000, "O_LARGEFILE"),
        // O_TMPFILE includes O_DIRECTORY's bit, so it is tested first.
        (libc::O_TMPFILE, "O_TMPFILE"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_NOATIME, "O_NOATIME"),
    ];
    let mut rest = flags;
    let mut out = String::with_capacity(32);
    if flags & libc::O_PATH as u64 != 0 {
        out.push_str("O_PATH");
        rest &= !(libc::O_PATH as u64 | libc::O_ACCMODE as u64);
    } else {
        out.push_str(match flags & libc::O_ACCMODE as u64 {
            0 => "O_RDONLY",
            1 => "O_WRONLY",
            2 => "O_RDWR",
            _ => "O_ACCMODE",
        });
        rest &= !(libc::O_ACCMODE as u64);
    }
    for (bits, name) in NAMED.iter().chain(&[(libc::O_CLOEXEC, "O_CLOEXEC")]) {
        let bits = *bits as u64;
        if rest & bits == bits {
            out.push('|');
            out.push_str(name);
            rest &= !bits;
        }
    }
    if rest != 0 {
        out.push_str(&format!("|{rest:#x}"));
    }
    out
}

const PTRACE_TRACEME: u64 = 0;

/// `PTRACE_*` name of a request (x86-64 numbering).
pub fn ptrace_request(request: u64) -> String {
    let name = match request {
        0 => "PTRACE_TRACEME",
        1 => "PTRACE_PEEKTEXT",
        2 => "PTRACE_PEEKDATA",
        3 => "PTRACE_PEEKUSER",
        4 => "PTRACE_POKETEXT",
        5 => "PTRACE_POKEDATA",
        6 => "PTRACE_POKEUSER",
        7 => "PTRACE_CONT",
        8 => "PTRACE_KILL",
        9 => "PTRACE_SINGLESTEP",
        12 => "PTRACE_GETREGS",
        13 => "PTRACE_SETREGS",
        14 => "PTRACE_GETFPREGS",
        15 => "PTRACE_SETFPREGS",
        16 => "PTRACE_ATTACH",
        17 => "PTRACE_DETACH",
        18 => "PTRACE_GETFPXREGS",
        19 => "PTRACE_SETFPXREGS",
        24 => "PTRACE_SYSCALL",
        25 => "PTRACE_GET_THREAD_AREA",
        26 => "PTRACE_SET_THREAD_AREA",
        30 => "PTRACE_ARCH_PRCTL",
        31 => "PTRACE_SYSEMU",
        32 => "PTRACE_SYSEMU_SINGLESTEP",
        33 => "PTRACE_SINGLEBLOCK",
        0x4200 => "PTRACE_SETOPTIONS",
        0x4201 => "PTRACE_GETEVENTMSG",
        0x4202 => "PTRACE_GETSIGINFO",
        0x4203 => "PTRACE_SETSIGINFO",
        0x4204 => "PTRACE_GETREGSET",
        0x4205 => "PTRACE_SETREGSET",
        0x4206 => "PTRACE_SEIZE",
        0x4207 => "PTRACE_INTERRUPT",
        0x4208 => "PTRACE_LISTEN",
        0x4209 => "PTRACE_PEEKSIGINFO",
        0x420a => "PTRACE_GETSIGMASK",
        0x420b => "PTRACE_SETSIGMASK",
        0x420c => "PTRACE_SECCOMP_GET_FILTER",
        0x420d => "PTRACE_SECCOMP_GET_METADATA",
        0x420e => "PTRACE_GET_SYSCALL_INFO",
        0x420f => "PTRACE_GET_RSEQ_CONFIGURATION",
        0x4210 => "PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG",
        0x4211 => "PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG",
        other => return format!("PTRACE {other:#x}"),
    };
    name.to_owned()
}

const KEYCTL_OPERATIONS: [&str; 33] = [
    "KEYCTL_GET_KEYRING_ID",
    "KEYCTL_JOIN_SESSION_KEYRING",
    "KEYCTL_UPDATE",
    "KEYCTL_REVOKE",
    "KEYCTL_CHOWN",
    "KEYCTL_SETPERM",
    "KEYCTL_DESCRIBE",
    "KEYCTL_CLEAR",
    "KEYCTL_LINK",
    "KEYCTL_UNLINK",
    "KEYCTL_SEARCH",
    "KEYCTL_READ",
    "KEYCTL_INSTANTIATE",
    "KEYCTL_NEGATE",
    "KEYCTL_SET_REQKEY_KEYRING",
    "KEYCTL_SET_TIMEOUT",
    "KEYCTL_ASSUME_AUTHORITY",
    "KEYCTL_GET_SECURITY",
    "KEYCTL_SESSION_TO_PARENT",
    "KEYCTL_REJECT",
    "KEYCTL_INSTANTIATE_IOV",
    "KEYCTL_INVALIDATE",
    "KEYCTL_GET_PERSISTENT",
    "KEYCTL_DH_COMPUTE",
    "KEYCTL_PKEY_QUERY",
    "KEYCTL_PKEY_ENCRYPT",
    "KEYCTL_PKEY_DECRYPT",
    "KEYCTL_PKEY_SIGN",
    "KEYCTL_PKEY_VERIFY",
    "KEYCTL_RESTRICT_KEYRING",
    "KEYCTL_MOVE",
    "KEYCTL_CAPABILITIES",
    "KEYCTL_WATCH_KEY",
];

/// `KEYCTL_*` name of an operation.
pub fn keyctl_operation(op: u64) -> String {
    match KEYCTL_OPERATIONS.get(op as usize) {
        Some(name) => (*name).to_owned(),
        None => format!("KEYCTL {op}"),
    }
}

/// Whether `keyctl`'s second argument is a key serial. It is not for
/// JOIN_SESSION_KEYRING (a name), SET_REQKEY_KEYRING (a mode), SESSION_TO_PARENT (none),
/// GET_PERSISTENT (a uid), DH_COMPUTE (a parameter struct) and CAPABILITIES (a buffer).
fn keyctl_arg1_is_key(op: u64) -> bool {
    (op as usize) < KEYCTL_OPERATIONS.len() && !matches!(op, 1 | 14 | 18 | 22 | 23 | 31)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt};

    use sensor_common::{
        ExecEvent, COMM_LEN, IORING_OP_OPENAT2, KEY_DESC_LEN, KEY_TYPE_LEN, NAME_LEN, REQUESTED_LEN,
    };

    use super::*;
    use crate::attribution::OwnerRule;
    use crate::watch::{kernel_dev, Rule};

    const ACTOR: u32 = 100;
    const VICTIM: u32 = 200;

    /// A fake procfs (`base/proc`) and root (`base/root`) with /etc/shadow and an ~/.ssh.
    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        enricher: Enricher,
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

    fn fixture() -> Fixture {
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

    fn header(kind: EventKind) -> EventHeader {
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
            _pad1: 0,
            cgroup_id: 0,
            comm,
        }
    }

    fn c_buf<const N: usize>(s: &[u8]) -> [u8; N] {
        let mut buf = [0u8; N];
        buf[..s.len()].copy_from_slice(s);
        buf
    }

    fn open_event(matched: MatchKind, path: &Path, requested: &[u8], ret: i64) -> FileEvent {
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
            _pad: [0; 4],
            name: if ret >= 0 {
                c_buf::<NAME_LEN>(name)
            } else {
                [0; NAME_LEN]
            },
            requested: c_buf::<REQUESTED_LEN>(requested),
        }
    }

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

    fn syscall_event(kind: EventKind, args: [u64; 6], ret: i64, target: u32) -> SyscallEvent {
        SyscallEvent {
            header: header(kind),
            ret,
            args,
            target_tgid: target,
            compat: 0,
            _pad: [0; 3],
            key_type: [0; KEY_TYPE_LEN],
            key_desc: [0; KEY_DESC_LEN],
        }
    }

    fn enrich_syscall(f: &mut Fixture, e: SyscallEvent) -> (Option<Target>, SyscallDetail) {
        let event = f.enricher.enrich(&Decoded::Syscall(e)).unwrap();
        (event.target, event.syscall.unwrap())
    }

    #[test]
    fn syscall_details() {
        let mut f = fixture();
        let victim = Some(Target {
            pid: VICTIM,
            exe: Some("/usr/bin/victim".into()),
        });

        let (target, d) = enrich_syscall(
            &mut f,
            syscall_event(EventKind::Ptrace, [16, 201, 0, 0, 0, 0], 0, 201),
        );
        assert_eq!(
            (target, d.operation.as_deref()),
            (victim.clone(), Some("PTRACE_ATTACH"))
        );
        let (_, d) = enrich_syscall(
            &mut f,
            syscall_event(EventKind::Ptrace, [0x4206, 200, 0, 0, 0, 0], 0, 200),
        );
        assert_eq!(d.operation.as_deref(), Some("PTRACE_SEIZE"));

        let mut readv = syscall_event(EventKind::ProcessVmReadv, [200, 0, 1, 0, 1, 0], 4096, 200);
        readv.compat = 1;
        let (target, d) = enrich_syscall(&mut f, readv);
        assert_eq!(
            (target, d.bytes, d.compat),
            (victim.clone(), Some(4096), true)
        );
        let failed = f
            .enricher
            .enrich(&Decoded::Syscall(syscall_event(
                EventKind::ProcessVmWritev,
                [200, 0, 1, 0, 1, 0],
                -1,
                200,
            )))
            .unwrap();
        assert_eq!(
            (failed.kind, failed.ok, failed.errno),
            (Kind::ProcessVmWritev, false, Some(1))
        );
        assert_eq!(failed.syscall.unwrap().bytes, None);

        let (target, d) = enrich_syscall(
            &mut f,
            syscall_event(EventKind::PidfdGetfd, [7, 12, 0, 0, 0, 0], 5, 200),
        );
        assert_eq!((target, d.target_fd), (victim, Some(12)));

        let serial = (-4i32) as u32 as u64; // KEY_SPEC_USER_KEYRING, as a 32-bit int in a register
        let (_, d) = enrich_syscall(
            &mut f,
            syscall_event(EventKind::Keyctl, [11, serial, 0, 0, 0, 0], 32, 0),
        );
        assert_eq!(
            (d.operation.as_deref(), d.key_serial),
            (Some("KEYCTL_READ"), Some(-4))
        );
        let (_, d) = enrich_syscall(
            &mut f,
            syscall_event(EventKind::Keyctl, [1, 0x7fff_0000, 0, 0, 0, 0], 5, 0),
        );
        assert_eq!(
            (d.operation.as_deref(), d.key_serial),
            (Some("KEYCTL_JOIN_SESSION_KEYRING"), None)
        );

        let mut add = syscall_event(EventKind::AddKey, [0; 6], 123_456, 0);
        add.key_type = c_buf::<KEY_TYPE_LEN>(b"user");
        add.key_desc = c_buf::<KEY_DESC_LEN>(b"db-password");
        let event = f.enricher.enrich(&Decoded::Syscall(add)).unwrap();
        assert_eq!(event.kind, Kind::AddKey);
        let d = event.syscall.unwrap();
        assert_eq!(
            (
                d.key_type.as_deref(),
                d.key_description.as_deref(),
                d.key_serial
            ),
            (Some("user"), Some("db-password"), Some(123_456))
        );
        let mut request = syscall_event(EventKind::RequestKey, [0; 6], -126, 0);
        request.key_type = c_buf::<KEY_TYPE_LEN>(b"logon");
        let event = f.enricher.enrich(&Decoded::Syscall(request)).unwrap();
        assert_eq!(
            (event.kind, event.errno, event.syscall.unwrap().key_serial),
            (Kind::RequestKey, Some(126), None)
        );
    }

    #[test]
    fn io_uring_opcode() {
        let mut f = fixture();
        let e = IoUringEvent {
            header: header(EventKind::IoUring),
            opcode: IORING_OP_OPENAT2,
            _pad: [0; 7],
            user_data: 9,
        };
        let event = f.enricher.enrich(&Decoded::IoUring(e)).unwrap();
        assert_eq!((event.kind, event.ok), (Kind::IoUring, true));
        assert_eq!(
            event.syscall.unwrap().operation.as_deref(),
            Some("IORING_OP_OPENAT2")
        );
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

    #[test]
    fn flags_and_access() {
        let f = |flags: i32| open_flags(flags as u64);
        assert_eq!(
            f(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC),
            "O_WRONLY|O_CREAT|O_TRUNC"
        );
        assert_eq!(f(libc::O_RDWR | libc::O_SYNC), "O_RDWR|O_SYNC");
        assert_eq!(f(libc::O_RDWR | libc::O_TMPFILE), "O_RDWR|O_TMPFILE");
        assert_eq!(f(libc::O_PATH | libc::O_CLOEXEC), "O_PATH|O_CLOEXEC");
        assert_eq!(open_flags(0x8000_0000), "O_RDONLY|0x80000000");
        assert_eq!(access((libc::O_PATH | libc::O_RDWR) as u64), "path");
        assert_eq!(access(libc::O_RDWR as u64), "read-write");
        assert_eq!(access(libc::O_WRONLY as u64), "write");
        assert_eq!(ptrace_request(0x5000), "PTRACE 0x5000");
        assert_eq!(keyctl_operation(99), "KEYCTL 99");
    }
}
