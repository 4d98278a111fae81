//! The real agent with its real probes in this kernel, triggered by real processes: every
//! event kind, every evasion route, attribution. Needs root (as CI runs).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use sensor_tests::{
    is, s, trigger, trigger_bin, trigger_cmd, write_secret, Agent, Fixture, TestCgroup,
};
use serde_json::Value;

/// One agent for the whole file. Its directory is world-traversable, so another uid reaches
/// the files and is denied by their mode.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        Fixture::start("sensor-test-", |dir| {
            for name in ["secret", "replaced", "scratch"] {
                write_secret(&dir.join(name));
            }
            std::fs::create_dir(dir.join("keys")).expect("mkdir keys");
            std::fs::create_dir(dir.join("sub")).expect("mkdir sub");
            format!(
                r#"
[[watch]]
path = "{d}/secret"
kind = "ssh-key"
owner = "test-team"

[[watch]]
path = "{d}/replaced"
kind = "cloud"

[[watch]]
path = "{d}/scratch"
kind = "tls-key"

[[watch]]
path = "{d}/created-later"
kind = "k8s-token"

[[watch]]
path = "{d}/keys/id_*"
kind = "ssh-key"
exclude = ["*.pub"]

[[owner]]
unit = "sensor-test-*.service"
owner = "platform-team"
"#,
                d = dir.display()
            )
        })
    })
}

/// The `file_open` event of `pid`.
fn file_event(pid: u32) -> Value {
    fixture()
        .agent
        .wait_for(&format!("file_open of pid {pid}"), is("file_open", pid))
}

#[test]
fn every_open_syscall_reports_the_file_and_access() {
    let f = fixture();
    let secret = f.dir.join("secret");
    for (action, syscall, access) in [
        ("open", "open", "read"),
        ("openat", "openat", "read"),
        ("openat2", "openat2", "read"),
        ("open-by-handle", "open_by_handle_at", "read"),
        ("compat-open", "open", "read"),
        ("open-write", "open", "write"),
        ("open-rdwr", "open", "read-write"),
        ("open-path", "open", "path"),
        ("open-path-by-handle", "open_by_handle_at", "path"),
    ] {
        let (pid, ret) = trigger(&[action, s(&secret)]);
        assert!(ret >= 0, "{action} failed: {ret}");
        let e = file_event(pid);
        assert_eq!(e["ok"], true, "{action}: {e}");
        assert_eq!(e["file"]["path"], s(&secret), "{action}: {e}");
        assert_eq!(e["file"]["kind"], "ssh-key", "{action}: {e}");
        assert_eq!(e["file"]["syscall"], syscall, "{action}: {e}");
        assert_eq!(e["file"]["access"], access, "{action}: {e}");
        assert_eq!(e["process"]["pid"], pid);
        assert!(
            e["process"]["exe"]
                .as_str()
                .unwrap_or("")
                .ends_with("/trigger"),
            "{e}"
        );
        assert_eq!(e["file"]["owner"], "test-team", "{e}");
        assert_eq!(e["file"]["compat"], action == "compat-open", "{e}");
    }
    let scratch = f.dir.join("scratch");
    let (pid, ret) = trigger(&["creat", s(&scratch)]);
    assert!(ret >= 0);
    let e = file_event(pid);
    assert_eq!(e["file"]["syscall"], "creat");
    assert_eq!(e["file"]["access"], "write");
    assert!(
        e["file"]["flags"]
            .as_str()
            .unwrap_or("")
            .contains("O_CREAT"),
        "{e}"
    );
}

