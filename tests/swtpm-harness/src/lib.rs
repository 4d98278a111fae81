//! A throw-away software TPM (swtpm over TCP) for tests and benches, so they exercise the
//! real TSS stack instead of a mock. A crate of its own, a dev-dependency only: nothing the
//! agent or `sensorctl` ships can start or drive a TPM emulator.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Why swtpm or a tpm2-tools command could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long swtpm gets to open its port.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `swtpm socket --tpm2` on 127.0.0.1; killed on drop.
pub struct Swtpm {
    child: Option<Child>,
    state_dir: PathBuf,
    port: u16,
}

impl Swtpm {
    /// Starts swtpm with its state in `state_dir` on a free port pair (server P, control P+1).
    pub fn start(state_dir: &Path) -> Result<Swtpm> {
        let mut last = None;
        // Ports are probed then released, so another process may grab one; retry.
        for _ in 0..10 {
            let port = free_port_pair()?;
            let mut s = Swtpm {
                child: None,
                state_dir: state_dir.to_path_buf(),
                port,
            };
            match s.spawn() {
                Ok(()) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error("swtpm did not start".into())))
    }

    /// TCTI string for this instance.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the TPM vanishes mid-flight, as with a crash (no orderly shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and state dir: a TPM Reset (Startup CLEAR), as at
    /// reboot.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // The old listener may linger briefly.
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// SIGSTOP / SIGCONT: a TPM that accepts connections but never answers.
    pub fn pause(&self, paused: bool) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| Error("swtpm not running".into()))?;
        let sig = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .map_err(|e| Error(format!("kill {sig}: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error(format!("kill {sig} {pid} failed")))
        }
    }

    /// Runs a tpm2-tools command (`args[0]`, e.g. `tpm2_pcrextend`) against this instance, as
    /// a local root would; its standard output, or its error output as the error.
    pub fn tpm2(&self, args: &[&str]) -> Result<String> {
        let (tool, rest) = args
            .split_first()
            .ok_or_else(|| Error("no tpm2-tools command".into()))?;
        let out = Command::new(tool)
            .args(["-T", &self.tcti()])
            .args(rest)
            .output()
            .map_err(|e| Error(format!("{tool}: {e} (run `cargo xtask setup`)")))?;
        if !out.status.success() {
            return Err(Error(format!(
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn spawn(&mut self) -> Result<()> {
        let (p, c) = (self.port, self.port + 1);
        let mut child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", self.state_dir.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={p},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={c},bindaddr=127.0.0.1"))
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                Error(if e.kind() == std::io::ErrorKind::NotFound {
                    "swtpm is not installed: run `cargo xtask setup` (Debian: apt-get install swtpm swtpm-tools)".to_string()
                } else {
                    format!("cannot run swtpm: {e}")
                })
            })?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error(format!("swtpm exited at start: {status}")));
            }
            // Ready once this swtpm holds both listeners. A connection alone could reach
            // another process that took one of the probed ports meanwhile, while this swtpm,
            // unable to bind it, is exiting.
            if listens(child.id(), p) && listens(child.id(), c) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error("swtpm did not open its port".into()));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // A paused swtpm ignores nothing but SIGKILL, which is what kill() sends anyway;
            // resume first so it is not left stopped if the kill fails.
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        self.kill();
    }
}

fn free_port_pair() -> Result<u16> {
    // Ports this process handed out before are never handed out again: a test that kills its
    // swtpm and restarts it on the same ports (a TPM reset) leaves them free meanwhile, and
    // another test running in parallel must not take them.
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error(format!("no free port: {e}")))?;
        let p = a.port();
        let taken = |port: u16| given.contains(&port);
        if p < u16::MAX
            && !taken(p)
            && !taken(p + 1)
            && TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        {
            given.insert(p);
            given.insert(p + 1);
            return Ok(p);
        }
    }
    Err(Error("no free port pair".into()))
}

/// Whether process `pid` holds a TCP socket listening on `port` (IPv4), read from
/// `/proc/net/tcp` and the process's descriptors.
fn listens(pid: u32, port: u16) -> bool {
    const LISTEN: &str = "0A";
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let sockets: std::collections::HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let wanted = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 9
            && fields[1].ends_with(&wanted)
            && fields[3] == LISTEN
            && sockets.contains(fields[9])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readiness is judged by who holds the listener, not by whether a connection succeeds.
    #[test]
    fn a_listener_is_known_by_its_owner() {
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        assert!(listens(std::process::id(), port));
        drop(held);
        assert!(!listens(std::process::id(), port));
        // pid 1 does not hold this test's listener.
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        assert!(!listens(1, held.local_addr().expect("addr").port()));
    }
}
