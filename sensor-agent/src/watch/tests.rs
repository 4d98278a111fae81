//! Resolution against real files in temporary directories.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

fn rule(path: &Path, kind: &str, exclude: &[&str]) -> Rule {
    Rule::new(
        path.to_str().unwrap(),
        kind,
        None,
        exclude.iter().map(|s| s.to_string()).collect(),
    )
    .unwrap()
}

fn key_of(path: &Path) -> InodeKey {
    inode_key(&fs::metadata(path).unwrap())
}

fn write(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b"secret").unwrap();
}

#[test]
fn exact_path_gets_inode_dir_and_name() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    let shadow = root.join("etc/shadow");
    write(&shadow);
    let set = WatchSet::resolve(&[rule(&shadow, "password-db", &[])]);
    let etc = key_of(&root.join("etc"));
    assert_eq!(
        set.inodes().get(&key_of(&shadow)),
        Some(&WatchValue {
            rule: 1,
            ..WatchValue::default()
        })
    );
    assert_eq!(set.dirs().get(&etc).map(|v| v.flags), Some(DIR_NAMED));
    assert_eq!(
        set.names().get(&name_key(etc, b"shadow")).map(|v| v.rule),
        Some(1)
    );
    assert_eq!(
        set.by_inode(&key_of(&shadow)).unwrap().path,
        shadow.to_str().unwrap()
    );
    assert!(set.inotify_dirs().contains(&root.join("etc")));
    // A file created later under the watched name is located by the name entry.
    let located = set.locate(1, etc.dev, 0, b"shadow").unwrap();
    assert_eq!(located.path, shadow.to_str().unwrap());
}

#[test]
fn missing_exact_path_watches_the_name_and_nearest_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    let set = WatchSet::resolve(&[rule(&root.join("etc/gshadow"), "password-db", &[])]);
    assert!(set.inodes().is_empty());
    let etc = key_of(&root.join("etc"));
    assert_eq!(
        set.names()
            .iter()
            .filter(|(_, v)| v.flags & NAME_FILE != 0)
            .map(|(k, _)| k.dir)
            .collect::<Vec<_>>(),
        [etc]
    );
    // A rule under a directory that does not exist yet watches its existing ancestors: with
    // inotify, and in the kernel as the top of a tree that `var` will start.
    let set = WatchSet::resolve(&[rule(
        &root.join("var/lib/kubelet/pki/*"),
        "k8s-credential",
        &[],
    )]);
    assert!(set.inotify_dirs().contains(&root));
    let top = key_of(&root);
    assert_eq!(set.dirs()[&top].flags, DIR_TREE | DIR_NAMED);
    assert_eq!(
        set.names()[&name_key(top, b"var")],
        WatchValue {
            rule: 1,
            tree_depths: tree_depth_bit(5),
            ..WatchValue::default()
        }
    );
    assert!(set.dirs().values().all(|v| v.flags & DIR_TREE != 0));
    assert_eq!(
        set.tree_gate().max_depth,
        5 + root.iter().count() as u32 - 1
    );
}

#[test]
fn globs_expand_dirs_and_match_names_with_excludes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    for f in [
        "home/alice/.ssh/id_rsa",
        "home/alice/.ssh/id_rsa.pub",
        "home/bob/.ssh/id_ed25519",
        "home/bob/.ssh/known_hosts",
    ] {
        write(&root.join(f));
    }
    fs::create_dir_all(root.join("home/carol")).unwrap();
    let set = WatchSet::resolve(&[rule(&root.join("home/*/.ssh/id_*"), "ssh-key", &["*.pub"])]);
    let alice = key_of(&root.join("home/alice/.ssh"));
    let bob = key_of(&root.join("home/bob/.ssh"));
    assert_eq!(set.dirs().get(&alice).map(|v| v.flags), Some(DIR_ANY_NAME));
    assert_eq!(set.dirs().get(&bob).map(|v| v.flags), Some(DIR_ANY_NAME));
    assert!(set
        .inodes()
        .contains_key(&key_of(&root.join("home/alice/.ssh/id_rsa"))));
    assert!(set
        .inodes()
        .contains_key(&key_of(&root.join("home/bob/.ssh/id_ed25519"))));
    assert!(!set
        .inodes()
        .contains_key(&key_of(&root.join("home/alice/.ssh/id_rsa.pub"))));
    assert_eq!(set.inodes().len(), 2);
    // /home (new users) and carol's home (a new .ssh) are watched for changes.
    assert!(set.inotify_dirs().contains(&root.join("home")));
    assert!(set.inotify_dirs().contains(&root.join("home/carol")));
    // DirAny events: the name decides, and the directory is found by the inode.
    let bob_key = key_of(&root.join("home/bob/.ssh/id_ed25519"));
    let found = set.locate(1, bob.dev, bob_key.ino, b"id_ed25519").unwrap();
    assert_eq!(
        found.path,
        root.join("home/bob/.ssh/id_ed25519").to_str().unwrap()
    );
    assert_eq!(set.locate(1, bob.dev, 0, b"id_rsa.pub"), None);
    assert_eq!(set.locate(1, bob.dev, 0, b"known_hosts"), None);
    // A key created after resolution in alice's dir matches by name.
    assert_eq!(set.rule_in_dir(&alice, b"id_new"), Some(1));
}

