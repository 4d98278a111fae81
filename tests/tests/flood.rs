//! Floods (docs/probes.md, "Floods"): an unprivileged user hammering credential files it may
//! read costs little and blinds no one else. Repeats of one access are folded in the kernel
//! into counts; what one identity sends beyond its budget is its own loss, counted per
//! identity, and never pushes out another identity's events. The real agent, real probes,
//! real opens by a real unprivileged uid. Needs root (as CI runs).

use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use rustix::process::Signal;
use sensor_tests::{test_dir, trigger_bin, Agent, TestCgroup};
use serde_json::Value;

/// A uid with no privilege, no login and no other process: the budget counts per uid, so a
/// uid that anything else on the host also runs as (another test's flood, `nobody`) would
/// blur the count. `offset` keeps the tests of this file apart.
fn flooder_uid(offset: u32) -> u32 {
    50_000 + (std::process::id() % 5_000) * 2 + offset
}

/// What a flood left behind, per process: events sent, and accesses folded into repeats.
#[derive(Default, Debug)]
struct Seen {
    sent: BTreeMap<u32, u64>,
    folded: BTreeMap<u32, u64>,
    /// Loss counts by source, then kind.
    losses: BTreeMap<String, BTreeMap<String, u64>>,
    events: Vec<Value>,
}

