//! Query latency on a large store: generates one (default 10 million records over 30 days,
//! ending now) unless DIR already holds at least that many, then times path + time queries
//! the way `sensorctl events --path GLOB --since ...` runs them (`Store::query` with the
//! glob's literal prefix, the full glob checked on each decoded record).
//!
//! `cargo run --release -p sensor-store --example query_store -- DIR [RECORDS]`
//!
//! The store takes about 5.5 GB for 10 million records; do not commit it. Figures go to
//! docs/performance.md ("Log").

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sensor_log::{Event, FileAccess, Identity, Kind, Process, Timestamp};
use sensor_store::{Filter, LogWriter, Store, WriterOptions};

const USERS: u64 = 200;
const HOME_FILES: [&str; 10] = [
    ".ssh/id_ed25519",
    ".ssh/id_rsa",
    ".ssh/authorized_keys",
    ".aws/credentials",
    ".aws/config",
    ".kube/config",
    ".docker/config.json",
    ".git-credentials",
    ".netrc",
    ".pgpass",
];
const SYSTEM_FILES: [&str; 10] = [
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/kubernetes/admin.conf",
    "/var/run/secrets/kubernetes.io/serviceaccount/token",
    "/etc/ssl/private/server.key",
    "/etc/security/opasswd",
    "/etc/pam.d/sshd",
];
const DAY_NS: u64 = 86_400_000_000_000;
/// Matches in a first page (`sensorctl events --limit`).
const PAGE: usize = 100;

/// xorshift64*: deterministic, good enough for a workload mix.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn event(rng: &mut Rng, pid: u32) -> Event {
    // 30% system credential files, 70% a user's own files.
    let (path, user, human) = if rng.below(10) < 3 {
        (
            SYSTEM_FILES[rng.below(10) as usize].to_string(),
            "root".to_string(),
            false,
        )
    } else {
        let u = rng.below(USERS);
        (
            format!("/home/user{u}/{}", HOME_FILES[rng.below(10) as usize]),
            format!("user{u}"),
            true,
        )
    };
    Event {
        kind: Kind::FileOpen,
        time: String::new(),
        ok: true,
        errno: None,
        process: Some(Process {
            pid,
            exe: "/usr/bin/ssh".to_string(),
            comm: "ssh".to_string(),
            cmdline: format!("ssh -F {path} host"),
            ancestors: vec!["bash".to_string(), "sshd".to_string()],
            ..Process::default()
        }),
        identity: Some(Identity {
            user,
            unit: Some("session-3.scope".to_string()),
            human,
            human_reason: "login uid set".to_string(),
            ..Identity::default()
        }),
        file: Some(FileAccess {
            requested: path.clone(),
            path,
            kind: "credential".to_string(),
            access: "read".to_string(),
            flags: "O_RDONLY".to_string(),
            syscall: "openat".to_string(),
            dev: Some("8:1".to_string()),
            inode: Some(1234),
            owner: None,
            compat: false,
        }),
        target: None,
        syscall: None,
        loss: None,
        detail: None,
    }
}

fn generate(dir: &Path, records: u64) -> Result<(), Box<dyn std::error::Error>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let start = now - 30 * DAY_NS;
    let step = 30 * DAY_NS / records;
    let options = WriterOptions {
        batch_interval: Duration::from_secs(3600),
        ..WriterOptions::default()
    };
    let mut writer = LogWriter::open(dir, options)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut pid = 1000;
    let began = Instant::now();
    for i in 0..records {
        // Bursts: a process makes 1..=32 accesses, then another one takes over.
        if rng.below(16) == 0 {
            pid = 1000 + u32::try_from(rng.below(30_000))?;
        }
        let mut e = event(&mut rng, pid);
        let at = Timestamp {
            wall_ns: start + i * step,
            // Monotonic time advances slowly so that batches close by count (1024), not by
            // the interval, as under a sustained load.
            mono_ns: i,
        };
        e.time = sensor_log::time::rfc3339(at.wall_ns);
        writer.append(e, at.wall_ns, at.mono_ns)?;
        writer.seal_due(at)?;
        if i % 1_000_000 == 999_999 {
            eprintln!(
                "generated {} records in {:.0} s",
                i + 1,
                began.elapsed().as_secs_f64()
            );
        }
    }
    writer.close(Timestamp {
        wall_ns: now,
        mono_ns: records,
    })?;
    Ok(())
}