#[test]
fn rules_sharing_a_directory_are_all_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    write(&root.join("r/.ssh/id_rsa"));
    write(&root.join("r/.ssh/authorized_keys"));
    let set = WatchSet::resolve(&[
        rule(&root.join("r/.ssh/id_*"), "ssh-key", &["*.pub"]),
        rule(
            &root.join("r/.ssh/authorized_keys"),
            "ssh-authorized-keys",
            &[],
        ),
    ]);
    let dir = key_of(&root.join("r/.ssh"));
    assert_eq!(
        set.dirs()[&dir],
        WatchValue {
            rule: 1,
            flags: DIR_ANY_NAME | DIR_NAMED,
            name_lengths: name_length_bit("authorized_keys".len() as u64),
            ..WatchValue::default()
        }
    );
    // The kernel reports DirAny with the directory's rule (1); the name picks rule 2.
    let found = set.locate(1, dir.dev, 0, b"authorized_keys").unwrap();
    assert_eq!(found.rule, 2);
    assert_eq!(set.rule(found.rule).unwrap().kind, "ssh-authorized-keys");
}

#[test]
fn symlinks_are_canonicalized() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    let real = root.join("archive/example/privkey1.pem");
    write(&real);
    fs::create_dir_all(root.join("live/example")).unwrap();
    symlink(
        "../../archive/example/privkey1.pem",
        root.join("live/example/privkey.pem"),
    )
    .unwrap();
    // A symlinked directory in the rule path resolves to the real directory.
    symlink(root.join("live"), root.join("live-link")).unwrap();
    let set = WatchSet::resolve(&[rule(&root.join("live-link/*/privkey.pem"), "tls-key", &[])]);
    let found = set.by_inode(&key_of(&real)).unwrap();
    assert_eq!(found.path, real.to_str().unwrap());
    let real_dir = key_of(&root.join("archive/example"));
    assert_eq!(
        set.names()
            .get(&name_key(real_dir, b"privkey1.pem"))
            .map(|v| v.rule),
        Some(1)
    );
    let live_dir = key_of(&root.join("live/example"));
    assert_eq!(
        set.dir_info[&live_dir].path,
        root.join("live/example").to_str().unwrap()
    );
    assert!(set.inotify_dirs().contains(&root.join("archive/example")));
}

/// Kubernetes' AtomicWriter layout (`token -> ..data/token`, `..data -> ..<stamp>`): the
/// volume directory is a tree two levels deep, so the next `..<stamp>` directory's token
/// matches before the refresh; a symlink out of the directory makes no tree.
#[test]
fn a_symlink_farm_is_a_tree_at_its_depth() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    let volume = root.join("vol");
    write(&volume.join("..2026_01_01/token"));
    symlink("..2026_01_01", volume.join("..data")).unwrap();
    symlink("..data/token", volume.join("token")).unwrap();
    write(&root.join("elsewhere/ca.crt"));
    symlink("../elsewhere/ca.crt", volume.join("ca.crt")).unwrap();
    let set = WatchSet::resolve(&[rule(&volume.join("*"), "k8s-token", &[])]);
    let dir = set.dirs()[&key_of(&volume)];
    assert_eq!(dir.flags, DIR_ANY_NAME | DIR_TREE);
    assert_eq!(dir.tree_depths, tree_depth_bit(2));
}

