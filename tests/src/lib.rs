//! Test harness: starts the real `sensor-agent` (release build, real probes in this kernel)
//! with a test config, collects its JSON events, and runs the `trigger` helper as the
//! process whose accesses must be reported.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::{
        mpsc::{self, Receiver},
        Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use rustix::process::{kill_process, set_parent_process_death_signal, Pid, Signal};
use serde_json::Value;

/// The release `sensorctl` built by `cargo xtask build`.
pub fn sensorctl_bin() -> PathBuf {
    agent_bin().with_file_name("sensorctl")
}

/// The release collector built by `cargo xtask build`.
pub fn collector_bin() -> PathBuf {
    agent_bin().with_file_name("sensor-collector")
}

/// Runs `sensorctl ARGS --state-dir DIR`; returns (exit code, stdout, stderr).
pub fn sensorctl(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(sensorctl_bin())
        .args(args)
        .arg("--state-dir")
        .arg(dir)
        .output()
        .expect("run sensorctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sensorctl events --json --kind KIND` in `dir`, one value per line.
pub fn events(dir: &Path, kind: &str) -> Vec<Value> {
    let (code, out, err) = sensorctl(dir, &["events", "--json", "--kind", kind]);
    assert_eq!(code, 0, "sensorctl events: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Polls until an entry of `kind` is in the log.
pub fn wait_entry(dir: &Path, kind: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(e) = events(dir, kind).pop() {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} entry within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `sensorctl status` (status.json is rewritten every 2 s) until it shows `line`.
pub fn wait_status(dir: &Path, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status, _) = sensorctl(dir, &["status"]);
        if status.contains(line) {
            return;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The number of the last batch in `dir`'s log.
pub fn last_batch(dir: &Path) -> i64 {
    rusqlite::Connection::open(dir.join("log.db"))
        .expect("open db")
        .query_row("SELECT MAX(number) FROM batches", [], |r| r.get(0))
        .expect("last batch")
}

/// Deletes every batch after `batch` from `dir`'s log, as a careful attacker would: the
/// blocks of the batches' records and their query-index rows too.
pub fn cut_log_after(dir: &Path, batch: i64) {
    let conn = rusqlite::Connection::open(dir.join("log.db")).expect("open db");
    for sql in [
        "DELETE FROM blocks WHERE first_seq >
            (SELECT first_seq + count - 1 FROM batches WHERE number = ?1)",
        "DELETE FROM postings WHERE batch > ?1",
        "DELETE FROM batches WHERE number > ?1",
    ] {
        conn.execute(sql, [batch])
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// After the agent anchoring `dir`'s log in the TPM at `tcti` stopped cleanly: `verify
/// --tpm` finds every batch in the PCR and the last one's quote stored.
pub fn assert_anchored_after_stop(dir: &Path, tcti: &str) {
    let (code, out, err) = sensorctl(dir, &["verify", "--tpm", tcti]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 newer not yet extended") && out.contains("stored quote of batch"),
        "after a clean stop every batch is in the PCR: {out}{err}"
    );
    assert_eq!(events(dir, "tpm_anchored").len(), 1);
}

/// Cuts the last three batches of `dir`'s log, as [`cut_log_after`] does: offline `verify`
/// finds the shorter log intact, `verify --tpm` (the TPM at `tcti`) names the truncation at
/// the first batch cut.
pub fn assert_cut_tail_named(dir: &Path, tcti: &str) {
    let last = last_batch(dir);
    cut_log_after(dir, last - 3);
    let (code, out, err) = sensorctl(dir, &["verify"]);
    assert_eq!(code, 0, "a cut tail verifies offline: {out}{err}");
    let (code, out, err) = sensorctl(dir, &["verify", "--tpm", tcti]);
    assert_eq!(code, 1, "{out}{err}");
    let named = format!(
        "tpm verification failed at batch {}: tail truncated",
        last - 2
    );
    assert!(format!("{out}{err}").contains(&named), "{out}{err}");
}

/// A file `secret` (content "k") in `dir`, by its canonical path, for a test to watch.
pub fn secret_in(dir: &Path) -> PathBuf {
    let secret = dir.canonicalize().expect("canonical").join("secret");
    std::fs::write(&secret, "k").expect("write secret");
    secret
}

/// A private-key-like file at `path`, mode 0600 (readable by root alone).
pub fn write_secret(path: &Path) {
    std::fs::write(path, "PRIVATE KEY\n").expect("write secret");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
}

/// A fresh world-traversable (0755) directory named `prefix…` in the temp dir, canonical (so
/// paths in it compare equal to the ones the agent reports): another uid can reach files in
/// it that their own modes allow.
pub fn test_dir(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path().canonicalize().expect("canonical");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    (tmp, dir)
}

/// One agent for a whole test file, watching files in a [`test_dir`] made before it starts.
pub struct Fixture {
    pub agent: Agent,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Fixture {
    /// Makes the directory, lets `setup` fill it and return the agent's configuration, and
    /// starts the agent on it.
    pub fn start(prefix: &str, setup: impl FnOnce(&Path) -> String) -> Fixture {
        let (tmp, dir) = test_dir(prefix);
        let config = setup(&dir);
        Fixture {
            agent: Agent::start(&config),
            dir,
            _tmp: tmp,
        }
    }
}

/// Whether a precondition holds. When it does not, the test must not pass as if it had
/// checked anything: under `CI=true` it fails, elsewhere it says so on stderr.
pub fn precondition(holds: bool, what: &str) -> bool {
    if !holds {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "precondition missing under CI: {what}"
        );
        eprintln!("SKIPPED (precondition missing): {what}");
    }
    holds
}

/// [`precondition`]: running as root (the agent loads its probes; CI runs as root).
pub fn is_root() -> bool {
    precondition(rustix::process::geteuid().is_root(), "running as root")
}

/// A path as the `&str` argument of `trigger` and of config text.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `[agent]` keys for a test whose load is one process opening one file over and over, as a
/// storm for the pipeline: every open an event of its own, neither folded nor over budget
/// (docs/probes.md, "Floods").
pub const STORM: &str = "fold_window = \"off\"\nbudget_per_second = 0\n";

/// The `openloop` load generator: opens `path` `count` times.
pub fn openloop(count: u64, path: &Path) -> Child {
    Command::new(openloop_bin())
        .arg(count.to_string())
        .arg(path)
        .stdout(Stdio::null())
        .spawn()
        .expect("openloop")
}

/// `openloop` (tests/src/bin/openloop.rs), built beside `trigger`.
pub fn openloop_bin() -> PathBuf {
    trigger_bin().with_file_name("openloop")
}

/// The release agent built by `cargo xtask build`.
pub fn agent_bin() -> PathBuf {
    std::env::var_os("SENSOR_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/sensor-agent")
        })
}

/// The agent built with test-only fault injection (`cargo xtask build` builds it; see
/// `sensor-agent/src/pipeline/fault.rs`).
pub fn fault_injection_bin() -> PathBuf {
    agent_bin().with_file_name("sensor-agent-fault-injection")
}

/// How [`Agent::start_opts`] starts the agent, beyond its config and state directory.
#[derive(Default)]
pub struct Start<'a> {
    /// More arguments for `sensor-agent run`.
    pub args: &'a [&'a str],
    /// What the test does with the agent's stdout.
    pub stdout: Stdout,
    /// Run [`fault_injection_bin`] with this stage failing once the agent is ready.
    pub fault: Option<&'a str>,
}

/// What a test does with the agent's `--output json` stdout.
#[derive(Clone, Copy, Debug, Default)]
pub enum Stdout {
    /// Reads every line into the events `wait_for` sees.
    #[default]
    Read,
    /// Reads this many lines, then closes the pipe, as `| head -n N` does.
    CloseAfter(usize),
    /// Keeps the pipe open without reading it, as a stalled reader does, until
    /// [`Agent::read_stdout`].
    Held,
}

/// Passes the agent's JSON lines to `tx`, at most `limit`; returning closes the pipe.
fn read_events(stdout: ChildStdout, tx: mpsc::Sender<Value>, limit: usize) {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(limit)
        {
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("agent printed a line that is not JSON ({e}): {line}"));
            if tx.send(value).is_err() {
                break;
            }
        }
    });
}

/// A running agent; killed when dropped.
pub struct Agent {
    child: Child,
    /// The unread stdout of [`Stdout::Held`].
    held_stdout: Mutex<Option<(ChildStdout, mpsc::Sender<Value>)>>,
    events: Mutex<Receiver<Value>>,
    /// Events received but not yet claimed by a `wait_for`.
    seen: Mutex<Vec<Value>>,
    pub stderr: std::sync::Arc<Mutex<String>>,
    /// The agent's `--state-dir`.
    pub state_dir: PathBuf,
    /// Owns `state_dir` when the harness made it.
    _owned_dir: Option<tempfile::TempDir>,
    /// Holds the config file.
    _config_dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent with `config` (TOML) and waits until it says it is ready.
    pub fn start(config: &str) -> Agent {
        Self::start_with(config, &[])
    }

    pub fn start_with(config: &str, extra_args: &[&str]) -> Agent {
        let owned = tempfile::tempdir().expect("state dir");
        let mut agent = Self::start_at(config, owned.path(), extra_args);
        agent._owned_dir = Some(owned);
        agent
    }

    /// Starts the agent on an existing state directory (a restart, a special file system).
    pub fn start_at(config: &str, state_dir: &Path, extra_args: &[&str]) -> Agent {
        Self::start_opts(
            config,
            state_dir,
            &Start {
                args: extra_args,
                ..Start::default()
            },
        )
    }

    /// Starts the agent as `start` says.
    pub fn start_opts(config: &str, state_dir: &Path, start: &Start) -> Agent {
        let config_dir = tempfile::tempdir().expect("config dir");
        let config_path = config_dir.path().join("test-config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut cmd = match start.fault {
            Some(stage) => {
                let mut cmd = Command::new(fault_injection_bin());
                cmd.env("SENSOR_AGENT_FAULT", stage);
                cmd
            }
            None => Command::new(agent_bin()),
        };
        cmd.arg("run")
            .arg("--output")
            .arg("json")
            .arg("--config")
            .arg(&config_path)
            .arg("--state-dir")
            .arg(state_dir)
            .args(probe_mode_args())
            .args(start.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_owned(cmd);
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        let held = match start.stdout {
            Stdout::Read => {
                read_events(stdout, tx, usize::MAX);
                None
            }
            Stdout::CloseAfter(lines) => {
                read_events(stdout, tx, lines);
                None
            }
            Stdout::Held => Some((stdout, tx)),
        };
        let stderr_text = std::sync::Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        let sink = stderr_text.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("sensor-agent ready") {
                    let _ = ready_tx.send(());
                }
                let mut s = lock(&sink);
                s.push_str(&line);
                s.push('\n');
            }
        });
        let ready = ready_rx.recv_timeout(Duration::from_secs(60));
        if ready.is_err() {
            let _ = child.kill();
            panic!("the agent did not become ready:\n{}", lock(&stderr_text));
        }
        Agent {
            child,
            held_stdout: Mutex::new(held),
            events: Mutex::new(rx),
            seen: Mutex::new(Vec::new()),
            stderr: stderr_text,
            state_dir: state_dir.to_path_buf(),
            _owned_dir: None,
            _config_dir: config_dir,
        }
    }

    /// Starts reading a [`Stdout::Held`] stdout.
    pub fn read_stdout(&self) {
        let (stdout, tx) = lock(&self.held_stdout).take().expect("a held stdout");
        read_events(stdout, tx, usize::MAX);
    }

    /// How many lines of the agent's log (stderr) so far are at `level` (`ERROR`, `WARN`, ...)
    /// and contain `text`.
    pub fn log_lines(&self, level: &str, text: &str) -> usize {
        lock(&self.stderr)
            .lines()
            .filter(|l| l.contains(level) && l.contains(text))
            .count()
    }

    /// The mode the start-up log says `probe` took (`probe attached probe="P" mode="M"`).
    pub fn probe_mode(&self, probe: &str) -> Option<String> {
        let log = lock(&self.stderr).clone();
        let tag = format!("probe=\"{probe}\"");
        let line = log
            .lines()
            .find(|l| l.contains("probe attached") && l.contains(&tag))?;
        let mode = line.split("mode=\"").nth(1)?.split('"').next()?;
        Some(mode.to_owned())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the first event matching `pred`, and returns it.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait(what, pred, true)
    }

    /// Like `wait_for`, but leaves the event for other tests to wait for too: one `loss`
    /// event counts what tests running side by side lost in the same second.
    pub fn wait_for_shared(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait(what, pred, false)
    }

    fn wait(&self, what: &str, pred: impl Fn(&Value) -> bool, take: bool) -> Value {
        self.wait_until(pred, Duration::from_secs(15), take)
            .unwrap_or_else(|| {
                panic!(
                    "no event {what} within 15 s; events seen:\n{}\nagent stderr:\n{}",
                    lock(&self.seen)
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    lock(&self.stderr)
                )
            })
    }

    /// Like `wait_for` but returns `None` after `timeout`.
    pub fn try_wait_for(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Option<Value> {
        self.wait_until(pred, timeout, true)
    }

    /// The first event matching `pred` within `timeout`, taken from those seen unless
    /// `take` is false.
    fn wait_until(
        &self,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
        take: bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = lock(&self.seen);
        if let Some(i) = seen.iter().position(&pred) {
            return Some(if take {
                seen.remove(i)
            } else {
                seen[i].clone()
            });
        }
        let events = lock(&self.events);
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match events.recv_timeout(left) {
                Ok(e) if pred(&e) => {
                    if !take {
                        seen.push(e.clone());
                    }
                    return Some(e);
                }
                Ok(e) => seen.push(e),
                Err(_) => return None,
            }
        }
    }

    /// Fails if an event matching `pred` arrives within `window`.
    pub fn assert_none(&self, what: &str, pred: impl Fn(&Value) -> bool, window: Duration) {
        if let Some(e) = self.try_wait_for(pred, window) {
            panic!("unexpected event {what}: {e}");
        }
    }

    /// All events that arrive within `window` and match `pred`.
    pub fn collect(&self, window: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(e) =
            self.try_wait_for(&pred, deadline.saturating_duration_since(Instant::now()))
        {
            out.push(e);
        }
        out
    }

    /// Stops the agent as systemd would (SIGTERM) and waits for it; panics unless it exits 0.
    pub fn stop(&mut self) {
        self.signal(Signal::TERM);
        let status = self.child.wait().expect("wait for the agent");
        assert!(
            status.success(),
            "the agent failed to stop cleanly: {status}\n{}",
            lock(&self.stderr)
        );
    }

    /// Waits up to `timeout` for the agent to exit on its own; `None` while it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the agent") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the agent with SIGKILL, as a crash would, and waits for it.
    pub fn crash(&mut self) {
        self.signal(Signal::KILL);
        let _ = self.child.wait();
    }

    /// Sends a signal to the agent.
    /// The pid is this agent's: std reaps the child only in `wait`, after which no test
    /// signals it, so the pid cannot have been reused.
    pub fn signal(&self, sig: Signal) {
        let _ = kill_process(Pid::from_child(&self.child), sig);
    }
}

