//! The process table: exe, command line, parent and cached cgroup facts per thread group,
//! filled by a `/proc` scan at start and kept current by exec/fork/exit events so that
//! enrichment does not read `/proc` per event.

use std::collections::{HashMap, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sensor_log::Identity;

use super::cgroup::{parse_cgroup, CgroupInfo, CgroupPaths};

/// How long an exited process stays, so events still queued behind its exit attribute.
pub const EXIT_GRACE_NS: u64 = 30_000_000_000;
/// How often processes whose exit was missed (lost events) are looked for, in boot-clock ns.
const SWEEP_INTERVAL_NS: u64 = 60_000_000_000;
/// Ancestry depth bound (also ends parent loops).
pub const MAX_ANCESTORS: usize = 32;

#[derive(Clone, Debug, Default)]
pub struct ProcEntry {
    /// Executable path; empty when unknown (kernel threads, vanished processes).
    pub exe: Arc<str>,
    /// Executable basename, or the kernel `comm` when there is no executable.
    pub name: Arc<str>,
    /// Arguments joined by spaces.
    pub cmdline: Arc<str>,
    pub ppid: u32,
    exited_ns: Option<u64>,
    /// Cgroup facts and the cgroup id they were read for.
    cgroup: Option<(u64, Arc<CgroupInfo>)>,
    /// Identity built for this (euid, auid, cgroup id): rebuilt when any changes.
    pub(super) identity: Option<(u32, u32, u64, Identity)>,
    /// Inode of the process's pid namespace, read on first need.
    pid_ns: Option<u64>,
}

pub struct ProcessTable {
    proc_root: PathBuf,
    cgroup_paths: CgroupPaths,
    entries: HashMap<u32, ProcEntry>,
    exited: VecDeque<(u64, u32)>,
    next_sweep_ns: u64,
}

impl ProcessTable {
    /// An empty table reading `proc_root` (normally `/proc`) for processes it has not seen.
    pub fn new(proc_root: impl Into<PathBuf>) -> ProcessTable {
        ProcessTable {
            proc_root: proc_root.into(),
            cgroup_paths: CgroupPaths::new(),
            entries: HashMap::new(),
            exited: VecDeque::new(),
            next_sweep_ns: 0,
        }
    }

    /// Adds every process currently in `proc_root`.
    pub fn scan(&mut self) {
        let Ok(dir) = std::fs::read_dir(&self.proc_root) else {
            return;
        };
        for entry in dir.flatten() {
            let pid = std::str::from_utf8(entry.file_name().as_bytes())
                .ok()
                .and_then(|s| s.parse().ok());
            if let Some(pid) = pid {
                if let Some(e) = read_proc(&self.proc_root, pid) {
                    self.entries.insert(pid, e);
                }
            }
        }
    }

    /// A successful exec: new image, same process. The cgroup is re-read on next use, since
    /// launchers often move themselves to a new cgroup and then exec.
    pub fn on_exec(&mut self, tgid: u32, ppid: u32, filename: &[u8], argv: &[u8]) {
        let exe: Arc<str> = if filename.first() == Some(&b'/') {
            String::from_utf8_lossy(filename).into()
        } else {
            // A relative exec path names nothing useful once the cwd has moved on.
            std::fs::read_link(self.proc_root.join(format!("{tgid}/exe")))
                .map(|p| p.to_string_lossy().into())
                .unwrap_or_else(|_| String::from_utf8_lossy(filename).into())
        };
        let entry = self.entries.entry(tgid).or_default();
        entry.name = basename(&exe).into();
        entry.exe = exe;
        entry.cmdline = join_args(argv).into();
        entry.ppid = ppid;
        entry.exited_ns = None;
        entry.cgroup = None;
        entry.identity = None;
    }

    /// A new process: it starts as a copy of its parent (same image, same cgroup).
    pub fn on_fork(&mut self, parent: u32, child: u32) {
        let mut entry = self.get(parent).clone();
        entry.ppid = parent;
        entry.exited_ns = None;
        self.entries.insert(child, entry);
    }

    /// A process exited at `now_ns` (boot clock): kept for the grace period, then dropped.
    pub fn on_exit(&mut self, tgid: u32, now_ns: u64) {
        if let Some(entry) = self.entries.get_mut(&tgid) {
            entry.exited_ns = Some(now_ns);
            self.exited.push_back((now_ns, tgid));
        }
        self.expire(now_ns);
    }

    fn expire(&mut self, now_ns: u64) {
        while let Some(&(at, tgid)) = self.exited.front() {
            if at.saturating_add(EXIT_GRACE_NS) > now_ns {
                break;
            }
            self.exited.pop_front();
            // A reused pid has a new entry (no exit time, or a later one): keep it.
            if self
                .entries
                .get(&tgid)
                .is_some_and(|e| e.exited_ns == Some(at))
            {
                self.entries.remove(&tgid);
            }
        }
        if now_ns >= self.next_sweep_ns {
            self.next_sweep_ns = now_ns.saturating_add(SWEEP_INTERVAL_NS);
            let gone: Vec<u32> = self
                .entries
                .iter()
                .filter(|(pid, e)| {
                    e.exited_ns.is_none() && !self.proc_root.join(pid.to_string()).exists()
                })
                .map(|(pid, _)| *pid)
                .collect();
            for pid in gone {
                if let Some(e) = self.entries.get_mut(&pid) {
                    e.exited_ns = Some(now_ns);
                    self.exited.push_back((now_ns, pid));
                }
            }
        }
    }

    /// The entry for `tgid`, read from `/proc` once if the table has not seen it (an entry
    /// with empty fields when the process is already gone, so it is not read again).
    pub fn get(&mut self, tgid: u32) -> &mut ProcEntry {
        let proc_root = &self.proc_root;
        self.entries
            .entry(tgid)
            .or_insert_with(|| read_proc(proc_root, tgid).unwrap_or_default())
    }

    /// The cgroup facts of `tgid`, which the kernel saw in cgroup `cgroup_id`: read once per
    /// process image and cgroup, from `/proc/<tgid>/cgroup` while the process lives, else
    /// from the path of `cgroup_id`.
    pub fn cgroup(&mut self, tgid: u32, cgroup_id: u64) -> Arc<CgroupInfo> {
        if let Some((id, info)) = &self.get(tgid).cgroup {
            if *id == cgroup_id {
                return info.clone();
            }
        }
        let info = match std::fs::read_to_string(self.proc_root.join(format!("{tgid}/cgroup"))) {
            Ok(text) => parse_cgroup(&text),
            Err(_) => self
                .cgroup_paths
                .path(cgroup_id)
                .map(|path| parse_cgroup(&format!("0::{path}\n")))
                .unwrap_or_default(),
        };
        let info = Arc::new(info);
        self.get(tgid).cgroup = Some((cgroup_id, info.clone()));
        info
    }

    /// Executable names of the ancestors of a process whose parent is `ppid`, parent first,
    /// up to init; bounded by [`MAX_ANCESTORS`] and stopped at a repeated pid.
    pub fn ancestors(&mut self, ppid: u32) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = [0u32; MAX_ANCESTORS];
        let mut pid = ppid;
        while pid != 0 && out.len() < MAX_ANCESTORS && !seen[..out.len()].contains(&pid) {
            seen[out.len()] = pid;
            let entry = self.get(pid);
            out.push(entry.name.to_string());
            pid = entry.ppid;
        }
        out
    }

    /// The thread-group id of thread `tid`, by the table first, then `/proc/<tid>/status`;
    /// `tid` itself when neither knows it.
    pub fn tgid_of(&mut self, tid: u32) -> u32 {
        if self.entries.contains_key(&tid) {
            return tid;
        }
        let status = std::fs::read_to_string(self.proc_root.join(format!("{tid}/status")))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(tid)
    }

    /// The host tgid of the process called `pid` in pid namespace `ns` (the inode number of
    /// its `ns/pid`): the process of that namespace whose innermost pid (the last of `NSpid`
    /// in its status) is `pid`, found by one scan of procfs. `None` when no process of the
    /// namespace has it (it exited, or it lives in a namespace nested inside `ns`, which is
    /// not searched).
    pub fn host_tgid_in_ns(&mut self, ns: u64, pid: u32) -> Option<u32> {
        let entries = std::fs::read_dir(&self.proc_root).ok()?;
        for entry in entries.flatten() {
            let Some(host) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
                continue;
            };
            let innermost = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last())
                .and_then(|v| v.parse::<u32>().ok());
            if innermost == Some(pid) && self.pid_ns(host) == Some(ns) {
                return Some(host);
            }
        }
        None
    }

    /// The inode number of `tgid`'s pid namespace, read once per process.
    pub fn pid_ns(&mut self, tgid: u32) -> Option<u64> {
        let path = self.proc_root.join(format!("{tgid}/ns/pid"));
        let entry = self.get(tgid);
        if entry.pid_ns.is_none() {
            use std::os::unix::fs::MetadataExt;
            entry.pid_ns = std::fs::metadata(path).ok().map(|m| m.ino());
        }
        entry.pid_ns
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// NUL-separated argv → space-joined, without the trailing NUL.
fn join_args(argv: &[u8]) -> String {
    let trimmed = argv.strip_suffix(&[0]).unwrap_or(argv);
    String::from_utf8_lossy(trimmed).replace('\0', " ")
}

/// Reads one process from procfs: `None` when it does not exist.
fn read_proc(proc_root: &Path, pid: u32) -> Option<ProcEntry> {
    let dir = proc_root.join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so split at the last `)`.
    let close = stat.rfind(')')?;
    let comm = stat.get(stat.find('(')? + 1..close)?;
    let ppid = stat
        .get(close + 1..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let exe: Arc<str> = std::fs::read_link(dir.join("exe"))
        .map(|p| p.to_string_lossy().into())
        .unwrap_or_default();
    let cmdline = std::fs::read(dir.join("cmdline"))
        .map(|a| join_args(&a))
        .unwrap_or_default();
    let name = if exe.is_empty() { comm } else { basename(&exe) };
    Some(ProcEntry {
        name: name.into(),
        exe,
        cmdline: cmdline.into(),
        ppid,
        ..ProcEntry::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake procfs entry: `stat`, `cmdline` and an `exe` link.
    fn fake(root: &Path, pid: u32, ppid: u32, exe: &str) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stat"), format!("{pid} (a) b) S {ppid} 1 1 0")).unwrap();
        std::fs::write(dir.join("cmdline"), format!("{exe}\0--flag\0")).unwrap();
        std::os::unix::fs::symlink(exe, dir.join("exe")).unwrap();
    }

    #[test]
    fn scan_reads_stat_exe_cmdline() {
        let root = tempfile::tempdir().unwrap();
        fake(root.path(), 1, 0, "/usr/lib/systemd/systemd");
        fake(root.path(), 50, 1, "/usr/sbin/sshd");
        let mut table = ProcessTable::new(root.path());
        table.scan();
        let e = table.get(50);
        assert_eq!(
            (&*e.exe, &*e.name, &*e.cmdline, e.ppid),
            ("/usr/sbin/sshd", "sshd", "/usr/sbin/sshd --flag", 1)
        );
    }

    #[test]
    fn ancestors_walk_to_init_and_stop_at_loops() {
        let root = tempfile::tempdir().unwrap();
        fake(root.path(), 1, 0, "/sbin/init");
        fake(root.path(), 10, 1, "/usr/sbin/sshd");
        fake(root.path(), 20, 10, "/bin/bash");
        let mut table = ProcessTable::new(root.path());
        table.scan();
        assert_eq!(table.ancestors(20), ["bash", "sshd", "init"]);
        // A parent loop (pid reuse seen out of order) ends instead of spinning.
        fake(root.path(), 30, 31, "/bin/a");
        fake(root.path(), 31, 30, "/bin/b");
        assert_eq!(table.ancestors(30), ["a", "b"]);
        // Unknown pids are read once and yield empty names when gone.
        assert_eq!(table.ancestors(99), [""]);
    }

    #[test]
    fn fork_exec_exit_lifecycle() {
        let root = tempfile::tempdir().unwrap();
        fake(root.path(), 1, 0, "/sbin/init");
        fake(root.path(), 10, 1, "/bin/bash");
        let mut table = ProcessTable::new(root.path());
        table.scan();
        table.on_fork(10, 11);
        assert_eq!(&*table.get(11).exe, "/bin/bash");
        assert_eq!(table.get(11).ppid, 10);
        table.on_exec(11, 10, b"/usr/bin/cat", b"cat\0/etc/shadow\0");
        let e = table.get(11);
        assert_eq!((&*e.exe, &*e.cmdline), ("/usr/bin/cat", "cat /etc/shadow"));
        table.on_exit(11, 1_000);
        assert_eq!(
            &*table.get(11).exe,
            "/usr/bin/cat",
            "kept during the grace period"
        );
        table.on_exit(10, 1_000 + EXIT_GRACE_NS);
        assert!(!table.entries.contains_key(&11));
        assert!(table.entries.contains_key(&10));
    }

    #[test]
    fn tgid_of_reads_status() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("501")).unwrap();
        std::fs::write(
            root.path().join("501/status"),
            "Name:\tx\nTgid:\t500\nPid:\t501\n",
        )
        .unwrap();
        let mut table = ProcessTable::new(root.path());
        assert_eq!(table.tgid_of(501), 500);
        assert_eq!(table.tgid_of(777), 777);
    }

    /// A pid passed inside a container names the process of the caller's namespace with that
    /// innermost pid, never a process of another namespace that has it too. Namespaces are
    /// told apart by the inode of `ns/pid`: hard links here stand for one namespace.
    #[test]
    fn a_pid_is_mapped_from_the_callers_namespace() {
        let root = tempfile::tempdir().unwrap();
        let process = |pid: u32, nspid: &str| {
            let dir = root.path().join(pid.to_string());
            std::fs::create_dir_all(dir.join("ns")).unwrap();
            std::fs::write(dir.join("status"), format!("Name:\tx\nNSpid:\t{nspid}\n")).unwrap();
            dir.join("ns/pid")
        };
        let caller_ns = process(100, "100\t1");
        std::fs::write(&caller_ns, "").unwrap();
        std::fs::hard_link(&caller_ns, process(101, "101\t2")).unwrap();
        let other_ns = process(200, "200\t2");
        std::fs::write(&other_ns, "").unwrap();
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let (ns, other) = (inode(&caller_ns), inode(&other_ns));
        let mut table = ProcessTable::new(root.path());
        assert_eq!(table.host_tgid_in_ns(ns, 2), Some(101));
        assert_eq!(table.host_tgid_in_ns(ns, 1), Some(100));
        assert_eq!(table.host_tgid_in_ns(ns, 7), None);
        assert_eq!(table.host_tgid_in_ns(other, 2), Some(200));
    }
}