#[test]
fn hard_links_share_the_watched_inode() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    let shadow = root.join("etc/shadow");
    write(&shadow);
    let link = root.join("tmp-link");
    fs::hard_link(&shadow, &link).unwrap();
    let set = WatchSet::resolve(&[rule(&shadow, "password-db", &[])]);
    let via_link = set.by_inode(&key_of(&link)).unwrap();
    assert_eq!(via_link.path, shadow.to_str().unwrap());
}

/// Whether the test can chown files to other users; in CI (`CI=true`) it must.
fn as_root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "this test needs root (it makes files of other users)"
    );
    eprintln!("skipped: needs root");
    false
}

/// `count` files `f0`..`f{count-1}` in `dir`, owned with it by `uid` when given.
fn files(dir: &Path, count: usize, uid: Option<u32>) -> Vec<std::path::PathBuf> {
    fs::create_dir_all(dir).unwrap();
    let paths: Vec<_> = (0..count)
        .map(|i| {
            let path = dir.join(format!("f{i}"));
            write(&path);
            path
        })
        .collect();
    for path in paths.iter().map(|p| p.as_path()).chain([dir]) {
        std::os::unix::fs::chown(path, uid, uid).unwrap();
    }
    paths
}

#[test]
fn a_crowded_directory_watches_the_bound_by_inode_and_every_name_by_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    let cache = root.join("home/u/cache");
    let crowded = files(&cache, 10, None);
    let quiet = files(&root.join("home/v/cache"), 4, None);
    let budget = Budget {
        per_dir: 4,
        per_map: 100,
    };
    let set = WatchSet::resolve_within(&[rule(&root.join("home/*/cache/*"), "cloud", &[])], budget);
    // The first names in byte order (f0, f1, f2, f3), and every file of the quiet directory.
    let watched: Vec<_> = ["f0", "f1", "f2", "f3"]
        .iter()
        .map(|n| key_of(&cache.join(n)))
        .chain(quiet.iter().map(|p| key_of(p)))
        .collect();
    assert_eq!(set.inodes().len(), watched.len());
    assert!(watched.iter().all(|k| set.inodes().contains_key(k)));
    // Every file of the crowded directory is still matched by its directory entry.
    let dir = key_of(&cache);
    assert_eq!(set.dirs()[&dir].flags, DIR_ANY_NAME);
    let last = key_of(&crowded[9]);
    let found = set.locate(1, dir.dev, last.ino, b"f9").unwrap();
    assert_eq!(found.path, crowded[9].to_str().unwrap());
    // Only the crowded directory overflows: 10 files, 4 by inode.
    let changes = set.overflow_changes(&WatchSet::default());
    assert_eq!(
        changes,
        [Overflow {
            directory: cache.to_str().unwrap().to_owned(),
            rule: root.join("home/*/cache/*").to_str().unwrap().to_owned(),
            files: 10,
            watched: 4,
        }]
    );
    assert_eq!(set.dropped(), Dropped::default());
}

#[test]
fn overflows_are_reported_when_they_start_and_end_only() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    let cache = root.join("cache");
    let rules = [rule(&root.join("cache/*"), "cloud", &[])];
    let budget = Budget {
        per_dir: 3,
        per_map: 100,
    };
    let flood = files(&cache, 5, None);
    let started = WatchSet::resolve_within(&rules, budget);
    let first = started.overflow_changes(&WatchSet::default());
    assert_eq!((first.len(), first[0].files, first[0].watched), (1, 5, 3));
    // Still crowded, with more files: the overflow goes on, nothing new to report.
    write(&cache.join("g"));
    let ongoing = WatchSet::resolve_within(&rules, budget);
    assert!(ongoing.overflow_changes(&started).is_empty());
    // Back under the bound: its end is reported, every file watched by inode.
    for path in &flood[1..] {
        fs::remove_file(path).unwrap();
    }
    let ended = WatchSet::resolve_within(&rules, budget);
    let last = ended.overflow_changes(&ongoing);
    assert_eq!((last.len(), last[0].files, last[0].watched), (1, 2, 2));
    assert_eq!(last[0].directory, cache.to_str().unwrap());
    assert!(ended.overflow_changes(&ended).is_empty());
}

