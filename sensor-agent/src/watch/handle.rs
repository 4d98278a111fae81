//! File handles (`name_to_handle_at(2)`): a file's identity that outlives its name and, unlike
//! an inode number, is never given to another file (file systems put the inode's generation
//! in it). The watched set keeps one per watched file, so that a file that leaves its watched
//! path (renamed, moved, its directory renamed, reached by another hard link) is followed
//! until it is deleted, and a reused inode number is told apart from it. A handle holds
//! nothing open: unlike a descriptor, it keeps no file system from being unmounted.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sensor_common::{FileHandleHeader, InodeKey, MAX_HANDLE_SZ};
use zerocopy::FromBytes;

use super::inode_key;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// A watched file's handle, and the mount it was taken on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handle {
    mount_id: i32,
    handle_type: i32,
    bytes: Vec<u8>,
}

impl Handle {
    /// The handle of the file `path` names (symlinks followed). `None` on a file system that
    /// makes no handles (procfs, some FUSE file systems): such a file is watched at its path
    /// only.
    pub fn of(path: &Path) -> Option<Handle> {
        let path = CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut raw = RawHandle {
            handle_bytes: MAX_HANDLE_SZ as u32,
            handle_type: 0,
            f_handle: [0; MAX_HANDLE_SZ],
        };
        let mut mount_id = 0;
        // SAFETY: `path` is NUL-terminated; `raw` is a `struct file_handle` whose
        // `handle_bytes` says how many bytes follow it, so the kernel writes inside it;
        // `mount_id` is a valid int to write.
        let ret = unsafe {
            libc::name_to_handle_at(
                libc::AT_FDCWD,
                path.as_ptr(),
                (&raw mut raw).cast(),
                &mut mount_id,
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        let len = raw.handle_bytes as usize;
        if ret != 0 || len > MAX_HANDLE_SZ {
            return None;
        }
        Some(Handle {
            mount_id,
            handle_type: raw.handle_type,
            bytes: raw.f_handle[..len].to_vec(),
        })
    }

    /// Whether this is the handle a caller passed: type and bytes as in `passed`.
    pub fn is(&self, passed: &Passed) -> bool {
        self.handle_type == passed.handle_type && self.bytes == passed.bytes
    }

    /// Whether the handle still opens the file `key` and that file still has a link.
    pub fn still_links(&self, key: &InodeKey, mounts: &Mounts) -> bool {
        matches!(self.file(mounts), Some((k, links)) if k == *key && links > 0)
    }

    /// The identity and link count of the file now; `None` once it is deleted (its handle
    /// is stale) or its mount is gone.
    fn file(&self, mounts: &Mounts) -> Option<(InodeKey, u64)> {
        let mount = File::open(mounts.point(self.mount_id)?).ok()?;
        let mut raw = RawHandle {
            handle_bytes: self.bytes.len() as u32,
            handle_type: self.handle_type,
            f_handle: [0; MAX_HANDLE_SZ],
        };
        raw.f_handle[..self.bytes.len()].copy_from_slice(&self.bytes);
        // SAFETY: `raw` is a valid `struct file_handle` of `handle_bytes` bytes; the call
        // only reads it and returns a new descriptor or -1.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount.as_raw_fd(),
                (&raw mut raw).cast(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is a descriptor the call just opened, owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let meta = file.metadata().ok()?;
        Some((inode_key(&meta), meta.nlink()))
    }
}

/// A handle a caller passed to `open_by_handle_at`, as the kernel copied its `struct
/// file_handle` into a denied attempt's event (`MatchKind::DeniedHandle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Passed<'a> {
    pub handle_type: i32,
    pub bytes: &'a [u8],
}

impl<'a> Passed<'a> {
    /// `None` when the copy has no header, or announces a handle longer than any file system
    /// makes (the kernel refuses it: no file could have been named) or than was copied.
    pub fn parse(copied: &'a [u8]) -> Option<Passed<'a>> {
        let (head, rest) = FileHandleHeader::read_from_prefix(copied).ok()?;
        let len = usize::try_from(head.handle_bytes).ok()?;
        if len > MAX_HANDLE_SZ {
            return None;
        }
        Some(Passed {
            handle_type: head.handle_type,
            bytes: rest.get(..len)?,
        })
    }

    /// How the event's `requested` shows it: `handle:<type>:<hex bytes>`.
    pub fn describe(&self) -> String {
        let hex: String = self.bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("handle:{:#x}:{hex}", self.handle_type)
    }
}

/// Where each mount of the agent's mount namespace is, by mount id: what a handle is opened
/// against. Read once per use, as mounts come and go.
pub struct Mounts(HashMap<i32, PathBuf>);

impl Mounts {
    pub fn read() -> Mounts {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Mounts(text.lines().filter_map(mount_line).collect())
    }

    fn point(&self, id: i32) -> Option<&Path> {
        self.0.get(&id).map(PathBuf::as_path)
    }
}

/// Mount id and mount point of one `/proc/self/mountinfo` line (`36 35 98:0 /mnt1 /mnt2 ...`,
/// spaces and backslashes in the point escaped as octal `\040`).
fn mount_line(line: &str) -> Option<(i32, PathBuf)> {
    let mut fields = line.split(' ');
    let id = fields.next()?.parse().ok()?;
    let point = fields.nth(3)?;
    Some((
        id,
        PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(point))),
    ))
}

/// Undoes mountinfo's octal escapes.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_and_escapes() {
        assert_eq!(
            mount_line("36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 - ext3 /dev/root rw"),
            Some((36, PathBuf::from("/mnt two")))
        );
        assert_eq!(mount_line("garbage"), None);
        assert_eq!(unescape("a\\134b\\"), b"a\\b\\");
    }

    /// The copy of a caller's handle in an event: a length beyond the copy or beyond any
    /// handle, or no header at all, is no handle.
    #[test]
    fn passed_handles_are_read_within_their_copy() {
        let copy = |len: u32, kind: i32, bytes: &[u8]| {
            let mut v = [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
            v.extend_from_slice(bytes);
            v
        };
        let ok = copy(3, 1, &[7, 8, 9, 0, 0]);
        let passed = Passed::parse(&ok).expect("a handle");
        assert_eq!((passed.handle_type, passed.bytes), (1, &[7u8, 8, 9][..]));
        assert_eq!(passed.describe(), "handle:0x1:070809");
        assert_eq!(Passed::parse(&copy(6, 1, &[7, 8, 9])), None);
        assert_eq!(Passed::parse(&copy(129, 1, &[0; 200])), None);
        assert_eq!(Passed::parse(&copy(u32::MAX, 0, &[])), None);
        assert_eq!(Passed::parse(&[1, 0, 0]), None);
    }

    /// A handle follows its file through a rename and says when it is deleted; another file
    /// that gets the same inode number later is not it.
    #[test]
    fn a_handle_follows_its_file_until_it_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "k").unwrap();
        let handle = Handle::of(&path).expect("tmp makes handles");
        let key = inode_key(&std::fs::metadata(&path).unwrap());
        let moved = dir.path().join("elsewhere");
        std::fs::rename(&path, &moved).unwrap();
        assert_eq!(handle.file(&Mounts::read()), Some((key, 1)));
        std::fs::hard_link(&moved, &path).unwrap();
        assert_eq!(handle.file(&Mounts::read()), Some((key, 2)));
        std::fs::remove_file(&moved).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(handle.file(&Mounts::read()), None, "deleted");
    }
}
