//! Nothing created under a watched tree is unwatched, even before the agent's refresh has
//! seen it: a credential directory made and read at once (a new `~/.azure`, a new user's
//! home, a new pod's volume), and a Kubernetes volume's token rotated by swapping `..data`
//! and read at once, are reported by the kernel's ancestry walk. The real agent and probes
//! in this kernel; needs root (as CI runs).

use std::{path::Path, sync::OnceLock, time::Duration};

use sensor_tests::{is, s, trigger, write_secret, Fixture};
use serde_json::Value;

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        Fixture::start("sensor-trees-", |dir| {
            // alice's home exists, without `.azure`; a pod's volume holds its token as the
            // kubelet writes it.
            std::fs::create_dir_all(dir.join("home/alice")).expect("mkdir");
            let volume = dir.join("pods/p1/vol");
            std::fs::create_dir_all(volume.join("..2026_01_01")).expect("mkdir");
            write_secret(&volume.join("..2026_01_01/token"));
            std::os::unix::fs::symlink("..2026_01_01", volume.join("..data")).expect("symlink");
            std::os::unix::fs::symlink("..data/token", volume.join("token")).expect("symlink");
            format!(
                "[[watch]]\npath = \"{}/home/*/.azure/*.json\"\nkind = \"azure-token\"\n\n\
                 [[watch]]\npath = \"{}/pods/*/vol/token\"\nkind = \"k8s-token\"\n",
                s(dir),
                s(dir)
            )
        })
    })
}

/// The `file_open` event of `pid`.
fn open_event(pid: u32) -> Value {
    fixture()
        .agent
        .wait_for(&format!("file_open of pid {pid}"), is("file_open", pid))
}

/// Creates `file` (and its directories), opens it at once and removes `remove`.
fn create_open(file: &Path, remove: &Path) -> u32 {
    let (pid, ret) = trigger(&["create-open", s(file), s(remove)]);
    assert!(ret >= 0, "open of {}: {ret}", file.display());
    pid
}

#[test]
fn a_credential_read_as_its_directory_is_created_is_seen() {
    let f = fixture();
    let azure = f.dir.join("home/alice/.azure");
    let token = azure.join("msal_token_cache.json");
    // Read and gone before any refresh: only the kernel saw the file.
    let pid = create_open(&token, &azure);
    let e = open_event(pid);
    assert_eq!(e["file"]["path"], s(&token), "{e}");
    assert_eq!(e["file"]["requested"], s(&token), "{e}");
    assert_eq!(e["file"]["kind"], "azure-token", "{e}");
}

#[test]
fn a_new_users_credential_and_a_new_pods_token_are_seen() {
    let f = fixture();
    let home = f.dir.join("home/carol");
    let token = home.join(".azure/accessTokens.json");
    let e = open_event(create_open(&token, &home));
    assert_eq!(e["file"]["path"], s(&token), "{e}");

    let pod = f.dir.join("pods/p2");
    let token = pod.join("vol/token");
    let e = open_event(create_open(&token, &pod));
    assert_eq!(e["file"]["path"], s(&token), "{e}");
    assert_eq!(e["file"]["kind"], "k8s-token", "{e}");
}

/// The kubelet's AtomicWriter: a new `..<timestamp>` directory, `..data` renamed onto a
/// symlink to it, and `token -> ..data/token` read at once: the new file is in a directory
/// no refresh has seen.
#[test]
fn a_token_rotated_by_swapping_its_data_directory_is_seen_at_once() {
    let f = fixture();
    let volume = f.dir.join("pods/p1/vol");
    let (pid, ret) = trigger(&["atomic-rotate", s(&volume), "token"]);
    assert!(ret >= 0, "open after rotation: {ret}");
    let e = open_event(pid);
    assert_eq!(e["file"]["path"], s(&volume.join("token")), "{e}");
    assert_eq!(e["file"]["kind"], "k8s-token", "{e}");
}

/// Files in new directories under a watched tree that no rule names are not events: the
/// walk matches a rule's depth and names, not everything below a watched directory.
#[test]
fn files_off_a_rules_path_under_a_tree_are_not_events() {
    let f = fixture();
    let deeper = f.dir.join("home/erin/.azure-off/sub");
    let off_path = [
        // One level too deep for `.azure/*.json`.
        f.dir.join("home/erin/.azure/cache/x.json"),
        // Not `.azure`.
        deeper.join("x.json"),
        // Not `*.json`.
        f.dir.join("home/erin/.azure/notes.txt"),
    ];
    let mut pids = Vec::new();
    for file in &off_path {
        pids.push(create_open(file, file.parent().unwrap()));
    }
    // A watched one after them: once it is out, theirs would have been too.
    let token = f.dir.join("home/dave/.azure/t.json");
    open_event(create_open(&token, &f.dir.join("home/dave")));
    f.agent.assert_none(
        "an event for a file off every rule's path",
        |e| pids.iter().any(|&pid| is("file_open", pid)(e)),
        Duration::from_secs(1),
    );
}