#[test]
fn the_map_budget_keeps_system_entries_first_and_each_user_a_share() {
    if !as_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    // Root's alone: the system tier.
    let system = files(&root.join("etc/keys"), 3, Some(0));
    // Two users' own directories: alice has one key, mallory floods.
    let alice = files(&root.join("home/alice/keys"), 1, Some(1000));
    let mallory = files(&root.join("home/mallory/keys"), 10, Some(1001));
    // The user rule first: the tier, not the rule order, puts the system files first.
    let rules = [
        rule(&root.join("home/*/keys/*"), "ssh-key", &[]),
        rule(&root.join("etc/keys/*"), "tls-key", &[]),
    ];
    let budget = Budget {
        per_dir: 100,
        per_map: 6,
    };
    let set = WatchSet::resolve_within(&rules, budget);
    assert_eq!(set.inodes().len(), 6);
    assert_eq!(set.dropped().inodes, 8);
    for path in system.iter().chain(&alice) {
        assert!(
            set.inodes().contains_key(&key_of(path)),
            "{path:?} left out"
        );
    }
    // Mallory keeps what is left, their first names in order.
    let kept: Vec<bool> = mallory
        .iter()
        .map(|p| set.inodes().contains_key(&key_of(p)))
        .collect();
    assert_eq!(kept.iter().filter(|k| **k).count(), 2);
    let mallory_dir = root.join("home/mallory/keys");
    assert_eq!(
        set.coverage(mallory_dir.to_str().unwrap(), 1),
        Some(Coverage {
            files: 10,
            watched: 2
        })
    );
    // Decided by the file system alone: the same on every resolution.
    let again = WatchSet::resolve_within(&rules, budget);
    assert!(again.same_entries(&set));
    // A directory a user can write is user tier even when root owns it (/tmp).
    fs::set_permissions(root.join("etc/keys"), fs::Permissions::from_mode(0o1777)).unwrap();
    let set = WatchSet::resolve_within(&rules, budget);
    assert!(!system.iter().all(|p| set.inodes().contains_key(&key_of(p))));
}

#[test]
fn no_resolution_exceeds_a_map() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    for d in 0..5 {
        files(&root.join(format!("d{d}")), 3, None);
    }
    fs::create_dir_all(root.join("n")).unwrap();
    let rules = [
        rule(&root.join("*/*"), "cloud", &[]),
        rule(&root.join("n/secret"), "cloud", &[]),
    ];
    let budget = Budget {
        per_dir: 2,
        per_map: 4,
    };
    let set = WatchSet::resolve_within(&rules, budget);
    assert_eq!(set.inodes().len(), 4);
    assert_eq!(set.dirs().len(), 4);
    assert!(set.names().len() <= 4);
    assert_eq!(set.dropped().inodes, 6);
    // Six directories holding files (d0..d4 and n), and the ancestry walk's directories
    // from `/` to the test's, which rank after those of their tier.
    let above = root.iter().count() - 1;
    assert_eq!(set.dropped().dirs, 6 + above + 1 - 4);
    assert!(set.dirs().values().all(|v| v.flags & DIR_TREE == 0));
}

#[test]
fn kernel_dev_encoding() {
    let meta = fs::metadata("/").unwrap();
    let dev = kernel_dev(meta.dev());
    assert_eq!(dev >> 20, libc::major(meta.dev()));
    assert_eq!(dev & 0xfffff, libc::minor(meta.dev()));
}

#[test]
fn rule_validation_and_lexical_match() {
    let r = Rule::new("/home/*/.ssh/id_*", "ssh-key", None, vec!["*.pub".into()]).unwrap();
    assert!(r.matches_path("/home/a/.ssh/id_rsa"));
    assert!(!r.matches_path("/home/a/.ssh/id_rsa.pub"));
    assert!(!r.matches_path("/home/a/b/.ssh/id_rsa"));
    assert_eq!(
        Rule::new("etc/shadow", "x", None, vec![])
            .unwrap_err()
            .field,
        "path"
    );
    assert_eq!(
        Rule::new("/", "x", None, vec![]).unwrap_err().message,
        "`/` names no file"
    );
    assert_eq!(
        Rule::new("/a/*", "x", None, vec!["[".into()])
            .unwrap_err()
            .field,
        "exclude[0]"
    );
}

#[test]
fn long_names_are_cut_like_the_kernel() {
    let long = [b'a'; 100];
    let key = name_key(InodeKey::default(), &long);
    assert_eq!(key.name[NAME_LEN - 2], b'a');
    assert_eq!(key.name[NAME_LEN - 1], 0);
}