#[test]
fn evasion_routes_report_the_real_file() {
    let f = fixture();
    let secret = f.dir.join("secret");
    let other = tempfile::tempdir_in(&f.dir).expect("tempdir");
    let o = other.path();
    std::os::unix::fs::symlink(&secret, o.join("link")).expect("symlink file");
    std::os::unix::fs::symlink(&f.dir, o.join("dirlink")).expect("symlink dir");
    std::fs::hard_link(&secret, o.join("hardlink")).expect("hard link");
    std::fs::write(o.join("bound"), "").expect("bind target");
    let bind = Command::new("mount")
        .args(["--bind", s(&secret), s(&o.join("bound"))])
        .status()
        .expect("mount");
    assert!(bind.success(), "mount --bind");

    let routes: Vec<Vec<String>> = vec![
        vec!["open".into(), format!("{}/sub/../secret", f.dir.display())],
        vec!["open".into(), format!("{}/./secret", f.dir.display())],
        vec!["open".into(), format!("{}//secret", f.dir.display())],
        vec!["open".into(), s(&o.join("link")).into()],
        vec![
            "open".into(),
            format!("{}/secret", o.join("dirlink").display()),
        ],
        vec!["open".into(), s(&o.join("hardlink")).into()],
        vec!["open".into(), s(&o.join("bound")).into()],
        vec![
            "open".into(),
            format!("/proc/self/root{}", secret.display()),
        ],
        vec!["openat-dir".into(), s(&f.dir).into(), "secret".into()],
        vec![
            "openat-dir".into(),
            s(&f.dir.join("sub")).into(),
            "../secret".into(),
        ],
    ];
    for route in &routes {
        let args: Vec<&str> = route.iter().map(String::as_str).collect();
        let (pid, ret) = trigger(&args);
        assert!(ret >= 0, "{route:?} failed: {ret}");
        let e = file_event(pid);
        assert_eq!(e["file"]["path"], s(&secret), "{route:?}: {e}");
        assert_eq!(
            e["file"]["requested"],
            *route.last().expect("path"),
            "{route:?}: {e}"
        );
    }
    // A relative path from the working directory.
    let (pid, ret) = trigger_cmd(
        Command::new(trigger_bin())
            .args(["open", "secret"])
            .current_dir(&f.dir),
    );
    assert!(ret >= 0);
    let e = file_event(pid);
    assert_eq!(e["file"]["path"], s(&secret), "{e}");
    assert_eq!(e["file"]["requested"], "secret");

    let umount = Command::new("umount")
        .arg(o.join("bound"))
        .status()
        .expect("umount");
    assert!(umount.success());
}

/// The kernel copies at most 255 bytes of the path the caller passed (and a NUL); a longer
/// one is reported cut, marked with `…`, while the opened file is still named in full.
#[test]
fn a_long_requested_path_is_cut_and_marked() {
    let f = fixture();
    let secret = f.dir.join("secret");
    let with_slashes = |len: usize| {
        let dir = s(&f.dir);
        format!(
            "{dir}{}secret",
            "/".repeat(len - dir.len() - "secret".len())
        )
    };
    let (short, long) = (with_slashes(254), with_slashes(400));
    let (pid, ret) = trigger(&["open", &short]);
    assert!(ret >= 0, "open failed: {ret}");
    let e = file_event(pid);
    assert_eq!(e["file"]["requested"], short.as_str(), "{e}");
    let (pid, ret) = trigger(&["open", &long]);
    assert!(ret >= 0, "open failed: {ret}");
    let e = file_event(pid);
    assert_eq!(e["file"]["path"], s(&secret), "{e}");
    assert_eq!(e["file"]["requested"], format!("{}…", &long[..255]), "{e}");
}

#[test]
fn denied_attempt_by_another_uid_is_reported() {
    let f = fixture();
    let secret = f.dir.join("secret");
    let (pid, ret) = trigger_cmd(
        Command::new(trigger_bin())
            .args(["open", s(&secret)])
            .uid(65534)
            .gid(65534),
    );
    assert_eq!(ret, -13, "nobody must be denied");
    let e = file_event(pid);
    assert_eq!(e["ok"], false, "{e}");
    assert_eq!(e["errno"], 13, "{e}");
    assert_eq!(e["file"]["path"], s(&secret), "{e}");
    assert_eq!(e["process"]["uid"], 65534);
    assert_eq!(e["process"]["euid"], 65534);
    assert_eq!(e["identity"]["user"], "nobody", "{e}");

    // A denied open of an unwatched file is not reported.
    let plain = f.dir.join("plain");
    write_secret(&plain);
    let (pid, _) = trigger_cmd(
        Command::new(trigger_bin())
            .args(["open", s(&plain)])
            .uid(65534)
            .gid(65534),
    );
    let (marker, _) = trigger(&["open", s(&secret)]);
    file_event(marker);
    f.agent
        .assert_none("", is("file_open", pid), Duration::from_millis(500));
}