/// Spawns `cmd` so that it is killed when the test process ends, even when its `Agent` is
/// in a `static` and never dropped: the child asks for SIGKILL when its parent thread exits,
/// and the parent is a thread that lives as long as the process.
fn spawn_owned(mut cmd: Command) -> Child {
    use std::os::unix::process::CommandExt;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe calls are allowed: it makes the prctl syscall alone, which
        // allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(|| {
                let _ = set_parent_process_death_signal(Some(Signal::KILL));
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("start sensor-agent (build it with `cargo xtask build`)");
        let _ = tx.send(child);
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("spawner thread")
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Locks `m` even when a test that held it panicked: one failing test's assertion must not
/// fail every other test of its file with a poisoned lock instead of its own finding.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `trigger` helper, built beside the test executables (`target/<profile>/trigger`).
/// `--probe-mode` from `SENSOR_TEST_PROBE_MODE`: the VM lane runs the same tests in each
/// mode (`cargo xtask vm-test`); unset, the agent takes the strongest the kernel loads.
pub fn probe_mode_args() -> Vec<String> {
    match std::env::var("SENSOR_TEST_PROBE_MODE") {
        Ok(mode) if !mode.is_empty() => vec!["--probe-mode".into(), mode],
        _ => Vec::new(),
    }
}

pub fn trigger_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    profile_dir.join("trigger")
}

