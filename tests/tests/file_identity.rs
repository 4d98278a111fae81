//! A watched file is identified whatever mount or name it is reached through: through an
//! overlay (the real file below it), and after it left its watched path (renamed, exchanged
//! with a decoy, its directory renamed, or reached by a hard link after the watched path got
//! a new file). The real agent and probes in this kernel; needs root (as CI runs).

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use sensor_tests::{is, s, trigger, trigger_bin, trigger_cmd, write_secret, Fixture};
use serde_json::Value;

/// Watched files by name in the fixture directory; `user/key` belongs to [`USER`].
const WATCHED: [&str; 7] = [
    "etc/shadow",
    "moved-out",
    "exchanged",
    "ssh/id_rsa",
    "rotated",
    "keys/id_ed25519",
    "user/key",
];
/// The unprivileged owner of `user/key`, who mounts an overlay over it in a user namespace.
const USER: u32 = 47_311;

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        Fixture::start("sensor-identity-", |dir| {
            let mut config = String::new();
            for name in WATCHED {
                let path = dir.join(name);
                std::fs::create_dir_all(path.parent().unwrap()).expect("mkdir");
                write_secret(&path);
                config += &format!("[[watch]]\npath = \"{}\"\nkind = \"ssh-key\"\n\n", s(&path));
            }
            std::fs::create_dir(dir.join("elsewhere")).expect("mkdir");
            // Made before the agent starts, read after the watched path gets a new file.
            std::fs::hard_link(dir.join("rotated"), dir.join("elsewhere/link")).expect("link");
            for path in [dir.join("user"), dir.join("user/key")] {
                std::os::unix::fs::chown(&path, Some(USER), Some(USER)).expect("chown");
            }
            config
        })
    })
}

/// The `file_open` of `pid`, opened at `opened`.
fn open_event(pid: u32) -> Value {
    fixture()
        .agent
        .wait_for(&format!("file_open of pid {pid}"), is("file_open", pid))
}

/// An overlay of `lower` mounted at a new directory of the fixture (upper and work dirs
/// beside it), unmounted when dropped.
struct Overlay {
    merged: PathBuf,
}

impl Overlay {
    fn mount(name: &str, lower: &Path) -> Overlay {
        let base = fixture().dir.join(name);
        let (upper, work, merged) = (base.join("upper"), base.join("work"), base.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options, s(&merged)])
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t overlay -o {options}");
        Overlay { merged }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.merged).status();
    }
}

/// `mount -t overlay -o lowerdir=/etc`: the overlay's inode matches nothing watched, but the
/// file read is the real `/etc/shadow`, reported as the real file and as opened.
#[test]
fn a_file_read_through_an_overlay_is_the_real_file() {
    let f = fixture();
    let overlay = Overlay::mount("ovl-etc", &f.dir.join("etc"));
    let opened = overlay.merged.join("shadow");
    let (pid, ret) = trigger(&["open", s(&opened)]);
    assert!(ret >= 0, "open through the overlay: {ret}");
    let e = open_event(pid);
    assert_eq!(e["file"]["path"], s(&f.dir.join("etc/shadow")), "{e}");
    assert_eq!(e["file"]["requested"], s(&opened), "{e}");
    assert_eq!(e["detail"]["overlay"]["opened"], s(&opened), "{e}");
    let overlay_dev = e["detail"]["overlay"]["overlay_dev"].as_str().unwrap_or("");
    assert!(overlay_dev.starts_with("0:"), "an anonymous device: {e}");

    // A glob rule's directory, through a read-only overlay of two layers.
    let keys = f.dir.join("keys");
    let empty = f.dir.join("ovl-empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let merged = f.dir.join("ovl-ro");
    std::fs::create_dir_all(&merged).expect("mkdir");
    let options = format!("lowerdir={}:{}", empty.display(), keys.display());
    assert!(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options, s(&merged)])
        .status()
        .expect("mount")
        .success());
    let opened = merged.join("id_ed25519");
    let (pid, ret) = trigger(&["open", s(&opened)]);
    let _ = Command::new("umount").arg(&merged).status();
    assert!(ret >= 0, "open through the read-only overlay: {ret}");
    let e = open_event(pid);
    assert_eq!(e["file"]["path"], s(&f.dir.join("keys/id_ed25519")), "{e}");
    assert_eq!(e["detail"]["overlay"]["opened"], s(&opened), "{e}");
}

