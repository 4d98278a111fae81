//! Changes made by rename, unlink and link (issue 10): replacing a watched file by renaming
//! another over it (`sed -i`, `visudo`, an editor's save), exchanging it with a decoy,
//! moving it or its directory away, unlinking it and linking it elsewhere are each an event
//! naming the watched path; unlinking thousands of unrelated files is not, and costs no
//! budget. The real agent with its real probes, real syscalls (the `trigger` helper), events
//! read back from the agent's output. Needs root (as CI runs).

use std::{
    os::unix::process::CommandExt, path::Path, process::Command, sync::OnceLock, time::Duration,
};

use sensor_tests::{is, is_root, s, trigger, write_secret, Agent, Fixture};
use serde_json::Value;

const WATCHED: [&str; 7] = [
    "sed-target",
    "swap-target",
    "moved-away",
    "unlinked",
    "linked",
    "compat-target",
    "moved-back",
];

/// One agent for the file. Each test changes files of its own, so the tests can run side
/// by side.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        Fixture::start("sensor-rename-", |dir| {
            for name in WATCHED {
                write_secret(&dir.join(name));
            }
            std::fs::create_dir(dir.join("sshdir")).expect("mkdir sshdir");
            write_secret(&dir.join("sshdir/id_ed25519"));
            std::fs::create_dir(dir.join("elsewhere")).expect("mkdir elsewhere");
            let mut config = String::from("default_watches = false\n");
            for name in WATCHED {
                config.push_str(&format!(
                    "[[watch]]\npath = \"{}/{name}\"\nkind = \"ssh-key\"\nowner = \"test-team\"\n",
                    dir.display()
                ));
            }
            config.push_str(&format!(
                "[[watch]]\npath = \"{}/sshdir/id_*\"\nkind = \"ssh-key\"\n",
                dir.display()
            ));
            config
        })
    })
}

/// The `kind` event of `pid`.
fn event(agent: &Agent, kind: &str, pid: u32) -> Value {
    agent.wait_for(&format!("{kind} of pid {pid}"), is(kind, pid))
}

/// Checks what every path-change event says: the watched path, its rule's kind and owner,
/// the acting process, success.
fn assert_names(e: &Value, watched: &Path, pid: u32) {
    assert_eq!(e["file"]["path"], s(watched), "{e}");
    assert_eq!(e["file"]["kind"], "ssh-key", "{e}");
    assert_eq!(e["process"]["pid"], pid, "{e}");
    assert_eq!(e["ok"], true, "{e}");
    assert!(
        e["process"]["exe"]
            .as_str()
            .unwrap_or("")
            .ends_with("/trigger"),
        "{e}"
    );
}

/// `sed -i` writes a temporary file beside the watched one and renames it over it.
#[test]
fn a_file_renamed_over_a_watched_one_names_the_watched_path() {
    if !is_root() {
        return;
    }
    let f = fixture();
    let target = f.dir.join("sed-target");
    let temp = f.dir.join("sedAbC123");
    std::fs::write(&temp, "auth sufficient pam_permit.so\n").expect("write temp");
    let (pid, ret) = trigger(&["rename", s(&temp), s(&target)]);
    assert_eq!(ret, 0);
    let e = event(&f.agent, "file_rename", pid);
    assert_names(&e, &target, pid);
    assert_eq!(e["file"]["owner"], "test-team", "{e}");
    assert_eq!(e["file"]["syscall"], "rename", "{e}");
    assert_eq!(e["file"]["access"], "rename", "{e}");
    let change = &e["detail"]["path_change"];
    assert_eq!(change["from"], s(&temp), "{e}");
    assert_eq!(change["to"], s(&target), "{e}");
    assert_eq!(change["flags"], serde_json::json!([]), "{e}");
    // Exactly one event for the one call.
    f.agent.assert_none(
        "a second rename event",
        is("file_rename", pid),
        Duration::from_millis(300),
    );
}

#[test]
fn an_exchange_with_a_decoy_names_both() {
    if !is_root() {
        return;
    }
    let f = fixture();
    let target = f.dir.join("swap-target");
    let decoy = f.dir.join("elsewhere/decoy");
    std::fs::write(&decoy, "nothing\n").expect("write decoy");
    let (pid, ret) = trigger(&["renameat2-exchange", s(&target), s(&decoy)]);
    assert_eq!(ret, 0);
    let e = event(&f.agent, "file_rename", pid);
    assert_names(&e, &target, pid);
    assert_eq!(e["file"]["syscall"], "renameat2", "{e}");
    let change = &e["detail"]["path_change"];
    assert_eq!(change["from"], s(&target), "{e}");
    assert_eq!(change["to"], s(&decoy), "{e}");
    assert_eq!(
        change["flags"],
        serde_json::json!(["RENAME_EXCHANGE"]),
        "{e}"
    );
}

