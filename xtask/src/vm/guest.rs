//! One guest: a swtpm, qemu (TCG) booting the kernel and the initramfs, the run script that
//! the guest executes after switching to the host's root, and the wait for it, bounded in
//! time. qemu and swtpm run in process groups of their own that are killed on every way out
//! (a guard's `Drop`; SIGINT and SIGTERM end the wait so that the guards run; a parent that
//! dies anyway takes them along by `PR_SET_PDEATHSIG`).

use std::{
    fs,
    io::{Read, Seek, SeekFrom, Write},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use rustix::process::{kill_process_group, set_parent_process_death_signal, Pid, Signal};

use super::{
    initramfs::{ROOT_TAG, SHARE_DIR, SHARE_TAG},
    kernel::Kernel,
};

/// The kernel command line: serial console, the BPF LSM active (with the LSMs Debian
/// enables), and a panic ends the guest at once (with -no-reboot, qemu exits).
const CMDLINE: &str =
    "console=ttyS0 lsm=lockdown,capability,landlock,yama,apparmor,bpf panic=-1 loglevel=4 edd=off";

/// What a guest runs.
pub struct Plan<'a> {
    pub kernel: &'a Kernel,
    pub initramfs: &'a Path,
    /// The release `sensor-agent` (its `probe` subcommand runs per mode).
    pub agent: &'a Path,
    /// Where the test executables run, as `cargo test` runs them: the package's directory.
    pub tests_dir: &'a Path,
    pub modes: &'a [String],
    /// (test target name, executable)
    pub tests: &'a [(String, PathBuf)],
    pub timeout: Duration,
    /// Echo the guest's console as it runs.
    pub verbose: bool,
    /// Run `bpftool feature probe kernel` in the guest (about a minute under TCG).
    pub feature_probe: bool,
    /// A benchmark script to run after the tests, given the modes (`MODES`), its output
    /// kept as `out/bench.out` (xtask/bench/guest_overhead.sh).
    pub bench: Option<&'a Path>,
    /// qemu's instruction counter as the guest's clock, at 2^SHIFT instructions a
    /// nanosecond (`vm-test --icount`).
    pub icount: Option<u8>,
    /// Where the console, the guest's results and the run script are kept after the run.
    pub logs: PathBuf,
}

/// How a guest ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The run script finished and powered the guest off.
    Done,
    /// qemu ended before the run script finished (boot failure, panic, qemu error).
    Stopped,
    /// Killed at the time limit.
    TimedOut,
}

pub struct Outcome {
    pub end: End,
    /// From qemu's start to the initramfs's boot marker (every mount made, `lo` up).
    pub boot: Option<Duration>,
    pub elapsed: Duration,
    /// The guest's results (`logs/out`): `kernel.txt`, `MODE/probe.{out,rc}`,
    /// `MODE/TEST.{out,rc,time}`.
    pub out: PathBuf,
    pub console: PathBuf,
    pub qemu_log: PathBuf,
}

