//! Forward security on a real file system: a superseded signing key must leave no copy of its
//! seed on the disk. ext4 with `inline_data` keeps a small file's bytes inside its inode, and the
//! inode block goes through the journal, so a 32-byte seed overwritten in place would survive in
//! the journal. Needs root (a loop-mounted ext4 image) and e2fsprogs; outside CI a machine
//! without them skips, in CI (`CI=true`) that fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sensor_log::Timestamp;
use sensor_store::LogWriter;

/// An ext4 image made with `mkfs.ext4 -O inline_data`, loop-mounted; unmounted when dropped.
struct Ext4 {
    image: PathBuf,
    mount: tempfile::TempDir,
    mounted: bool,
    _dir: tempfile::TempDir,
}

impl Ext4 {
    fn mount() -> Result<Ext4, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("ext4.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(32 << 20))
            .map_err(|e| e.to_string())?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "inline_data"])
            .arg(&image))?;
        let mount = tempfile::tempdir().map_err(|e| e.to_string())?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(mount.path()))?;
        Ok(Ext4 {
            image,
            mount,
            mounted: true,
            _dir: dir,
        })
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }

    /// Unmounts (writing back the journal and every cached block) and returns the raw image.
    fn unmount_and_read(mut self) -> Vec<u8> {
        run(Command::new("umount").arg(self.mount.path())).expect("umount");
        self.mounted = false;
        std::fs::read(&self.image).expect("read image")
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.mount.path()).status();
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[test]
fn a_destroyed_key_leaves_no_copy_on_ext4_with_inline_data() {
    let fs = match Ext4::mount() {
        Ok(fs) => fs,
        Err(e) => {
            return common::precondition_missing(&format!(
                "cannot mount an ext4 image ({e}); needs root and e2fsprogs"
            ))
        }
    };
    let state = fs.path().join("state");
    let mut options = common::options(16);
    options.key_rotation = Some(Duration::from_millis(1));
    options.first_key_rotation = Some(Duration::from_millis(1));
    let mut writer = LogWriter::open(&state, options).expect("open");
    let key_file = state.join("keys/ed25519-1.key");
    let seed: Vec<u8> = std::fs::read(&key_file).expect("key file")[..32].to_vec();
    assert_ne!(seed, vec![0; 32]);
    // Let the first key reach the disk (journal commit) before it is superseded.
    Command::new("sync").status().expect("sync");
    std::thread::sleep(Duration::from_millis(20));
    let now = Timestamp::now();
    writer.seal_due(now).expect("rotation");
    assert!(!key_file.exists(), "the superseded key file is gone");
    assert_eq!(writer.public_key().0, 2, "key epoch 2 signs from now on");
    writer.close(Timestamp::now()).expect("close");
    let image = fs.unmount_and_read();
    let copies = image.windows(seed.len()).filter(|w| *w == seed).count();
    assert_eq!(
        copies, 0,
        "the destroyed key's seed is still in the file system image ({copies} copies)"
    );
}
