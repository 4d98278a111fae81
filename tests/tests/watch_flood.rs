//! A user floods a watched glob directory they own with more files than a kernel map holds
//! (issue 10): the watched set must degrade, never freeze. The crowded directory stays
//! watched by directory and name, new credential files anywhere are still picked up, system
//! files stay watched, and the overflow is a chained event. Real agent, real probes, as root
//! (an unprivileged uid floods).

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use sensor_tests::{is, trigger, Agent};
use serde_json::Value;

/// More than a kernel map holds (`sensor_common::MAX_WATCHED`, 16,384).
const FLOOD: usize = 20_000;
/// The flooding user: `nobody`.
const USER: u32 = 65534;
/// Longer than a refresh's debounce and its rest after resolving a crowded directory.
const SETTLE: Duration = Duration::from_secs(2);
/// How long a refresh may take to bring a new file into the kernel's maps.
const REFRESH: Duration = Duration::from_secs(15);

/// A file tree like a host's: `etc` (root's alone, holds the system-like credentials),
/// `home/alice` (no `.ssh` yet) and `home/mallory/.aws/sso/cache`, owned by [`USER`].
struct Tree {
    base: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let tmp = tempfile::Builder::new()
            .prefix("sensor-flood-")
            .tempdir()
            .expect("tempdir");
        let base = tmp.path().canonicalize().expect("canonical");
        // World-traversable, so the flooding user reaches its own directory.
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::create_dir_all(base.join("etc")).expect("mkdir etc");
        std::fs::write(base.join("etc/shadow"), "root:*:1::::::\n").expect("write shadow");
        std::fs::create_dir_all(base.join("home/alice")).expect("mkdir alice");
        let mallory = base.join("home/mallory");
        std::fs::create_dir_all(mallory.join(".aws/sso/cache")).expect("mkdir cache");
        for dir in [".", ".aws", ".aws/sso", ".aws/sso/cache"] {
            std::os::unix::fs::chown(mallory.join(dir), Some(USER), Some(USER)).expect("chown");
        }
        Tree { base, _tmp: tmp }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.base.join(relative)
    }

    /// The flooded directory.
    fn cache(&self) -> PathBuf {
        self.path("home/mallory/.aws/sso/cache")
    }

    /// The default rules' shapes, under `base`.
    fn config(&self) -> String {
        format!(
            r#"
default_watches = false

[[watch]]
path = "{b}/etc/shadow"
kind = "password-db"

[[watch]]
path = "{b}/etc/conf.d/*.key"
kind = "tls-key"

[[watch]]
path = "{b}/home/*/.aws/sso/cache/*"
kind = "cloud"

[[watch]]
path = "{b}/home/*/.ssh/id_*"
kind = "ssh-key"
exclude = ["*.pub"]
"#,
            b = self.base.display()
        )
    }

    /// [`USER`] creates [`FLOOD`] files in its cache directory.
    fn flood(&self) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(r#"cd "$1" && seq -f 'token-%g.json' 1 "$2" | xargs touch"#)
            .arg("flood")
            .arg(self.cache())
            .arg(FLOOD.to_string())
            .uid(USER)
            .gid(USER)
            .status()
            .expect("run the flood");
        assert!(status.success(), "the flood failed: {status}");
        let files = std::fs::read_dir(self.cache()).expect("list cache").count();
        assert_eq!(files, FLOOD);
    }

    /// Deletes the flood, as its user would.
    fn unflood(&self) {
        for entry in std::fs::read_dir(self.cache()).expect("list cache") {
            std::fs::remove_file(entry.expect("entry").path()).expect("remove a flood file");
        }
    }
}