mod denied {
    use super::*;
    use crate::watch::{resolve_denied, resolve_denied_handle, Passed};
    use sensor_common::syscall::AT_FDCWD;

    /// A container-like root with /etc/shadow and a fake procfs entry for pid 42 whose
    /// root, cwd and fd 5 point into it.
    fn setup() -> (tempfile::TempDir, WatchSet, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(tmp.path()).unwrap();
        let root = base.join("root");
        write(&root.join("etc/shadow"));
        write(&root.join("etc/ssh/ssh_host_ed25519_key"));
        fs::create_dir_all(root.join("home/u")).unwrap();
        let proc = base.join("proc/42");
        fs::create_dir_all(proc.join("fd")).unwrap();
        symlink(&root, proc.join("root")).unwrap();
        symlink(root.join("home/u"), proc.join("cwd")).unwrap();
        symlink(root.join("etc"), proc.join("fd/5")).unwrap();
        let set = WatchSet::resolve(&[
            rule(&root.join("etc/shadow"), "password-db", &[]),
            rule(&root.join("etc/ssh/ssh_host_*_key"), "ssh-host-key", &[]),
        ]);
        (tmp, set, base)
    }

    #[test]
    fn absolute_paths_resolve_in_the_callers_root() {
        let (_tmp, set, base) = setup();
        let proc = base.join("proc");
        let shadow = base.join("root/etc/shadow");
        let want = Some(Located {
            path: shadow.to_str().unwrap().into(),
            rule: 1,
        });
        // The caller's root is `base/root`: its `/etc/shadow` is ours `base/root/etc/shadow`.
        assert_eq!(
            resolve_denied(&set, &proc, 42, AT_FDCWD, b"/etc/shadow", None),
            want
        );
        assert_eq!(
            resolve_denied(&set, &proc, 42, AT_FDCWD, b"//etc//shadow", None),
            want
        );
        // `..` cannot climb above the caller's root.
        assert_eq!(
            resolve_denied(&set, &proc, 42, AT_FDCWD, b"/../../../etc/./shadow", None),
            want
        );
        assert_eq!(
            resolve_denied(&set, &proc, 42, AT_FDCWD, b"/etc/passwd", None),
            None
        );
    }

    #[test]
    fn relative_paths_resolve_from_cwd_or_dfd() {
        let (_tmp, set, base) = setup();
        let proc = base.join("proc");
        let shadow = base.join("root/etc/shadow");
        let want = Some(Located {
            path: shadow.to_str().unwrap().into(),
            rule: 1,
        });
        assert_eq!(
            resolve_denied(&set, &proc, 42, AT_FDCWD, b"../../etc/shadow", None),
            want
        );
        assert_eq!(resolve_denied(&set, &proc, 42, 5, b"shadow", None), want);
        assert_eq!(
            resolve_denied(&set, &proc, 42, 5, b"./ssh/../shadow", None),
            want
        );
        assert_eq!(
            resolve_denied(&set, &proc, 42, AT_FDCWD, b"shadow", None),
            None
        );
        // A glob-matched name, including one that does not exist (yet).
        let key = resolve_denied(&set, &proc, 42, 5, b"ssh/ssh_host_rsa_key", None).unwrap();
        assert_eq!(
            (
                key.path.ends_with("root/etc/ssh/ssh_host_rsa_key"),
                key.rule
            ),
            (true, 2)
        );
        assert_eq!(
            resolve_denied(&set, &proc, 42, 5, b"ssh/ssh_host_rsa_key.pub", None),
            None
        );
    }

    #[test]
    fn gone_process_falls_back_to_lexical_match() {
        let set =
            WatchSet::resolve(&[Rule::new("/etc/shadow", "password-db", None, vec![]).unwrap()]);
        let proc = Path::new("/nonexistent-proc");
        let found = resolve_denied(&set, proc, 42, AT_FDCWD, b"/etc/../etc//shadow", None).unwrap();
        assert_eq!(
            found,
            Located {
                path: "/etc/shadow".into(),
                rule: 1
            }
        );
        assert_eq!(
            resolve_denied(&set, proc, 42, AT_FDCWD, b"etc/shadow", None),
            None
        );
    }