/// Boots the guest, waits for it (at most `plan.timeout`), and keeps its logs.
pub fn run(plan: &Plan) -> Result<Outcome> {
    let name = plan.kernel.suite.name;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("sensor-vm-{}-", std::process::id()))
        .tempdir()
        .context("creating the guest's temporary directory")?;
    let share = tmp.path().join("share");
    fs::create_dir_all(share.join("out"))?;
    let script = share.join("run.sh");
    fs::write(&script, run_script(plan)?)?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    let console = tmp.path().join("console.log");
    let qemu_log = tmp.path().join("qemu.log");
    let tpm = tmp.path().join("tpm");
    fs::create_dir_all(&tpm)?;

    let signals = SignalGuard::catch();
    let started = Instant::now();
    let result = (|| -> Result<(End, Option<Duration>)> {
        let _swtpm = start_swtpm(&tpm)?;
        let mut qemu = Owned::spawn(
            qemu_command(plan, &share, &console, &tpm)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&qemu_log)?),
            "qemu-system-x86_64 (install qemu-system-x86: cargo xtask setup)",
        )?;
        let mut boot = None;
        let mut reported = Vec::new();
        let mut echoed = 0;
        loop {
            if plan.verbose {
                echoed = echo_new(&console, echoed);
            }
            if boot.is_none() && share.join("out/booted").exists() {
                boot = Some(started.elapsed());
                eprintln!(
                    "xtask vm: {name}: booted in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            report_progress(name, &share.join("out"), plan, &mut reported);
            if let Some(status) = qemu.child.try_wait()? {
                let done = share.join("out/done").exists();
                if !done {
                    eprintln!("xtask vm: {name}: qemu ended ({status}) before the run finished");
                }
                return Ok((if done { End::Done } else { End::Stopped }, boot));
            }
            if started.elapsed() > plan.timeout {
                eprintln!(
                    "xtask vm: {name}: no end within {} s: killing qemu",
                    plan.timeout.as_secs()
                );
                return Ok((End::TimedOut, boot));
            }
            if signals.caught() {
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    })();
    drop(signals);
    if plan.verbose {
        echo_new(&console, 0);
    }
    // qemu and swtpm are gone here (their guards dropped); keep what the guest left.
    let kept = keep_logs(plan, tmp.path());
    let (end, boot) = result?;
    kept?;
    Ok(Outcome {
        end,
        boot,
        elapsed: started.elapsed(),
        out: plan.logs.join("out"),
        console: plan.logs.join("console.log"),
        qemu_log: plan.logs.join("qemu.log"),
    })
}

fn qemu_command(plan: &Plan, share: &Path, console: &Path, tpm: &Path) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    // One vCPU with the instruction counter: with two, the 6.1 guest never brings up the
    // second (it waits on a clock that only its own instructions would move).
    let cpus = if plan.icount.is_some() { "1" } else { "2" };
    cmd.args(["-cpu", "max", "-smp", cpus, "-m", "4G"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(plan.kernel.vmlinuz())
        .arg("-initrd")
        .arg(plan.initramfs)
        .args(["-append", CMDLINE])
        .arg("-chardev")
        .arg(format!("file,id=con,path={}", console.display()))
        .args(["-serial", "chardev:con"])
        .args(["-device", "virtio-rng-pci"])
        // The host's root, read-only for the guest (qemu refuses its writes); the paths of
        // the workspace and its target directory are the same inside.
        .arg("-virtfs")
        .arg(format!(
            "local,path=/,mount_tag={ROOT_TAG},security_model=none,readonly=on,multidevs=remap"
        ))
        // The run's own directory: the run script in, the results out. mapped-xattr keeps
        // the guest's owners and modes in extended attributes, so the guest can make no
        // set-uid file or device node on the host.
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag={SHARE_TAG},security_model=mapped-xattr",
            share.display()
        ))
        .arg("-chardev")
        .arg(format!(
            "socket,id=chrtpm,path={}",
            tpm.join("sock").display()
        ))
        .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
        .args(["-device", "tpm-tis,tpmdev=tpm0"]);
    // TCG only: KVM hangs on this project's machines. The instruction counter needs one
    // host thread; `sleep=off` lets an idle guest's clock jump ahead at once.
    match plan.icount {
        None => cmd.args(["-accel", "tcg,thread=multi"]),
        Some(shift) => cmd
            .args(["-accel", "tcg,thread=single", "-icount"])
            .arg(format!("shift={shift},sleep=off")),
    };
    cmd
}

