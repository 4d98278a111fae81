//! Signing keys on disk: `keys/ed25519-<key epoch>.key`, the 32-byte Ed25519 seed followed by
//! zeros up to `KEY_FILE_BYTES`.
//!
//! The directory is created 0700 and each file 0600 at creation (no window with wider modes).
//! A superseded key is overwritten and unlinked, so a later intruder cannot re-sign old batches.
//! The padding is what makes the overwrite reach the only copy: a file this small would be
//! stored inside its inode on ext4 with `inline_data` (and in the inode tables of similar
//! file systems), and inode blocks go through the journal, which would keep the old seed after
//! the overwrite. A file of one whole block gets a data block, which the default `data=ordered`
//! journal never copies, and the overwrite rewrites that block in place. File systems that
//! copy on write (btrfs, ZFS) or journal data (`data=journal`) keep old blocks regardless:
//! docs/log-format.md says so.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use crate::error::{Error, Result};

/// Size of a key file: one 4 KiB block, larger than any inline-data limit.
pub const KEY_FILE_BYTES: usize = 4096;
/// Length of the Ed25519 seed at the start of a key file.
const SEED_BYTES: usize = 32;

pub struct KeyDir {
    dir: PathBuf,
}

impl KeyDir {
    pub fn open(state_dir: &Path) -> Result<KeyDir> {
        let dir = state_dir.join("keys");
        match DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(Error::io(&dir)(e))
            }
            _ => {}
        }
        // An existing directory may have been created by someone else: narrow it anyway.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(Error::io(&dir))?;
        Ok(KeyDir { dir })
    }

    fn path(&self, key_epoch: u64) -> PathBuf {
        self.dir.join(format!("ed25519-{key_epoch}.key"))
    }

    /// Key epochs that have a private key file.
    pub fn present(&self) -> Result<Vec<u64>> {
        let mut epochs = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(Error::io(&self.dir))? {
            let entry = entry.map_err(Error::io(&self.dir))?;
            let name = entry.file_name();
            let epoch = name
                .to_str()
                .and_then(|n| n.strip_prefix("ed25519-"))
                .and_then(|n| n.strip_suffix(".key"))
                .and_then(|n| n.parse::<u64>().ok());
            epochs.extend(epoch);
        }
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// Generates a key from the OS random source and stores it durably.
    pub fn create(&self, key_epoch: u64) -> Result<SigningKey> {
        let seed = random::<SEED_BYTES>()?;
        let mut contents = vec![0u8; KEY_FILE_BYTES];
        contents[..SEED_BYTES].copy_from_slice(&seed);
        let path = self.path(key_epoch);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(Error::io(&path))?;
        file.write_all(&contents)
            .and_then(|()| file.sync_all())
            .map_err(Error::io(&path))?;
        self.sync_dir()?;
        Ok(SigningKey::from_bytes(&seed))
    }

    pub fn load(&self, key_epoch: u64) -> Result<SigningKey> {
        let path = self.path(key_epoch);
        let mut file = File::open(&path).map_err(Error::io(&path))?;
        let len = file.metadata().map_err(Error::io(&path))?.len();
        if len != KEY_FILE_BYTES as u64 {
            return Err(Error::Key(format!(
                "{} holds {len} bytes, expected {KEY_FILE_BYTES}",
                path.display()
            )));
        }
        let mut contents = vec![0u8; KEY_FILE_BYTES];
        file.read_exact(&mut contents).map_err(Error::io(&path))?;
        let (seed, padding) = contents.split_at(SEED_BYTES);
        if padding.iter().any(|b| *b != 0) {
            return Err(Error::Key(format!(
                "{} is not a key file (non-zero padding)",
                path.display()
            )));
        }
        let mut bytes = [0u8; SEED_BYTES];
        bytes.copy_from_slice(seed);
        Ok(SigningKey::from_bytes(&bytes))
    }

    /// Overwrites the whole file with zeros in place, syncs, and unlinks it.
    pub fn destroy(&self, key_epoch: u64) -> Result<()> {
        let path = self.path(key_epoch);
        let mut file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        file.write_all(&[0u8; KEY_FILE_BYTES])
            .and_then(|()| file.sync_all())
            .map_err(Error::io(&path))?;
        fs::remove_file(&path).map_err(Error::io(&path))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io(&self.dir))
    }
}

/// Bytes from the OS random source (keys and the host id).
pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| Error::Random(e.to_string()))?;
    Ok(out)
}