/// Creates a credential file (and its directory) as root.
fn create(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, "PRIVATE KEY\n").expect("write credential");
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Reads `path` until the agent reports the read (a refresh must first bring a new file's
/// directory into the kernel's maps), and returns the `file_open` event.
fn reported_when_read(agent: &Agent, path: &Path) -> Value {
    let deadline = Instant::now() + REFRESH;
    loop {
        let (pid, ret) = trigger(&["open", s(path)]);
        assert!(ret >= 0, "open {} failed: {ret}", path.display());
        if let Some(e) = agent.try_wait_for(is("file_open", pid), Duration::from_secs(1)) {
            assert_eq!(e["file"]["path"], s(path), "{e}");
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "reading {} is not reported {} s after it was created; agent stderr:\n{}",
            path.display(),
            REFRESH.as_secs(),
            agent.stderr.lock().expect("lock")
        );
    }
}

/// The `watch_overflow` event for `directory` whose overflow `ongoing` says (started: true).
fn overflow_event(agent: &Agent, directory: &Path, ongoing: bool) -> Value {
    let what = format!(
        "watch_overflow {} for {}",
        if ongoing { "start" } else { "end" },
        directory.display()
    );
    let e = agent.wait_for(&what, |e| {
        e["kind"] == "watch_overflow"
            && e["detail"]["watch_overflow"]["directory"] == s(directory)
            && e["ok"] == !ongoing
    });
    let detail = &e["detail"]["watch_overflow"];
    let (files, watched) = (
        detail["files"].as_u64().expect("files"),
        detail["watched"].as_u64().expect("watched"),
    );
    assert!(
        detail["rule"]
            .as_str()
            .is_some_and(|r| r.ends_with("/home/*/.aws/sso/cache/*")),
        "{e}"
    );
    if ongoing {
        assert!(watched < files, "{e}");
    } else {
        assert_eq!(watched, files, "{e}");
    }
    e
}

/// What must hold while the flood is there: a new user key in a new directory and a new
/// system-like file are picked up, the existing system file and the crowded directory's own
/// files are still reported.
fn still_watched(agent: &Agent, tree: &Tree, key: &str) {
    // Let the refreshes the flood set off settle first: created amid them, a new key could
    // ride on a refresh that did not see the whole flood yet.
    std::thread::sleep(SETTLE);
    let alice_key = tree.path(&format!("home/alice/.ssh/{key}"));
    create(&alice_key);
    let e = reported_when_read(agent, &alice_key);
    assert_eq!(e["file"]["kind"], "ssh-key", "{e}");
    let tls_key = tree.path(&format!("etc/conf.d/{key}.key"));
    create(&tls_key);
    let e = reported_when_read(agent, &tls_key);
    assert_eq!(e["file"]["kind"], "tls-key", "{e}");
    reported_when_read(agent, &tree.path("etc/shadow"));
    for name in ["token-1.json", &format!("token-{FLOOD}.json")] {
        let e = reported_when_read(agent, &tree.cache().join(name));
        assert_eq!(e["file"]["kind"], "cloud", "{e}");
    }
}

#[test]
fn a_flood_after_start_degrades_the_watched_set_and_ends() {
    let tree = Tree::new();
    let agent = Agent::start(&tree.config());
    reported_when_read(&agent, &tree.path("etc/shadow"));

    tree.flood();
    still_watched(&agent, &tree, "id_rsa");
    overflow_event(&agent, &tree.cache(), true);

    tree.unflood();
    overflow_event(&agent, &tree.cache(), false);
    let alice_key = tree.path("home/alice/.ssh/id_ed25519");
    create(&alice_key);
    reported_when_read(&agent, &alice_key);
    let token = tree.cache().join("token.json");
    create(&token);
    reported_when_read(&agent, &token);
}

#[test]
fn an_agent_starts_beside_a_flood() {
    let tree = Tree::new();
    tree.flood();
    let agent = Agent::start(&tree.config());
    let e = overflow_event(&agent, &tree.cache(), true);
    let detail = &e["detail"]["watch_overflow"];
    assert_eq!(detail["files"], FLOOD as u64, "{e}");
    still_watched(&agent, &tree, "id_ecdsa");
}