fn start_swtpm(dir: &Path) -> Result<Owned> {
    let sock = dir.join("sock");
    let mut swtpm = Owned::spawn(
        Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", sock.display()))
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("swtpm.log"))?)
            .stderr(fs::File::create(dir.join("swtpm.err"))?),
        "swtpm (install swtpm: cargo xtask setup)",
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        if let Some(status) = swtpm.child.try_wait()? {
            bail!(
                "swtpm ended ({status}): {}",
                fs::read_to_string(dir.join("swtpm.err")).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!("swtpm made no control socket within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(swtpm)
}

/// Prints each test binary of the guest as it finishes.
fn report_progress(name: &str, out: &Path, plan: &Plan, reported: &mut Vec<PathBuf>) {
    for mode in plan.modes {
        for (test, _) in plan.tests {
            let rc = out.join(mode).join(format!("{test}.rc"));
            if reported.contains(&rc) || !rc.exists() {
                continue;
            }
            let code = fs::read_to_string(&rc).unwrap_or_default();
            let output =
                fs::read_to_string(out.join(mode).join(format!("{test}.out"))).unwrap_or_default();
            let results: Vec<&str> = output
                .lines()
                .filter(|l| l.starts_with("test result:"))
                .collect();
            eprintln!(
                "xtask vm: {name} {mode} {test}: exit {} {}",
                code.trim(),
                results.join(" | ")
            );
            reported.push(rc);
        }
    }
}

/// Copies the console, qemu's messages, the run script and the guest's results to
/// `plan.logs` (replacing an earlier run's).
fn keep_logs(plan: &Plan, tmp: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(&plan.logs);
    fs::create_dir_all(&plan.logs)?;
    for (from, to) in [
        ("console.log", "console.log"),
        ("qemu.log", "qemu.log"),
        ("tpm/swtpm.err", "swtpm.log"),
        ("share/run.sh", "run.sh"),
    ] {
        let _ = fs::copy(tmp.join(from), plan.logs.join(to));
    }
    copy_dir(&tmp.join("share/out"), &plan.logs.join("out"))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Writes the console's bytes past `from` to stderr; returns the new end.
fn echo_new(console: &Path, from: u64) -> u64 {
    let Ok(mut f) = fs::File::open(console) else {
        return from;
    };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
        return from;
    }
    let _ = std::io::stderr().write_all(&buf);
    from + buf.len() as u64
}

/// The script the guest runs as PID 1 once its root is the host's (read-only, under an
/// overlay) and the initramfs has mounted what the tests need: optionally bpftool's feature
/// probe, then per mode the agent's `probe`
/// and each test binary, each result written to the share as soon as it is known.
fn run_script(plan: &Plan) -> Result<String> {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let mut s = format!(
        "#!/bin/sh\n\
         # Written by `cargo xtask vm-test` for one guest (kernel {name}); run by the guest as PID 1.\n\
         OUT={SHARE_DIR}/out\n\
         AGENT={agent}\n\
         TESTS_DIR={tests_dir}\n\
         FEATURE_PROBE={feature_probe}\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         export HOME=/root LANG=C.UTF-8\n\
         unset TERM\n",
        name = plan.kernel.suite.name,
        agent = q(plan.agent),
        tests_dir = q(plan.tests_dir),
        feature_probe = if plan.feature_probe { "yes" } else { "no" },
    );
    // Passed through as `cargo test` would see them: under CI=true a missing precondition
    // fails instead of skipping; RUST_BACKTRACE shapes a failure's output.
    for var in ["CI", "RUST_BACKTRACE"] {
        if let Ok(value) = std::env::var(var) {
            s.push_str(&format!("export {var}={}\n", shell_quote(&value)));
        }
    }
    s.push_str(RUN_BODY);
    for mode in plan.modes {
        s.push_str(&format!("run_mode {}\n", shell_quote(mode)));
        for (test, exe) in plan.tests {
            s.push_str(&format!(
                "run_test {} {} {}\n",
                shell_quote(mode),
                shell_quote(test),
                q(exe)
            ));
        }
    }
    if let Some(bench) = plan.bench {
        let modes: Vec<&str> = plan.modes.iter().map(String::as_str).collect();
        let knobs = bench_knobs()?;
        s.push_str(&format!(
            "run_bench {} {} {}\n",
            q(bench),
            shell_quote(&modes.join(" ")),
            shell_quote(&knobs.join(" "))
        ));
    }
    s.push_str("finish\n");
    Ok(s)
}

/// The benchmark script's counts passed on from the host's environment when set.
const BENCH_COUNTS: [&str; 2] = ["PAIRS", "OPENS"];

/// The benchmark script's knobs from the host's environment, as `NAME=value` words the
/// guest's shell can split as they are: the counts, and `BASE_AGENT`, a baseline agent
/// binary measured beside this build's in the same run (an absolute path without spaces,
/// which the guest sees through the host's root).
fn bench_knobs() -> Result<Vec<String>> {
    let mut knobs: Vec<String> = BENCH_COUNTS
        .iter()
        .filter_map(|k| {
            Some(format!(
                "{k}={}",
                std::env::var(k).ok()?.parse::<u64>().ok()?
            ))
        })
        .collect();
    if let Ok(base) = std::env::var("BASE_AGENT") {
        let path = Path::new(&base);
        if !path.is_absolute() || !path.is_file() || base.contains(char::is_whitespace) {
            bail!("BASE_AGENT={base:?}: not an absolute path to a file, without spaces");
        }
        knobs.push(format!("BASE_AGENT={base}"));
    }
    Ok(knobs)
}

const RUN_BODY: &str = r#"
say() { echo "sensor-vm: $*"; }
if [ "$FEATURE_PROBE" = yes ] && command -v bpftool > /dev/null; then
    say "bpftool feature probe kernel"
    bpftool feature probe kernel > "$OUT/features.txt" 2>&1
    grep -E "program_type (kprobe|tracepoint|raw_tracepoint|tracing|lsm) " "$OUT/features.txt"
fi

run_mode() {
    mkdir -p "$OUT/$1"
    say "mode $1: sensor-agent probe --probe-mode $1"
    # stdout: a `PROBE MODE HOOKS` line per probe; stderr: why stronger ways were refused,
    # or, failing, why the forced one was.
    "$AGENT" probe --probe-mode "$1" > "$OUT/$1/probe.out" 2> "$OUT/$1/probe.err"
    rc=$?
    [ "$rc" = 0 ] || cat "$OUT/$1/probe.err" >> "$OUT/$1/probe.out"
    echo $rc > "$OUT/$1/probe.rc"
    cat "$OUT/$1/probe.out" "$OUT/$1/probe.err"
}

run_test() {
    # run_test MODE NAME EXECUTABLE: as `cargo test` runs it (from the package's directory),
    # output to the console and the share; the exit status written last.
    say "mode $1: $2"
    read -r start _ < /proc/uptime
    {
        # Tests that need a guest's devices (tpm_device) are ignored on hosts, run here.
        (cd "$TESTS_DIR" && export SENSOR_TEST_PROBE_MODE="$1" && exec "$3" --include-ignored 2>&1)
        echo $? > "$OUT/$1/$2.rc.partial"
    } | tee "$OUT/$1/$2.out"
    read -r end _ < /proc/uptime
    echo "$start $end" > "$OUT/$1/$2.time"
    mv "$OUT/$1/$2.rc.partial" "$OUT/$1/$2.rc"
}

run_bench() {
    # run_bench SCRIPT MODES KNOBS: the script's figures to the console and the share.
    say "bench: $1 $3"
    env $3 MODES="$2" bash "$1" 2>&1 | tee "$OUT/bench.out"
}

finish() {
    echo done > "$OUT/done"
    sync
    say "done"
    echo o > /proc/sysrq-trigger
    sleep 60
}

"#;

/// `'text'` for sh.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A child in a process group of its own, killed with its group when dropped.
struct Owned {
    child: Child,
}

impl Owned {
    fn spawn(cmd: &mut Command, what: &str) -> Result<Owned> {
        cmd.process_group(0);
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe calls are allowed: it makes the prctl syscall alone, which
        // allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(|| {
                set_parent_process_death_signal(Some(Signal::KILL))?;
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Owned { child })
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // The group is the child's own (process_group(0)), so its pid is the group's id.
        let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static CAUGHT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    CAUGHT.store(true, Ordering::SeqCst);
}

/// While alive, SIGINT and SIGTERM set a flag the wait loop reads, instead of ending xtask
/// before its guards have killed qemu and swtpm and removed the temporary directory.
struct SignalGuard {
    old: [libc::sighandler_t; 2],
}

impl SignalGuard {
    fn catch() -> SignalGuard {
        CAUGHT.store(false, Ordering::SeqCst);
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: `on_signal` only stores to an atomic, which is async-signal-safe; the
        // previous handlers are put back by `Drop`.
        let old = unsafe {
            [
                libc::signal(libc::SIGINT, handler),
                libc::signal(libc::SIGTERM, handler),
            ]
        };
        SignalGuard { old }
    }

    fn caught(&self) -> bool {
        CAUGHT.load(Ordering::SeqCst)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // SAFETY: puts back the handlers `catch` replaced, as they were.
        unsafe {
            libc::signal(libc::SIGINT, self.old[0]);
            libc::signal(libc::SIGTERM, self.old[1]);
        }
        if CAUGHT.load(Ordering::SeqCst) {
            // The user asked xtask to stop: after the guards ran, stop as the signal would.
            eprintln!("xtask vm: interrupted; qemu and swtpm stopped");
        }
    }
}

/// Whether the last guest's wait ended on SIGINT or SIGTERM (the lane then stops).
pub fn interrupted() -> bool {
    CAUGHT.load(Ordering::SeqCst)
}

/// Removes the temporary directories of earlier runs whose xtask is gone (killed before its
/// guards could run).
pub fn remove_stale_dirs() {
    let Ok(dir) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in dir.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("sensor-vm-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
