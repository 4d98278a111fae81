//! Routes to another process's secrets that go around the file and process-memory syscalls:
//! `perf_event_open` on another process, BPF program loads and attachments, `prlimit` of
//! another process's core limit, fanotify open/access marks, and opens for writing of tracefs
//! probe files and `core_pattern`. The real agent with its real probes, real syscalls, the
//! events read back from its output. Needs root (as CI runs): without it, or without a
//! mountable tracefs, a test says so and stops, and under `CI=true` it fails instead.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::OnceLock,
};

use sensor_tests::{is, is_root, precondition, s, trigger, trigger_bin, trigger_cmd, Fixture};
use serde_json::Value;

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        Fixture::start("sensor-routes-", |dir| {
            std::fs::write(dir.join("secret"), "PRIVATE KEY\n").expect("write secret");
            std::fs::write(dir.join("other"), "nothing\n").expect("write other");
            format!(
                "[[watch]]\npath = \"{}/secret\"\nkind = \"ssh-key\"\n",
                s(dir)
            )
        })
    })
}

/// A sleeping process to act on; killed when dropped.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(Command::new("sleep").arg("60").spawn().expect("sleep"))
    }

    /// A sleeper whose core limit is 0, so that a signal that dumps core leaves no file,
    /// returned once it runs `sleep`.
    fn without_core_dump() -> Sleeper {
        let child = Command::new("sh")
            .args(["-c", "ulimit -c 0 && exec sleep 60"])
            .spawn()
            .expect("sh");
        let exe = format!("/proc/{}/exe", child.id());
        while !std::fs::read_link(&exe).is_ok_and(|p| p.ends_with("sleep")) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Sleeper(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The event of `kind` by `pid` matching `also`.
fn event(kind: &str, pid: u32, also: impl Fn(&Value) -> bool) -> Value {
    let same = is(kind, pid);
    fixture()
        .agent
        .wait_for(&format!("{kind} of pid {pid}"), move |e| same(e) && also(e))
}

#[test]
fn perf_event_open_on_another_process_samples_its_user_stack() {
    if !is_root() {
        return;
    }
    let _ = fixture();
    let victim = Sleeper::start();
    let (pid, ret) = trigger(&["perf-open", &victim.pid().to_string()]);
    assert!(ret >= 0, "perf_event_open failed: {ret}");
    let e = event("perf_event_open", pid, |_| true);
    assert_eq!(e["ok"], true, "{e}");
    assert_eq!(e["process"]["pid"], pid, "{e}");
    assert_eq!(e["target"]["pid"], victim.pid(), "{e}");
    assert!(
        e["target"]["exe"]
            .as_str()
            .unwrap_or("")
            .ends_with("/sleep"),
        "{e}"
    );
    let d = &e["detail"]["perf_event_open"];
    assert_eq!(d["type"], "software", "{e}");
    assert_eq!(d["system_wide"], false, "{e}");
    assert_eq!(d["reads_user_memory"], true, "{e}");
    let samples: Vec<&str> = d["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        samples.contains(&"stack_user") && samples.contains(&"regs_user"),
        "{e}"
    );

    // System-wide (pid -1 on a CPU): no target process, said so.
    let (pid, ret) = trigger(&["perf-open", "-1"]);
    let e = event("perf_event_open", pid, |_| true);
    assert_eq!(e["ok"], ret >= 0, "{e}");
    assert_eq!(e["target"], Value::Null, "{e}");
    assert_eq!(e["detail"]["perf_event_open"]["system_wide"], true, "{e}");
}

#[test]
fn bpf_program_load_and_attach_are_reported() {
    if !is_root() {
        return;
    }
    let _ = fixture();
    let (pid, ret) = trigger(&["bpf-load-attach", "sys_enter"]);
    assert!(ret >= 0, "BPF_RAW_TRACEPOINT_OPEN failed: {ret}");
    let load = event("bpf", pid, |e| e["syscall"]["operation"] == "BPF_PROG_LOAD");
    assert_eq!(load["ok"], true, "{load}");
    assert_eq!(load["process"]["pid"], pid, "{load}");
    let d = &load["detail"]["bpf"];
    assert_eq!(d["prog_type"], "BPF_PROG_TYPE_RAW_TRACEPOINT", "{load}");
    assert_eq!(d["prog_name"], "sensor_test", "{load}");
    let attach = event("bpf", pid, |e| {
        e["syscall"]["operation"] == "BPF_RAW_TRACEPOINT_OPEN"
    });
    assert_eq!(attach["ok"], true, "{attach}");
    assert_eq!(
        attach["detail"]["bpf"]["tracepoint"], "sys_enter",
        "{attach}"
    );
}

/// The attachment that needs no `bpf` command: `ioctl(PERF_EVENT_IOC_SET_BPF)` on a perf
/// event (a profiler's sampling event, a kprobe's or uprobe's).
#[test]
fn a_bpf_program_attached_to_a_perf_event_by_ioctl_is_reported() {
    if !is_root() {
        return;
    }
    let _ = fixture();
    let (pid, ret) = trigger(&["perf-set-bpf"]);
    assert!(ret >= 0, "PERF_EVENT_IOC_SET_BPF failed: {ret}");
    let attach = event("bpf", pid, |e| {
        e["syscall"]["operation"] == "PERF_EVENT_IOC_SET_BPF"
    });
    assert_eq!(attach["ok"], true, "{attach}");
    let d = &attach["detail"]["bpf"];
    assert_eq!(d["command"], "PERF_EVENT_IOC_SET_BPF", "{attach}");
    assert!(d["prog_fd"].as_i64().is_some_and(|fd| fd >= 0), "{attach}");
    assert!(
        d["target_fd"].as_i64().is_some_and(|fd| fd >= 0),
        "{attach}"
    );
}

#[test]
fn prlimit_of_another_process_core_limit_is_reported() {
    if !is_root() {
        return;
    }
    let _ = fixture();
    let victim = Sleeper::start();
    let (pid, ret) = trigger(&["prlimit-core", &victim.pid().to_string(), "4096", "8192"]);
    assert_eq!(ret, 0, "prlimit64 failed");
    let e = event("prlimit64", pid, |_| true);
    assert_eq!(e["ok"], true, "{e}");
    assert_eq!(e["process"]["pid"], pid, "{e}");
    assert_eq!(e["target"]["pid"], victim.pid(), "{e}");
    assert_eq!(e["syscall"]["operation"], "RLIMIT_CORE", "{e}");
    assert_eq!(
        e["detail"]["core_limit"],
        serde_json::json!({"soft": 4096, "hard": 8192}),
        "{e}"
    );
    // A failed attempt is reported with its errno: no such process.
    let (pid, ret) = trigger(&["prlimit-core", "999999999", "0", "0"]);
    assert!(ret < 0);
    let e = event("prlimit64", pid, |_| true);
    assert_eq!(
        (&e["ok"], &e["errno"]),
        (&Value::from(false), &Value::from(-ret)),
        "{e}"
    );
}

/// The last step of having another process dump its memory: a signal whose default action
/// dumps core, by pid or by pidfd. Other signals, and a process aborting itself, are not
/// reported.
#[test]
fn a_core_dumping_signal_to_another_process_is_reported() {
    if !is_root() {
        return;
    }
    let f = fixture();
    for (action, sig, name) in [("kill", "11", "SIGSEGV"), ("pidfd-kill", "6", "SIGABRT")] {
        let victim = Sleeper::without_core_dump();
        let (pid, ret) = trigger(&[action, &victim.pid().to_string(), sig]);
        assert_eq!(ret, 0, "{action} failed");
        let e = event("core_signal", pid, |_| true);
        assert_eq!(e["ok"], true, "{e}");
        assert_eq!(e["target"]["pid"], victim.pid(), "{e}");
        assert!(
            e["target"]["exe"]
                .as_str()
                .unwrap_or("")
                .ends_with("/sleep"),
            "{e}"
        );
        assert_eq!(e["syscall"]["operation"], name, "{e}");
    }
    let victim = Sleeper::start();
    let (pid, ret) = trigger(&["kill", &victim.pid().to_string(), "15"]);
    assert_eq!(ret, 0);
    f.agent.assert_none(
        "core_signal for SIGTERM",
        |e| e["kind"] == "core_signal" && e["process"]["pid"] == pid,
        std::time::Duration::from_secs(2),
    );
}

#[test]
fn fanotify_marks_covering_watched_files_are_reported() {
    if !is_root() {
        return;
    }
    let f = fixture();
    let secret = f.dir.join("secret");
    for (mark, path, dir, covers) in [
        ("inode", s(&secret).to_owned(), None, "file"),
        ("inode", "secret".to_owned(), Some(s(&f.dir)), "file"),
        ("inode", s(&f.dir).to_owned(), None, "directory"),
        ("mount", s(&f.dir).to_owned(), None, "mount"),
    ] {
        let mut args = vec!["fanotify-mark", mark, &path];
        args.extend(dir);
        let (pid, ret) = trigger(&args);
        assert_eq!(ret, 0, "fanotify_mark {args:?} failed");
        let e = event("fanotify_mark", pid, |_| true);
        assert_eq!(e["ok"], true, "{args:?}: {e}");
        assert_eq!(e["process"]["pid"], pid, "{e}");
        let d = &e["detail"]["fanotify_mark"];
        assert_eq!(d["mark"], mark, "{args:?}: {e}");
        assert_eq!(d["requested"], path.as_str(), "{args:?}: {e}");
        assert_eq!(d["covers"], covers, "{args:?}: {e}");
        assert!(
            d["mask"].as_str().unwrap_or("").contains("FAN_OPEN"),
            "{args:?}: {e}"
        );
        // The list holds the first 16 by path: on the mount, the defaults' /etc files may
        // come first.
        let listed = d["watched"]
            .as_array()
            .is_some_and(|w| w.iter().any(|p| p == s(&secret)));
        let count = d["watched_count"].as_u64().unwrap_or(0);
        assert!(
            count >= 1 && (listed || (mark == "mount" && count > 16)),
            "{args:?}: {e}"
        );
    }
    // Through the ia32 entry, whose mask takes two arguments and moves dirfd and the path.
    let (pid, ret) = trigger(&["compat-fanotify-mark", s(&secret)]);
    assert_eq!(ret, 0, "compat fanotify_mark failed");
    let e = event("fanotify_mark", pid, |_| true);
    let d = &e["detail"]["fanotify_mark"];
    assert_eq!(e["syscall"]["compat"], true, "{e}");
    assert_eq!(d["mask"], "FAN_ACCESS|FAN_OPEN", "{e}");
    assert_eq!(d["requested"], s(&secret), "{e}");
    assert_eq!(d["covers"], "file", "{e}");
    // A mark on an unwatched file is still an fd of every open handed to a listener:
    // reported, and said to cover nothing watched.
    let other = f.dir.join("other");
    let (pid, ret) = trigger(&["fanotify-mark", "inode", s(&other)]);
    assert_eq!(ret, 0);
    let e = event("fanotify_mark", pid, |_| true);
    assert_eq!(e["detail"]["fanotify_mark"]["covers"], Value::Null, "{e}");
    assert_eq!(e["detail"]["fanotify_mark"]["path"], s(&other), "{e}");
}

/// A tracefs mount: `/sys/kernel/tracing` when mounted, otherwise a fresh one at a temporary
/// directory (unmounted when dropped).
struct Tracefs {
    dir: PathBuf,
    _mounted: Option<(tempfile::TempDir, Unmount)>,
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn tracefs() -> Option<Tracefs> {
    let system = Path::new("/sys/kernel/tracing");
    if system.join("uprobe_events").exists() {
        return Some(Tracefs {
            dir: system.to_owned(),
            _mounted: None,
        });
    }
    let tmp = tempfile::tempdir().ok()?;
    let dir = tmp.path().to_owned();
    let ok = Command::new("mount")
        .args(["-t", "tracefs", "tracefs", s(&dir)])
        .status()
        .is_ok_and(|st| st.success());
    ok.then(|| Tracefs {
        dir: dir.clone(),
        _mounted: Some((tmp, Unmount(dir))),
    })
}

#[test]
fn opening_tracefs_probe_files_for_writing_is_reported() {
    if !is_root() {
        return;
    }
    let _ = fixture();
    let Some(tracefs) = tracefs() else {
        precondition(false, "a mountable tracefs");
        return;
    };
    let uprobes = tracefs.dir.join("uprobe_events");
    if !precondition(uprobes.exists(), "tracefs with uprobe_events") {
        return;
    }
    // O_WRONLY|O_APPEND, closed without writing: the open for writing is the event.
    let (pid, ret) = trigger(&["open-write", s(&uprobes)]);
    assert!(ret >= 0, "open uprobe_events: {ret}");
    let e = event("tracefs_write", pid, |_| true);
    assert_eq!(e["ok"], true, "{e}");
    assert_eq!(e["process"]["pid"], pid, "{e}");
    assert_eq!(e["file"]["path"], s(&uprobes), "{e}");
    assert_eq!(e["file"]["kind"], "tracefs-probe", "{e}");
    assert_eq!(e["file"]["access"], "write", "{e}");
    // A process without root is denied (tracefs is root's alone), and its attempt reported.
    let (pid, ret) = trigger_unprivileged(&["open-write", s(&uprobes)]);
    assert_eq!(
        ret, -13,
        "an unprivileged open of uprobe_events for writing"
    );
    let e = event("tracefs_write", pid, |_| true);
    assert_eq!(
        (&e["ok"], &e["errno"]),
        (&Value::from(false), &Value::from(13)),
        "{e}"
    );
    assert_eq!(e["file"]["path"], s(&uprobes), "{e}");
    // Reading the same file is not a route: no event.
    let (pid, ret) = trigger(&["open", s(&uprobes)]);
    assert!(ret >= 0);
    fixture().agent.assert_none(
        "tracefs_write for a read-only open",
        is("tracefs_write", pid),
        std::time::Duration::from_secs(2),
    );
}

/// `trigger ARGS` as the unprivileged uid 65534: (its pid, its result).
fn trigger_unprivileged(args: &[&str]) -> (u32, i64) {
    use std::os::unix::process::CommandExt;
    trigger_cmd(Command::new(trigger_bin()).args(args).uid(65534).gid(65534))
}

#[test]
fn opening_core_pattern_for_writing_is_reported() {
    if !is_root() {
        return;
    }
    let _ = fixture();
    let core_pattern = "/proc/sys/kernel/core_pattern";
    // O_WRONLY|O_APPEND, closed without writing: nothing changes on the host.
    let (pid, ret) = trigger(&["open-write", core_pattern]);
    assert!(ret >= 0, "open core_pattern: {ret}");
    let e = event("core_pattern_write", pid, |_| true);
    assert_eq!(e["ok"], true, "{e}");
    assert_eq!(e["process"]["pid"], pid, "{e}");
    assert_eq!(e["file"]["path"], core_pattern, "{e}");
    assert_eq!(e["file"]["kind"], "core-pattern", "{e}");
    assert_eq!(e["file"]["access"], "write", "{e}");
    // A process without root is denied, and its attempt reported.
    let (pid, ret) = trigger_unprivileged(&["open-write", core_pattern]);
    assert_eq!(ret, -13, "an unprivileged open of core_pattern for writing");
    let e = event("core_pattern_write", pid, |_| true);
    assert_eq!(
        (&e["ok"], &e["errno"]),
        (&Value::from(false), &Value::from(13)),
        "{e}"
    );
    assert_eq!(e["file"]["path"], core_pattern, "{e}");
    assert_eq!(e["process"]["uid"], 65534, "{e}");
}