#[test]
fn a_watched_file_or_directory_moved_away_is_reported() {
    if !is_root() {
        return;
    }
    let f = fixture();
    let key = f.dir.join("moved-away");
    let away = f.dir.join("elsewhere/moved-away.bak");
    let (pid, ret) = trigger(&["rename", s(&key), s(&away)]);
    assert_eq!(ret, 0);
    let e = event(&f.agent, "file_rename", pid);
    assert_names(&e, &key, pid);
    assert_eq!(e["detail"]["path_change"]["to"], s(&away), "{e}");

    // And back: the name is watched again.
    let back = f.dir.join("moved-back");
    let parked = f.dir.join("elsewhere/parked");
    let (pid, ret) = trigger(&["rename", s(&back), s(&parked)]);
    assert_eq!(ret, 0);
    assert_names(&event(&f.agent, "file_rename", pid), &back, pid);
    let (pid, ret) = trigger(&["rename", s(&parked), s(&back)]);
    assert_eq!(ret, 0);
    let e = event(&f.agent, "file_rename", pid);
    assert_names(&e, &back, pid);
    assert_eq!(e["detail"]["path_change"]["from"], s(&parked), "{e}");

    // The whole directory, as `mv ~/.ssh ~/.ssh.old`.
    let dir = f.dir.join("sshdir");
    let old = f.dir.join("sshdir.old");
    let (pid, ret) = trigger(&["rename", s(&dir), s(&old)]);
    assert_eq!(ret, 0);
    let e = event(&f.agent, "file_rename", pid);
    assert_eq!(e["file"]["path"], s(&dir), "{e}");
    assert_eq!(e["process"]["pid"], pid, "{e}");
    assert_eq!(e["detail"]["path_change"]["to"], s(&old), "{e}");
}

#[test]
fn unlink_and_link_of_a_watched_file_are_reported() {
    if !is_root() {
        return;
    }
    let f = fixture();
    let gone = f.dir.join("unlinked");
    let (pid, ret) = trigger(&["unlink", s(&gone)]);
    assert_eq!(ret, 0);
    let e = event(&f.agent, "file_unlink", pid);
    assert_names(&e, &gone, pid);
    assert_eq!(e["file"]["access"], "unlink", "{e}");
    assert_eq!(e["detail"]["path_change"]["from"], s(&gone), "{e}");
    assert_eq!(e["detail"]["path_change"]["to"], Value::Null, "{e}");

    let key = f.dir.join("linked");
    let link = f.dir.join("elsewhere/innocent-name");
    let (pid, ret) = trigger(&["link", s(&key), s(&link)]);
    assert_eq!(ret, 0);
    let e = event(&f.agent, "file_link", pid);
    assert_names(&e, &key, pid);
    assert_eq!(e["detail"]["path_change"]["to"], s(&link), "{e}");
}

#[test]
fn a_compat_rename_is_reported_and_flagged() {
    if !is_root() {
        return;
    }
    let f = fixture();
    let target = f.dir.join("compat-target");
    let temp = f.dir.join("compat.tmp");
    std::fs::write(&temp, "x\n").expect("write temp");
    let (pid, ret) = trigger(&["compat-rename", s(&temp), s(&target)]);
    assert_eq!(ret, 0);
    let e = event(&f.agent, "file_rename", pid);
    assert_names(&e, &target, pid);
    assert_eq!(e["file"]["compat"], true, "{e}");
    assert_eq!(e["file"]["syscall"], "rename", "{e}");
}

/// Unrelated files unlinked by the thousand (`rm -rf` of a build tree) never reach user
/// space: with a budget a tenth of their number, none of them is counted as a loss, and the
/// one watched file removed among them is reported.
#[test]
fn unrelated_unlinks_are_dropped_in_the_kernel() {
    if !is_root() {
        return;
    }
    /// The unprivileged user that removes the tree, so its budget is its own.
    const USER: u32 = 65534;
    const JUNK: usize = 10_000;
    let tmp = tempfile::Builder::new()
        .prefix("sensor-rm-")
        .tempdir()
        .expect("tempdir");
    let base = tmp.path().canonicalize().expect("canonical");
    let tree = base.join("tree");
    for sub in 0..10 {
        let dir = tree.join(format!("obj-{sub}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..JUNK / 10 {
            std::fs::write(dir.join(format!("f-{i}.o")), "").expect("write junk");
        }
    }
    std::fs::create_dir(tree.join("keys")).expect("mkdir keys");
    let key = tree.join("keys/id_deploy");
    write_secret(&key);
    let status = Command::new("chown")
        .args(["-R", &format!("{USER}:{USER}"), s(&base)])
        .status()
        .expect("chown");
    assert!(status.success());
    let config = format!(
        "default_watches = false\n[agent]\nbudget_per_second = 1000\nbudget_burst = 1000\n\
         [[watch]]\npath = \"{}/keys/id_*\"\nkind = \"ssh-key\"\n",
        tree.display()
    );
    let agent = Agent::start(&config);
    let rm = Command::new("rm")
        .arg("-rf")
        .arg(&tree)
        .uid(USER)
        .gid(USER)
        .status()
        .expect("rm -rf");
    assert!(rm.success(), "rm -rf failed: {rm}");
    let e = agent.wait_for("the watched unlink", |e| {
        e["kind"] == "file_unlink" && e["file"]["path"] == s(&key)
    });
    assert_eq!(e["process"]["uid"], USER, "{e}");
    assert_eq!(e["file"]["syscall"], "unlinkat", "{e}");
    // Loss counts arrive within the loss stage's period.
    let unlink_losses = agent.collect(Duration::from_secs(3), |e| {
        e["kind"] == "loss" && !e["loss"]["counts"]["file_unlink"].is_null()
    });
    assert!(unlink_losses.is_empty(), "{unlink_losses:?}");
    let unlinks = agent.collect(Duration::from_millis(500), |e| {
        e["kind"] == "file_unlink" && e["process"]["uid"] == USER
    });
    // At most the watched directory itself (removed with AT_REMOVEDIR) besides the key.
    assert!(
        unlinks
            .iter()
            .all(|e| e["file"]["path"] == s(&tree.join("keys"))),
        "{unlinks:?}"
    );
}