/// `open_by_handle_at` refuses a caller without `CAP_DAC_READ_SEARCH` before it looks at the
/// handle: no file was opened and no path passed, so only the handle names what was tried.
#[test]
fn denied_open_by_handle_is_reported() {
    let f = fixture();
    let secret = f.dir.join("secret");
    let as_nobody = |path: &std::path::Path| {
        trigger_cmd(
            Command::new(trigger_bin())
                .args(["open-by-handle", s(path)])
                .uid(65534)
                .gid(65534),
        )
    };
    let (pid, ret) = as_nobody(&secret);
    assert_eq!(ret, -1, "nobody must be refused (EPERM)");
    let e = file_event(pid);
    assert_eq!(e["ok"], false, "{e}");
    assert_eq!(e["errno"], 1, "{e}");
    assert_eq!(e["file"]["path"], s(&secret), "{e}");
    assert_eq!(e["file"]["kind"], "ssh-key", "{e}");
    assert_eq!(e["file"]["syscall"], "open_by_handle_at", "{e}");
    assert!(
        e["file"]["requested"]
            .as_str()
            .unwrap_or("")
            .starts_with("handle:0x"),
        "{e}"
    );
    assert_eq!(e["process"]["uid"], 65534);

    // The handle of an unwatched file, refused the same way, is not reported.
    let plain = f.dir.join("plain-by-handle");
    write_secret(&plain);
    let (pid, ret) = as_nobody(&plain);
    assert_eq!(ret, -1);
    let (marker, _) = trigger(&["open", s(&secret)]);
    file_event(marker);
    f.agent
        .assert_none("", is("file_open", pid), Duration::from_millis(500));
}

#[test]
fn files_created_or_replaced_after_start_stay_watched() {
    let f = fixture();
    // A new key in a watched glob directory; its .pub twin is excluded.
    let key = f.dir.join("keys/id_new");
    let public = f.dir.join("keys/id_new.pub");
    write_secret(&key);
    write_secret(&public);
    let (pub_pid, _) = trigger(&["open", s(&public)]);
    let (pid, _) = trigger(&["open", s(&key)]);
    let e = file_event(pid);
    assert_eq!(e["file"]["path"], s(&key), "{e}");
    assert_eq!(e["file"]["kind"], "ssh-key");
    f.agent
        .assert_none("", is("file_open", pub_pid), Duration::from_millis(300));

    // A watched path that did not exist at start.
    let later = f.dir.join("created-later");
    write_secret(&later);
    let (pid, _) = trigger(&["open", s(&later)]);
    assert_eq!(file_event(pid)["file"]["path"], s(&later));

    // Write a temporary file, rename it over a watched one: the new inode is watched at once.
    let replaced = f.dir.join("replaced");
    let tmp = f.dir.join("replaced.tmp");
    write_secret(&tmp);
    std::fs::rename(&tmp, &replaced).expect("rename over");
    let (pid, _) = trigger(&["open", s(&replaced)]);
    let e = file_event(pid);
    assert_eq!(e["file"]["path"], s(&replaced), "{e}");
    assert_eq!(e["file"]["kind"], "cloud");
    // Once user space has seen the new inode, a hard link to it elsewhere is caught too:
    // opened until it is (how soon depends on the machine, not on what is checked).
    let link = f.dir.join("sub/replaced-link");
    std::fs::hard_link(&replaced, &link).expect("hard link");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let e = loop {
        let (pid, _) = trigger(&["open", s(&link)]);
        if let Some(e) = f
            .agent
            .try_wait_for(is("file_open", pid), Duration::from_secs(1))
        {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a hard link to the replaced file was never reported"
        );
    };
    assert_eq!(e["file"]["path"], s(&replaced), "{e}");
}