/// An unprivileged user mounts an overlay over their own key in a user namespace and reads
/// it through the overlay: still their key.
#[test]
fn a_users_overlay_in_a_user_namespace_is_seen_through() {
    let f = fixture();
    let base = f.dir.join("ovl-user");
    for d in ["upper", "work", "merged"] {
        std::fs::create_dir_all(base.join(d)).expect("mkdir");
    }
    Command::new("chown")
        .args(["-R", &format!("{USER}:{USER}"), s(&base)])
        .status()
        .expect("chown");
    let merged = base.join("merged");
    let script = format!(
        "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {} && exec {} open {}/key",
        f.dir.join("user").display(),
        base.join("upper").display(),
        base.join("work").display(),
        merged.display(),
        trigger_bin().display(),
        merged.display(),
    );
    let (pid, ret) = trigger_cmd(
        Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
            .uid(USER)
            .gid(USER),
    );
    assert!(ret >= 0, "open through the user's overlay: {ret}");
    let e = open_event(pid);
    assert_eq!(e["file"]["path"], s(&f.dir.join("user/key")), "{e}");
    assert_eq!(e["process"]["uid"], USER, "{e}");
    assert!(e["detail"]["overlay"]["opened"].is_string(), "{e}");
}

/// Where a moved watched file was opened, and the watched path it had.
fn moved_event(pid: u32) -> (String, String) {
    let e = open_event(pid);
    let was = e["detail"]["moved"]["was"].as_str().map(str::to_owned);
    let path = e["file"]["path"].as_str().map(str::to_owned);
    match (path, was) {
        (Some(path), Some(was)) => (path, was),
        _ => panic!("no moved detail: {e}"),
    }
}

#[test]
fn a_watched_file_renamed_out_of_its_directory_is_still_watched() {
    let f = fixture();
    let away = f.dir.join("elsewhere/renamed");
    std::fs::rename(f.dir.join("moved-out"), &away).expect("rename");
    for _ in 0..2 {
        let (pid, ret) = trigger(&["open", s(&away)]);
        assert!(ret >= 0);
        assert_eq!(
            moved_event(pid),
            (s(&away).to_owned(), s(&f.dir.join("moved-out")).to_owned())
        );
        // Again after the watched set's refresh has seen the rename.
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `renameat2(RENAME_EXCHANGE)` with a decoy: the key now sits at the decoy's name.
#[test]
fn a_watched_file_exchanged_with_a_decoy_is_still_watched() {
    let f = fixture();
    let decoy = f.dir.join("elsewhere/decoy");
    std::fs::write(&decoy, "nothing\n").expect("decoy");
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("path");
    let (a, b) = (c(&f.dir.join("exchanged")), c(&decoy));
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let ret = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(
        ret,
        0,
        "RENAME_EXCHANGE: {}",
        std::io::Error::last_os_error()
    );
    let (pid, _) = trigger(&["open", s(&decoy)]);
    assert_eq!(
        moved_event(pid),
        (s(&decoy).to_owned(), s(&f.dir.join("exchanged")).to_owned())
    );
}

/// `mv ~/.ssh ~/.ssh-away`: the key inside keeps its name but not its watched path.
#[test]
fn a_watched_file_whose_directory_is_renamed_is_still_watched() {
    let f = fixture();
    std::fs::rename(f.dir.join("ssh"), f.dir.join("ssh-away")).expect("rename dir");
    let now = f.dir.join("ssh-away/id_rsa");
    let (pid, _) = trigger(&["open", s(&now)]);
    assert_eq!(
        moved_event(pid),
        (s(&now).to_owned(), s(&f.dir.join("ssh/id_rsa")).to_owned())
    );
}

/// A hard link made before the agent started, read after the key was rotated (a new file
/// renamed over the watched path, as `ssh-keygen` or an editor does): the old key's bytes.
#[test]
fn a_hard_link_to_a_rotated_key_is_still_watched() {
    let f = fixture();
    let rotated = f.dir.join("rotated");
    let fresh = f.dir.join("rotated.new");
    std::fs::write(&fresh, "NEW KEY\n").expect("new key");
    std::fs::rename(&fresh, &rotated).expect("rotate");
    let link = f.dir.join("elsewhere/link");
    // Once at once, once after the watched set's refresh has replaced the entry.
    for _ in 0..2 {
        let (pid, _) = trigger(&["open", s(&link)]);
        assert_eq!(
            moved_event(pid),
            (s(&link).to_owned(), s(&rotated).to_owned())
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // The new key at the watched path is an ordinary watched file.
    let (pid, _) = trigger(&["open", s(&rotated)]);
    let e = open_event(pid);
    assert_eq!(e["file"]["path"], s(&rotated), "{e}");
    assert!(e["detail"].is_null(), "{e}");
}