/// Runs `trigger` with `args`; returns (its pid, the syscall result it printed).
pub fn trigger(args: &[&str]) -> (u32, i64) {
    trigger_cmd(Command::new(trigger_bin()).args(args))
}

/// Runs a prepared `trigger` command (e.g. with another uid set).
pub fn trigger_cmd(cmd: &mut Command) -> (u32, i64) {
    let child = cmd.stdout(Stdio::piped()).spawn().expect("run trigger");
    let pid = child.id();
    let out = child.wait_with_output().expect("trigger output");
    assert!(out.status.success(), "trigger failed: {out:?}");
    let ret = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("trigger prints its result");
    (pid, ret)
}

/// `event.process.pid == pid && event.kind == kind`
pub fn is(kind: &str, pid: u32) -> impl Fn(&Value) -> bool + '_ {
    move |e| e["kind"] == kind && e["process"]["pid"] == pid
}

/// The cgroup hierarchies a test places a process in, as systemd does on this host: the
/// `name=systemd` v1 hierarchy when there is one (hybrid layout) and the cgroup2 tree, which
/// the kernel's cgroup id on each event refers to.
pub fn cgroup_roots() -> Vec<PathBuf> {
    [
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.join("cgroup.procs").exists())
    .take(2)
    .collect()
}

/// The same relative cgroup in every hierarchy of [`cgroup_roots`], removed when dropped.
pub struct TestCgroup {
    dirs: Vec<(PathBuf, PathBuf)>,
}

impl TestCgroup {
    pub fn create(relative: &str) -> TestCgroup {
        let dirs = cgroup_roots()
            .into_iter()
            .map(|root| {
                let dir = root.join(relative);
                std::fs::create_dir_all(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                (root, dir)
            })
            .collect();
        TestCgroup { dirs }
    }

    /// `--cgroup DIR` arguments for `trigger`, one per hierarchy.
    pub fn trigger_args(&self) -> Vec<String> {
        self.dirs
            .iter()
            .flat_map(|(_, dir)| ["--cgroup".to_owned(), dir.display().to_string()])
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Leaf first; the processes that joined have exited by now.
        for (root, leaf) in &self.dirs {
            let mut dir = Some(leaf.as_path());
            while let Some(d) = dir {
                if d == root || std::fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
        }
    }
}