    /// The `struct file_handle` a caller would pass for `path`, as the kernel copies it.
    fn handle_copy(path: &Path) -> Vec<u8> {
        let mut raw = [0u8; 8 + sensor_common::MAX_HANDLE_SZ];
        raw[..4].copy_from_slice(&(sensor_common::MAX_HANDLE_SZ as u32).to_ne_bytes());
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let mut mount_id = 0;
        // SAFETY: `raw` is a file_handle header announcing the MAX_HANDLE_SZ bytes after it;
        // `c` is NUL-terminated and `mount_id` an int, all alive across the call.
        let r = unsafe {
            libc::name_to_handle_at(
                libc::AT_FDCWD,
                c.as_ptr(),
                raw.as_mut_ptr().cast(),
                &mut mount_id,
                0,
            )
        };
        assert_eq!(r, 0, "name_to_handle_at {}", path.display());
        raw.to_vec()
    }

    /// A denied open by handle names the watched file whose handle was passed: on the file
    /// system of the caller's mount descriptor while the caller is there to ask, on any once
    /// it is gone; the handle of an unwatched file names nothing.
    #[test]
    fn a_passed_handle_names_the_watched_file_it_is_the_handle_of() {
        let (_tmp, set, base) = setup();
        let proc = base.join("proc");
        let shadow = base.join("root/etc/shadow");
        let want = Some(Located {
            path: shadow.to_str().unwrap().into(),
            rule: 1,
        });
        let copy = handle_copy(&shadow);
        let passed = Passed::parse(&copy).unwrap();
        assert_eq!(resolve_denied_handle(&set, &proc, 42, 5, &passed), want);
        assert_eq!(
            resolve_denied_handle(&set, &proc, 42, AT_FDCWD, &passed),
            want
        );
        // Gone: compared on every file system.
        assert_eq!(resolve_denied_handle(&set, &proc, 43, 5, &passed), want);
        // A mount descriptor on another file system: the handle names another file there.
        symlink("/dev", proc.join("42/fd/6")).unwrap();
        assert_eq!(resolve_denied_handle(&set, &proc, 42, 6, &passed), None);
        let plain = base.join("root/home/u/plain");
        write(&plain);
        let plain_copy = handle_copy(&plain);
        let plain_passed = Passed::parse(&plain_copy).unwrap();
        assert_eq!(
            resolve_denied_handle(&set, &proc, 42, 5, &plain_passed),
            None
        );
        assert_eq!(Passed::parse(&copy[..6]), None);
    }
}

/// Waits for the refresher to publish a set satisfying `ok`.
fn wait_for(
    rx: &mut tokio::sync::watch::Receiver<Arc<WatchSet>>,
    ok: impl Fn(&WatchSet) -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if ok(&rx.borrow_and_update()) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

#[test]
fn refresher_follows_new_and_replaced_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    let shadow = root.join("etc/shadow");
    write(&shadow);
    fs::create_dir_all(root.join("home/a")).unwrap();
    let rules = [
        rule(&shadow, "password-db", &[]),
        rule(&root.join("home/*/.ssh/id_*"), "ssh-key", &["*.pub"]),
    ];
    let mut rx = Watcher::spawn(&rules).unwrap();

    // A key created after start, in a .ssh directory that did not exist either.
    let key = root.join("home/a/.ssh/id_ed25519");
    write(&key);
    let key_inode = key_of(&key);
    assert!(
        wait_for(&mut rx, |s| s.inodes().contains_key(&key_inode)),
        "new key not picked up"
    );

    // write-temp-then-rename over the watched file: the new inode is watched.
    let tmp_file = root.join("etc/nshadow");
    fs::write(&tmp_file, b"new").unwrap();
    fs::rename(&tmp_file, &shadow).unwrap();
    let new_inode = key_of(&shadow);
    assert!(
        wait_for(&mut rx, |s| s
            .by_inode(&new_inode)
            .is_some_and(|l| l.rule == 1)),
        "replacement not picked up"
    );

    // A new user's home appears under /home.
    let other = root.join("home/b/.ssh/id_rsa");
    write(&other);
    let other_inode = key_of(&other);
    assert!(
        wait_for(&mut rx, |s| s.inodes().contains_key(&other_inode)),
        "new home not picked up"
    );
}