/// Shell-style match where `*` stands for any run of characters other than `/`.
fn glob_match(pattern: &[u8], path: &[u8]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((b'*', rest)) => (0..=path.len())
            .take_while(|&n| n == 0 || path[n - 1] != b'/')
            .any(|n| glob_match(rest, &path[n..])),
        Some((c, rest)) => path.first() == Some(c) && glob_match(rest, &path[1..]),
    }
}

/// The literal prefix of a glob, which `sensorctl` hands to the store as `path_prefix`.
fn literal_prefix(pattern: &str) -> String {
    pattern.chars().take_while(|&c| c != '*').collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: query_store DIR [RECORDS]")?);
    let records: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let existing = Store::open_read_only(&dir)
        .and_then(|s| s.record_count())
        .unwrap_or(0);
    if existing < records {
        generate(&dir, records)?;
    }
    let store = Store::open_read_only(&dir)?;
    println!("store: {} records", store.record_count()?);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let queries: [(&str, u64); 7] = [
        ("/home/user7/.ssh/*", DAY_NS),
        ("/etc/shadow", 3_600_000_000_000),
        ("/etc/ssh/ssh_host_*_key", DAY_NS),
        ("/home/user42/.aws/credentials", 7 * DAY_NS),
        ("/home/user7/.ssh/*", 30 * DAY_NS),
        ("/home/*/.ssh/id_*", DAY_NS),
        ("/home/*/.ssh/id_*", 30 * DAY_NS),
    ];
    // ONLY=i runs just the i-th query (for profiling).
    let only: Option<usize> = std::env::var("ONLY").ok().and_then(|v| v.parse().ok());
    for (i, (pattern, ago)) in queries.into_iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let filter = Filter {
            since_ns: Some(now - ago),
            path_prefix: Some(literal_prefix(pattern)),
            ..Filter::default()
        };
        // The first page as `sensorctl events` prints it: PAGE matches, oldest first and
        // newest first (`--limit`), the visitor stopping there.
        let mut first_page = [Vec::new(), Vec::new()];
        for (order, times) in first_page.iter_mut().enumerate() {
            for _ in 0..5 {
                let began = Instant::now();
                let mut page = 0;
                let visit = |r: sensor_log::Record| {
                    if let sensor_log::Body::Event(e) = &r.body {
                        if e.file
                            .as_ref()
                            .is_some_and(|f| glob_match(pattern.as_bytes(), f.path.as_bytes()))
                        {
                            page += 1;
                        }
                    }
                    Ok(page < PAGE)
                };
                if order == 0 {
                    store.query(&filter, visit)?;
                } else {
                    store.query_newest_first(&filter, visit)?;
                }
                times.push(began.elapsed());
            }
            times.sort();
        }
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..5 {
            let began = Instant::now();
            found = 0;
            store.query(&filter, |r| {
                if let sensor_log::Body::Event(e) = &r.body {
                    if e.file
                        .as_ref()
                        .is_some_and(|f| glob_match(pattern.as_bytes(), f.path.as_bytes()))
                    {
                        found += 1;
                    }
                }
                Ok(true)
            })?;
            times.push(began.elapsed());
            if began.elapsed() > Duration::from_secs(2) {
                // A whole answer this large is timed once.
                break;
            }
        }
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "--path '{pattern}' --since {}h: {found} records, min {:.1} ms, median {:.1} ms; first {PAGE}: median {:.1} ms oldest first, {:.1} ms newest first",
            ago / 3_600_000_000_000,
            times[0].as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3,
            first_page[0][2].as_secs_f64() * 1e3,
            first_page[1][2].as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
