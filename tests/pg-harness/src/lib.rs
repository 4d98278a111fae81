//! A throw-away PostgreSQL server for tests and benches: Debian's own server binaries
//! (`cargo xtask setup` installs the `postgresql` package), a data directory in a temporary
//! directory, a free port on 127.0.0.1 and a Unix socket beside the data, stopped and removed
//! on drop. Real PostgreSQL, so tests of a store exercise its transactions and constraints.
//!
//! `initdb` and `postgres` refuse to run as root: as root, the server runs as the `postgres`
//! user, which owns the temporary directory; otherwise as the current user. Durability stays
//! on (`fsync`): tests that kill a process must see what a real server keeps.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Why a server could not be started, or a client command failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The superuser role the tests connect as (no password: `trust` on the socket and 127.0.0.1).
pub const SUPERUSER: &str = "sensor_test";

/// Where Debian keeps a version's server binaries; the newest installed is used.
const DEBIAN_PREFIX: &str = "/usr/lib/postgresql";

/// A running PostgreSQL server; stopped (immediate mode) and its files removed on drop.
pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    run_as: Option<&'static str>,
}

impl PgServer {
    /// Initialises a cluster in a new temporary directory and starts it on a free port.
    pub fn start() -> Result<PgServer> {
        let bin = server_bin()?;
        let run_as = rustix::process::geteuid().is_root().then_some("postgres");
        let dir = tempfile::Builder::new()
            .prefix("pg-harness")
            .tempdir()
            .map_err(|e| Error(format!("temporary directory: {e}")))?;
        if let Some(user) = run_as {
            run(
                Command::new("chown")
                    .arg(format!("{user}:"))
                    .arg(dir.path()),
                "chown",
            )?;
        }
        let mut server = PgServer {
            bin,
            dir,
            port: 0,
            run_as,
        };
        let data = server.data();
        server.as_server(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        // The port is probed then released, so another process may take it first: retry.
        let mut last = None;
        for _ in 0..3 {
            server.port = free_port()?;
            match server.pg_ctl_start() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error("postgres did not start".into())))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A libpq-style connection string for database `postgres` over TCP on 127.0.0.1.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname=postgres",
            self.port
        )
    }

    /// Runs `sql` with `psql` over the socket and returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> Result<String> {
        let out = run(
            Command::new("psql")
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .args(["-h", path_str(self.socket_dir())?])
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    SUPERUSER,
                    "-d",
                    "postgres",
                ])
                .args(["-c", sql]),
            "psql",
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            path_str(self.socket_dir())?
        );
        self.as_server(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-w",
                "-t",
                "30",
                "-o",
                &options,
                "start",
            ],
        )
        .map(drop)
        .map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            Error(format!("{e}; server log: {}", log.trim()))
        })
    }

    /// Runs a server binary, as the server's user when we are root.
    fn as_server(&self, tool: &str, args: &[&str]) -> Result<Output> {
        let program = self.bin.join(tool);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        run(cmd.args(args), tool)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Ok(data) = path_str(&self.data()) {
            let _ = self.as_server("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"]);
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn server_bin() -> Result<PathBuf> {
    let missing = || {
        Error(format!(
            "PostgreSQL server binaries not found under {DEBIAN_PREFIX}: run `cargo xtask setup` (Debian: apt-get install postgresql)"
        ))
    };
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_PREFIX)
        .map_err(|_| missing())?
        .filter_map(|e| {
            let path = e.ok()?.path();
            let version = path.file_name()?.to_str()?.parse().ok()?;
            let bin = path.join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(missing)
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error(format!("no free port: {e}")))
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| Error(format!("{} is not UTF-8", path.display())))
}

/// Runs `cmd`; a failure names the tool and carries its stderr.
fn run(cmd: &mut Command, tool: &str) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error(format!("cannot run {tool}: {e}")))?;
    if !out.status.success() {
        return Err(Error(format!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}