/// A watched file renamed away, its directory renamed, or replaced at its path while a hard
/// link keeps it, stays watched with the path it had, until it is deleted.
#[test]
fn a_watched_file_that_leaves_its_path_is_followed_until_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    let key_path = root.join("ssh/id_rsa");
    let rotated = root.join("rotated");
    write(&key_path);
    write(&rotated);
    let link = root.join("elsewhere/link");
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    fs::hard_link(&rotated, &link).unwrap();
    let rules = [
        rule(&key_path, "ssh-key", &[]),
        rule(&rotated, "cloud", &[]),
    ];
    let first = WatchSet::resolve(&rules);
    let (key, old_rotated) = (key_of(&key_path), key_of(&rotated));

    // The directory is renamed away; the rotated file gets a new inode at its path.
    fs::rename(root.join("ssh"), root.join("ssh-away")).unwrap();
    let fresh = root.join("rotated.new");
    write(&fresh);
    fs::rename(&fresh, &rotated).unwrap();
    let mut second = WatchSet::resolve(&rules);
    assert!(!second.inodes().contains_key(&key), "not at its path");
    second.keep_moved(&first, Budget::KERNEL.per_map);
    let was = |set: &WatchSet, k| set.by_inode(k).map(|l| (l.path, l.rule));
    assert_eq!(
        was(&second, &key),
        Some((key_path.to_str().unwrap().to_owned(), 1))
    );
    assert_eq!(
        was(&second, &old_rotated),
        Some((rotated.to_str().unwrap().to_owned(), 2))
    );
    assert!(second.is_moved(&key) && second.is_moved(&old_rotated));
    assert!(
        second.inodes().contains_key(&key_of(&rotated)),
        "the new file"
    );
    assert!(!second.is_moved(&key_of(&rotated)));
    assert!(!second.same_entries(&first));

    // Followed across refreshes, then forgotten once deleted (the hard link was the last).
    let mut third = WatchSet::resolve(&rules);
    third.keep_moved(&second, Budget::KERNEL.per_map);
    assert!(third.is_moved(&key) && third.is_moved(&old_rotated));
    fs::remove_file(&link).unwrap();
    let mut fourth = WatchSet::resolve(&rules);
    fourth.keep_moved(&third, Budget::KERNEL.per_map);
    assert!(fourth.is_moved(&key));
    assert!(!fourth.inodes().contains_key(&old_rotated), "deleted");
    assert_eq!(fourth.by_inode(&old_rotated), None);

    // Moved back to its path, it is an ordinary watched file again.
    fs::rename(root.join("ssh-away"), root.join("ssh")).unwrap();
    let mut fifth = WatchSet::resolve(&rules);
    fifth.keep_moved(&fourth, Budget::KERNEL.per_map);
    assert!(fifth.inodes().contains_key(&key) && !fifth.is_moved(&key));

    // Moved files count against the map like any entry.
    fs::rename(root.join("ssh"), root.join("ssh-away")).unwrap();
    let mut full = WatchSet::resolve(&rules);
    let before = full.dropped().inodes;
    full.keep_moved(&fifth, full.inodes().len());
    assert!(!full.inodes().contains_key(&key));
    assert_eq!(full.dropped().inodes, before + 1);
}

/// The rename prefilter's names: every watched name and watched directory's name (a glob's
/// directory among them), not the directories above; within capacity, directories first.
#[test]
fn leaves_are_watched_names_and_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    write(&root.join("etc/shadow"));
    write(&root.join("home/a/.ssh/id_rsa"));
    let rules = [
        rule(&root.join("etc/shadow"), "password-db", &[]),
        rule(&root.join("etc/gshadow"), "password-db", &[]),
        rule(&root.join("home/*/.ssh/id_*"), "ssh-key", &[]),
    ];
    let set = WatchSet::resolve(&rules);
    let has = |name: &str| set.leaves().contains_key(&leaf_key(name.as_bytes()));
    for name in ["shadow", "gshadow", "etc", ".ssh", "id_rsa"] {
        assert!(has(name), "{name}");
    }
    assert!(!has("home") && !has("a"));
    let small = WatchSet::resolve_within(
        &rules,
        Budget {
            per_dir: DIR_FILE_BOUND,
            per_map: 2,
        },
    );
    let mut kept: Vec<_> = small.leaves().keys().map(|k| k.name).collect();
    kept.sort_unstable();
    assert_eq!(kept, [leaf_key(b".ssh").name, leaf_key(b"etc").name]);
}