/// A long-lived process to be the target of the process-targeting calls: `cat`, which lives
/// while its stdin is open. It echoes a line before it is returned, because a spawn returns
/// when the exec is past its point of no return, before the kernel's `sched_process_exec`
/// fired: without the round trip a busy machine can let the agent see the target as the
/// test's own fork, not yet as `cat`.
fn target_process() -> Child {
    let mut target = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cat");
    writeln!(target.stdin.as_mut().expect("stdin"), "ready").expect("write to cat");
    let mut line = String::new();
    BufReader::new(target.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read from cat");
    assert_eq!(line, "ready\n");
    target
}

#[test]
fn another_process_environment_and_memory() {
    let f = fixture();
    let mut target = target_process();
    let tpid = target.id();
    for name in ["environ", "mem"] {
        let path = format!("/proc/{tpid}/{name}");
        let (pid, _) = trigger(&["openat", &path]);
        let e = f.agent.wait_for(&path, is("proc_access", pid));
        assert_eq!(e["target"]["pid"], tpid, "{e}");
        assert_eq!(e["file"]["path"], path, "{e}");
        assert!(
            e["target"]["exe"].as_str().unwrap_or("").ends_with("/cat"),
            "{e}"
        );
    }
    // Its own environment is not another process's secret.
    let (own, _) = trigger(&["openat", "/proc/self/environ"]);
    let (marker, _) = trigger(&["openat", &format!("/proc/{tpid}/environ")]);
    f.agent.wait_for("marker", is("proc_access", marker));
    f.agent
        .assert_none("", is("proc_access", own), Duration::from_millis(300));
    target.kill().expect("kill");
    let _ = target.wait();
}

/// The start of a read-only mapping of process `pid`, in decimal for `trigger`.
fn read_only_mapping(pid: u32) -> String {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let line = maps
        .lines()
        .find(|l| l.contains(" r--p ") || l.contains(" r-xp "))
        .expect("a mapping");
    u64::from_str_radix(line.split('-').next().expect("start"), 16)
        .expect("hex")
        .to_string()
}

#[test]
fn credential_syscalls_are_reported() {
    let f = fixture();
    let mut target = target_process();
    let tpid = target.id();
    let tpid_s = tpid.to_string();

    let (pid, ret) = trigger(&["ptrace-attach", &tpid_s]);
    assert_eq!(ret, 0);
    let e = f.agent.wait_for("ptrace", is("ptrace", pid));
    assert_eq!(e["target"]["pid"], tpid, "{e}");
    assert_eq!(e["syscall"]["operation"], "PTRACE_ATTACH", "{e}");
    assert_eq!(e["ok"], true);

    // Read 16 bytes at the start of the target's first mapping; write them back into a
    // read-only mapping, which the kernel refuses (EFAULT) without harming the target.
    let addr = read_only_mapping(tpid);
    let (pid, ret) = trigger(&["vm-readv", &tpid_s, &addr, "16"]);
    assert_eq!(ret, 16);
    let e = f
        .agent
        .wait_for("process_vm_readv", is("process_vm_readv", pid));
    assert_eq!(e["target"]["pid"], tpid);
    assert_eq!(e["syscall"]["bytes"], 16, "{e}");
    let (pid, ret) = trigger(&["vm-writev", &tpid_s, &addr, "16"]);
    assert!(ret < 0);
    let e = f
        .agent
        .wait_for("process_vm_writev", is("process_vm_writev", pid));
    assert_eq!(e["target"]["pid"], tpid);
    assert_eq!(e["ok"], false);
    assert_eq!(e["errno"], -ret);

    let (pid, ret) = trigger(&["pidfd-getfd", &tpid_s, "1"]);
    assert!(ret >= 0, "pidfd_getfd: {ret}");
    let e = f.agent.wait_for("pidfd_getfd", is("pidfd_getfd", pid));
    assert_eq!(e["target"]["pid"], tpid, "{e}");
    assert_eq!(e["syscall"]["target_fd"], 1);

    let (pid, serial) = trigger(&["add-key", "sensor-test-key"]);
    assert!(serial > 0);
    let e = f.agent.wait_for("add_key", is("add_key", pid));
    assert_eq!(e["syscall"]["key_type"], "user", "{e}");
    assert_eq!(e["syscall"]["key_description"], "sensor-test-key");
    assert_eq!(e["syscall"]["key_serial"], serial);
    let e = f.agent.wait_for("keyctl", is("keyctl", pid));
    assert_eq!(e["syscall"]["operation"], "KEYCTL_READ", "{e}");
    assert_eq!(e["syscall"]["key_serial"], serial);

    let (pid, ret) = trigger(&["request-key", "sensor-test-missing"]);
    assert!(ret < 0);
    let e = f.agent.wait_for("request_key", is("request_key", pid));
    assert_eq!(e["ok"], false);
    assert_eq!(e["syscall"]["key_description"], "sensor-test-missing");

    target.kill().expect("kill");
    let _ = target.wait();
}

/// A process in a pid namespace of its own (as in a container) reads another's memory by the
/// pid it sees there: the target is named by its host pid and executable, not as passed.
#[test]
fn a_target_in_the_callers_pid_namespace_is_named_on_the_host() {
    let f = fixture();
    // sh is the namespace's init (pid 1), `sleep` its pid 2; sh waits until the child has
    // become `sleep` and sleeps in it, and for the test before it ends the namespace, so the
    // target still lives while the agent names it. The child's /proc shows the new image
    // before its exec ends (and the kernel reports the exec), so a new exe alone could let
    // the read come first; a sleeping `sleep` has finished its exec.
    let mut ns = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c"])
        .arg(format!(
            "sleep 60 & s=$(readlink -f \"$(command -v sleep)\"); \
             until [ \"$(readlink /proc/$!/exe)\" = \"$s\" ] && \
                   read -r _ _ state _ < /proc/$!/stat && [ \"$state\" = S ]; do :; done; \
             {} vm-readv $! 4096 16; read line; kill $!",
            trigger_bin().display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("unshare");
    // Address 4096 is never mapped: the read fails (EFAULT), which no other test's does.
    let e = f
        .agent
        .wait_for("process_vm_readv from a pid namespace", |e| {
            e["kind"] == "process_vm_readv" && e["ok"] == false
        });
    drop(ns.stdin.take());
    let _ = ns.wait();
    assert_eq!(e["errno"], 14, "{e}");
    assert_ne!(
        e["target"]["pid"], 2,
        "the pid as passed, not the host's: {e}"
    );
    assert!(
        e["target"]["exe"]
            .as_str()
            .unwrap_or("")
            .ends_with("/sleep"),
        "{e}"
    );
}

#[test]
fn io_uring_open_is_flagged() {
    let f = fixture();
    let (pid, ret) = trigger(&["io-uring-open", s(&f.dir.join("secret"))]);
    assert!(ret >= 0, "io_uring open: {ret}");
    // Flagged at submission where the kernel has the tracepoint (`io_uring_submit_req`,
    // since 6.4)...
    let flagged = f.agent.probe_mode("io_uring").is_some();
    if flagged {
        let e = f.agent.wait_for("io_uring", is("io_uring", pid));
        assert_eq!(e["syscall"]["operation"], "IORING_OP_OPENAT", "{e}");
    }
    // ...and classified by file where a hook on the kernel's open path sees the open.
    let mode = f
        .agent
        .probe_mode("file_open")
        .expect("file_open's mode in the log");
    assert!(
        flagged || mode != "tracepoint",
        "an io_uring open is neither flagged nor classified: a route around the sensor"
    );
    if mode != "tracepoint" {
        let e = file_event(pid);
        assert_eq!(e["file"]["path"], s(&f.dir.join("secret")), "{mode}: {e}");
        assert_eq!(e["file"]["syscall"], "io_uring", "{mode}: {e}");
        assert_eq!(e["file"]["kind"], "ssh-key", "{mode}: {e}");
    }
}

/// More threads blocked inside the open path than a kretprobe has instances (opening FIFOs
/// nobody writes, which any user can do) do not hide an open: it is reported, or, in kprobe
/// mode, whose kretprobe then misses it, counted as a `kprobe_missed` loss.
#[test]
fn an_open_behind_blocked_opens_is_reported_or_counted() {
    let f = fixture();
    let (pid, ret) = trigger(&["open-behind-blocked-opens", s(&f.dir.join("secret"))]);
    assert!(ret >= 0, "open: {ret}");
    let mode = f
        .agent
        .probe_mode("file_open")
        .expect("file_open's mode in the log");
    if mode != "kprobe" {
        file_event(pid);
        return;
    }
    let e = f.agent.wait_for_shared("the open, or its loss", |e| {
        is("file_open", pid)(e)
            || e["kind"] == "loss"
                && e["loss"]["source"] == "kprobe_missed"
                && e["loss"]["counts"]["file_open"].as_u64() > Some(0)
    });
    eprintln!("kprobe mode: {e}");
}

/// The syscalls' kretprobe has as few instances as the open path's: a `process_vm_readv`
/// behind more blocked calls of it than that is reported, or, in kprobe mode, its miss is
/// counted as a `kprobe_missed` loss of `process_vm_readv`.
#[test]
fn a_syscall_behind_blocked_syscalls_is_reported_or_counted() {
    let f = fixture();
    let mut target = target_process();
    let tpid = target.id();
    let addr = read_only_mapping(tpid);
    let (pid, ret) = trigger(&["vm-readv-behind-blocked", &tpid.to_string(), &addr, "16"]);
    assert_eq!(ret, 16, "process_vm_readv");
    let read = |e: &Value| is("process_vm_readv", pid)(e) && e["target"]["pid"] == tpid;
    let mode = f
        .agent
        .probe_mode("syscalls")
        .expect("the syscalls' mode in the log");
    if mode != "kprobe" {
        f.agent.wait_for("process_vm_readv", read);
    } else {
        let e = f.agent.wait_for_shared("the read, or its loss", |e| {
            read(e)
                || e["kind"] == "loss"
                    && e["loss"]["source"] == "kprobe_missed"
                    && e["loss"]["counts"]["process_vm_readv"].as_u64() > Some(0)
        });
        eprintln!("kprobe mode: {e}");
    }
    target.kill().expect("kill");
    let _ = target.wait();
}

/// Runs `trigger` placed in `cgroup` (it joins, then execs the action).
fn trigger_in(cgroup: &TestCgroup, action: &[&str]) -> (u32, i64) {
    let mut args = cgroup.trigger_args();
    args.extend(action.iter().map(|a| a.to_string()));
    trigger(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn attribution_names_unit_container_pod_and_human() {
    let f = fixture();
    let secret = f.dir.join("secret");

    // No login session: not a person.
    let (pid, _) = trigger(&["open", s(&secret)]);
    let e = file_event(pid);
    assert_eq!(e["process"]["auid"], 4294967295u32, "{e}");
    assert_eq!(e["identity"]["human"], false, "{e}");
    let ancestors = e["process"]["ancestors"].as_array().expect("ancestors");
    assert!(!ancestors.is_empty(), "{e}");

    // A login session (pam_loginuid sets the login uid): a person.
    let (pid, _) = trigger(&["--loginuid", "1000", "open", s(&secret)]);
    let e = file_event(pid);
    assert_eq!(e["process"]["auid"], 1000, "{e}");
    assert_eq!(e["identity"]["human"], true, "{e}");

    // A systemd service.
    let unit = TestCgroup::create("system.slice/sensor-test-web.service");
    let (pid, _) = trigger_in(&unit, &["open", s(&secret)]);
    let e = file_event(pid);
    assert_eq!(e["identity"]["unit"], "sensor-test-web.service", "{e}");
    assert_eq!(e["identity"]["owner"], "platform-team", "{e}");
    assert_eq!(e["file"]["owner"], "test-team", "{e}");
    assert_eq!(e["identity"]["human"], false);

    // A docker container.
    let id = "3f2a".repeat(16);
    let docker = TestCgroup::create(&format!("system.slice/docker-{id}.scope"));
    let (pid, _) = trigger_in(&docker, &["open", s(&secret)]);
    let e = file_event(pid);
    assert_eq!(e["identity"]["container"]["id"], id, "{e}");
    assert_eq!(e["identity"]["container"]["runtime"], "docker", "{e}");

    // A Kubernetes pod's containerd container.
    let pod = "1b2c3d4e-0000-4a5b-8c9d-0123456789ab";
    let cid = "9e8d".repeat(16);
    let kube = TestCgroup::create(&format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{cid}.scope",
        pod.replace('-', "_")
    ));
    let (pid, _) = trigger_in(&kube, &["open", s(&secret)]);
    let e = file_event(pid);
    assert_eq!(e["identity"]["pod_uid"], pod, "{e}");
    assert_eq!(e["identity"]["container"]["runtime"], "containerd", "{e}");
    assert_eq!(e["identity"]["container"]["id"], cid, "{e}");
}

#[test]
fn unwatched_opens_never_reach_user_space() {
    let f = fixture();
    let plain = f.dir.join("not-watched");
    std::fs::write(&plain, "x").expect("write");
    let (pid, _) = trigger(&["open", s(&plain)]);
    let (marker, _) = trigger(&["open", s(&f.dir.join("secret"))]);
    file_event(marker);
    f.agent
        .assert_none("", is("file_open", pid), Duration::from_millis(300));
}

/// The agent's own file activity (its log, its status file) is never reported, even when
/// those files are watched; another process opening them is.
#[test]
fn the_agent_does_not_report_itself() {
    let state = tempfile::tempdir().expect("state");
    let dir = state.path().canonicalize().expect("canonical");
    let config = format!(
        "[[watch]]\npath = \"{}/*\"\nkind = \"tls-key\"\n",
        dir.display()
    );
    let agent = Agent::start_at(&config, &dir, &[]);
    // status.json is rewritten every 2 s and the log sealed every second.
    std::thread::sleep(Duration::from_secs(3));
    let (pid, ret) = trigger(&["open", s(&dir.join("status.json"))]);
    assert!(ret >= 0);
    agent.wait_for("another process opening status.json", is("file_open", pid));
    agent.assert_none(
        "from the agent itself",
        |e| e["process"]["pid"] == agent.pid(),
        Duration::from_millis(100),
    );
}