/// Every event until `quiet` passes without one.
fn drain(agent: &Agent, quiet: Duration) -> Seen {
    let mut seen = Seen::default();
    while let Some(e) = agent.try_wait_for(|_| true, quiet) {
        if e["kind"] == "loss" {
            let counts = seen
                .losses
                .entry(e["loss"]["source"].as_str().unwrap_or("").to_owned())
                .or_default();
            for (kind, n) in e["loss"]["counts"].as_object().into_iter().flatten() {
                *counts.entry(kind.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        } else if let Some(pid) = e["process"]["pid"].as_u64() {
            let pid = pid as u32;
            match e["detail"]["repeated"]["count"].as_u64() {
                Some(n) => *seen.folded.entry(pid).or_default() += n,
                None => *seen.sent.entry(pid).or_default() += 1,
            }
        }
        seen.events.push(e);
    }
    seen
}

/// A directory of `n` watched token files owned by `uid`, as its `~/.aws/sso/cache`.
fn token_dir(base: &Path, n: usize, uid: u32) -> std::path::PathBuf {
    let dir = base.join("cache");
    std::fs::create_dir(&dir).expect("mkdir cache");
    for i in 0..n {
        std::fs::write(dir.join(format!("token-{i:05}")), "t").expect("write token");
    }
    Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(&dir)
        .status()
        .expect("chown");
    dir
}

/// `openloop COUNT PATH` as `uid`; returns its pid once it has finished.
fn flood_as(uid: u32, count: u64, path: &Path) -> u32 {
    let mut child = Command::new(trigger_bin().with_file_name("openloop"))
        .arg(count.to_string())
        .arg(path)
        .uid(uid)
        .gid(uid)
        .stdout(Stdio::null())
        .spawn()
        .expect("openloop as the flooder");
    let pid = child.id();
    assert!(child.wait().expect("openloop").success());
    pid
}

/// The attack: with the agent unable to drain (stopped, the worst case), an
/// unprivileged user opens 3,000 of its own watched tokens ten times each while root reads a
/// password database from 20 processes at once. Every root read arrives; the flooder's
/// surplus is its own counted loss; nothing is lost in the ring buffer; and every one of the
/// flooder's opens is accounted for: sent, folded into a repeat, or counted as its loss.
#[test]
fn an_unprivileged_flood_loses_only_its_own_events() {
    let (_tmp, dir) = test_dir("sensor-flood-");
    let shadow = dir.join("shadow");
    std::fs::write(&shadow, "root:x:\n").expect("write shadow");
    let uid = flooder_uid(0);
    let tokens = token_dir(&dir, 3000, uid);
    let config = format!(
        "[agent]\nring_buffer_bytes = 262144\nbudget_per_second = 20\nbudget_burst = 100\n\n\
         [[watch]]\npath = \"{}\"\nkind = \"password-db\"\n\n\
         [[watch]]\npath = \"{}/*\"\nkind = \"cloud\"\n",
        shadow.display(),
        tokens.display()
    );
    let agent = Agent::start(&config);
    let root_cgroup = TestCgroup::create("sensor-flood-test/root-reader");

    agent.signal(Signal::STOP);
    const OPENS: u64 = 30_000;
    let flooder = flood_as(uid, OPENS, &tokens);
    let mut readers = Vec::new();
    for _ in 0..20 {
        let mut cmd = Command::new(trigger_bin());
        cmd.args(root_cgroup.trigger_args())
            .args(["open", shadow.to_str().expect("utf-8")])
            .stdout(Stdio::piped());
        readers.push(cmd.spawn().expect("reader"));
    }
    let readers: Vec<u32> = readers
        .into_iter()
        .map(|child| {
            let pid = child.id();
            let out = child.wait_with_output().expect("reader");
            assert!(out.status.success(), "reader: {out:?}");
            pid
        })
        .collect();
    agent.signal(Signal::CONT);

    let seen = drain(&agent, Duration::from_secs(4));
    let read_shadow = |pid: u32| {
        seen.events.iter().any(|e| {
            e["kind"] == "file_open"
                && e["process"]["pid"] == pid
                && e["file"]["path"] == shadow.to_str().unwrap_or("")
        })
    };
    let missing: Vec<_> = readers.iter().filter(|&&p| !read_shadow(p)).collect();
    assert!(
        missing.is_empty(),
        "root's reads of {} from pids {missing:?} did not arrive; losses: {:?}",
        shadow.display(),
        seen.losses
    );
    assert!(
        !seen.losses.contains_key("kernel_ringbuf"),
        "the ring buffer lost events: {:?}",
        seen.losses
    );
    let own_loss = seen
        .losses
        .get(&format!("budget:uid={uid}"))
        .and_then(|c| c.get("file_open"))
        .copied()
        .unwrap_or(0);
    assert!(
        own_loss > 0,
        "3,000 distinct opens cannot fit a budget of 100: losses {:?}",
        seen.losses
    );
    let sent = seen.sent.get(&flooder).copied().unwrap_or(0);
    let folded = seen.folded.get(&flooder).copied().unwrap_or(0);
    let others: Vec<_> = seen
        .events
        .iter()
        .filter(|e| e["process"]["uid"] == uid && e["process"]["pid"] != flooder)
        .collect();
    let losses: Vec<_> = seen.events.iter().filter(|e| e["kind"] == "loss").collect();
    assert_eq!(
        sent + folded + own_loss,
        OPENS,
        "sent {sent} + folded {folded} + lost {own_loss}; others {others:?}; losses {losses:?}"
    );
}

/// One process re-reading its token in a tight loop: a handful of events, each repeat
/// counted exactly, and first/last times that bound them.
#[test]
fn repeated_opens_fold_into_counted_repeats() {
    let (_tmp, dir) = test_dir("sensor-flood-");
    let uid = flooder_uid(1);
    let tokens = token_dir(&dir, 1, uid);
    let token = tokens.join("token-00000");
    let config = format!(
        "[[watch]]\npath = \"{}/*\"\nkind = \"cloud\"\n",
        tokens.display()
    );
    let agent = Agent::start(&config);
    const OPENS: u64 = 20_000;
    let pid = flood_as(uid, OPENS, &token);
    let seen = drain(&agent, Duration::from_secs(3));
    let sent = seen.sent.get(&pid).copied().unwrap_or(0);
    let folded = seen.folded.get(&pid).copied().unwrap_or(0);
    assert_eq!(sent + folded, OPENS, "sent {sent} + folded {folded}");
    assert!(sent >= 1 && folded > 0, "sent {sent}, folded {folded}");
    assert!(seen.losses.is_empty(), "losses: {:?}", seen.losses);
    for e in seen
        .events
        .iter()
        .filter(|e| e["process"]["pid"] == pid && !e["detail"].is_null())
    {
        let r = &e["detail"]["repeated"];
        assert_eq!(e["kind"], "file_open", "{e}");
        assert_eq!(e["file"]["path"], token.to_str().unwrap_or(""), "{e}");
        assert_eq!(e["file"]["access"], "read", "{e}");
        assert_eq!(e["process"]["uid"], uid, "{e}");
        let (first, last) = (r["first"].as_str(), r["last"].as_str());
        assert!(first.is_some() && first <= last, "{e}");
        assert_eq!(e["time"].as_str(), last, "{e}");
    }
}
