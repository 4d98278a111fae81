//! The enriched event: what `sensor-agent run --output json` prints, one object per line,
//! and what the log stores. Documented in `docs/events.md`.
//!
//! Every field is always present (absent values are `null`), so the same struct encodes
//! deterministically with the log's codec (`codec.rs`) and reads naturally as JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The `kind` field. Its name is derived from the variant's, for serde (JSON) and for
/// [`Kind::as_str`] alike; its number in the log is the declaration order (the codec writes
/// the variant index). A kernel kind of the same name (`sensor_common::EventKind`) is logged
/// as this kind.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Kind {
    FileOpen,
    ProcAccess,
    Ptrace,
    ProcessVmReadv,
    ProcessVmWritev,
    PidfdGetfd,
    Keyctl,
    AddKey,
    RequestKey,
    IoUring,
    Loss,
    /// The watched set could not hold every file a rule matched in a directory (format
    /// version 2 on): `detail` is a [`Detail::WatchOverflow`].
    WatchOverflow,
    /// `perf_event_open` on another process or system-wide (format version 2 on): `target`,
    /// and `detail` is a [`Detail::PerfEventOpen`].
    PerfEventOpen,
    /// A BPF program load or attachment (`bpf` `BPF_PROG_LOAD`, `BPF_PROG_ATTACH`,
    /// `BPF_RAW_TRACEPOINT_OPEN`, `BPF_LINK_CREATE`; `ioctl` `PERF_EVENT_IOC_SET_BPF`):
    /// `detail` is a [`Detail::Bpf`].
    Bpf,
    /// `prlimit64` setting another process's core limit: `target`, and `detail` is a
    /// [`Detail::CoreLimit`].
    Prlimit64,
    /// A fanotify mark that hands the listener opened files: `detail` is a
    /// [`Detail::FanotifyMark`].
    FanotifyMark,
    /// A tracefs probe file (`uprobe_events`, ...) opened for writing: `file`.
    TracefsWrite,
    /// `/proc/sys/kernel/core_pattern` opened for writing: `file`.
    CorePatternWrite,
    /// A rename onto, or of, a watched file or directory (format version 2 on): `file`
    /// names the watched path, `detail` is a [`Detail::PathChange`].
    FileRename,
    /// An unlink (or `rmdir` through `unlinkat`) of a watched file or directory.
    FileUnlink,
    /// A new hard link to, or onto, a watched file.
    FileLink,
    /// A signal that dumps core (`SIGSEGV`, `SIGABRT`, ...) sent to another process (or a
    /// process group): `target` (null for a group), `syscall.operation` names the signal.
    CoreSignal,
}

impl Kind {
    /// Every kind, in declaration order: `ALL[i]` is the kind the codec writes as `i`.
    pub const ALL: &'static [Kind] = <Kind as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind `{s}`; expected one of {}", names.join(", "))
            })
    }
}

/// One enriched event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: Kind,
    /// Wall-clock time of the kernel event, RFC 3339 UTC with nanoseconds.
    pub time: String,
    /// Whether the syscall succeeded.
    pub ok: bool,
    /// The errno when `ok` is false.
    pub errno: Option<i32>,
    /// The acting process (null for `loss`).
    pub process: Option<Process>,
    /// The identity behind the process (null for `loss`).
    pub identity: Option<Identity>,
    /// For `file_open` and `proc_access`.
    pub file: Option<FileAccess>,
    /// For the kinds that act on another process.
    pub target: Option<Target>,
    /// Syscall-specific details.
    pub syscall: Option<SyscallDetail>,
    /// For `loss`.
    pub loss: Option<Loss>,
    /// What the fields above cannot say (format version 2 on; always null in a version-1
    /// record).
    pub detail: Option<Detail>,
}

/// More about an event. Append-only: its variant index is its number in the log, so a new
/// variant only ever goes at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    /// `count` repeats of the access the event describes (same process, file, syscall and
    /// access) that the kernel counted instead of sending each; no other event reports them.
    Repeated {
        count: u64,
        /// RFC 3339 UTC times (as `Event::time`): none of the counted accesses happened before
        /// `first`, the last at `last` (the event's `time`).
        first: String,
        last: String,
    },
    /// Of the `files` a rule (`rule`, its pattern) matched in `directory`, only `watched` are
    /// watched by inode; the rest are matched by directory and name only.
    WatchOverflow {
        directory: String,
        rule: String,
        files: u64,
        watched: u64,
    },
    /// What a `perf_event_open` asked for, from its `perf_event_attr`.
    PerfEventOpen {
        /// `attr.type`: `hardware`, `software`, `tracepoint`, ... (`type N` when unknown).
        #[serde(rename = "type")]
        event_type: String,
        /// `attr.config`.
        config: u64,
        /// `attr.sample_type` as passed.
        sample_type: u64,
        /// Its bits by name (`ip`, `regs_user`, `stack_user`, ...).
        samples: Vec<String>,
        /// Samples copy the target's user stack or registers (`stack_user`, `regs_user`):
        /// another process's memory.
        reads_user_memory: bool,
        /// The CPU argument (-1: any).
        cpu: i32,
        /// pid -1: every process on `cpu`, no single target.
        system_wide: bool,
    },
    /// A BPF program load or attachment, from its `bpf_attr`.
    Bpf {
        /// `BPF_PROG_LOAD`, `BPF_PROG_ATTACH`, `BPF_RAW_TRACEPOINT_OPEN`, `BPF_LINK_CREATE`,
        /// or `PERF_EVENT_IOC_SET_BPF` (the `ioctl` attaching a program to a perf event).
        command: String,
        /// `BPF_PROG_LOAD`: the program type (`BPF_PROG_TYPE_KPROBE`, ...).
        prog_type: Option<String>,
        /// `BPF_PROG_LOAD`: the program's name as given.
        prog_name: Option<String>,
        /// The attach type (`expected_attach_type` of a load, `attach_type` of an attach).
        attach_type: Option<String>,
        /// `BPF_RAW_TRACEPOINT_OPEN`: the tracepoint's name.
        tracepoint: Option<String>,
        /// The program's descriptor (attachments).
        prog_fd: Option<i32>,
        /// What it is attached to (`BPF_PROG_ATTACH`, `BPF_LINK_CREATE`, the perf event of
        /// `PERF_EVENT_IOC_SET_BPF`): a cgroup, map or other descriptor.
        target_fd: Option<i32>,
    },
    /// The core-file size limit set on the target (18446744073709551615: unlimited).
    CoreLimit { soft: u64, hard: u64 },
    /// A fanotify mark: what it covers, and whether that holds watched files.
    FanotifyMark {
        /// `inode` (the file or directory itself), `mount` or `filesystem`.
        mark: String,
        /// The event mask, symbolic (`FAN_OPEN|FAN_ACCESS`).
        mask: String,
        /// The mark flags, symbolic (`FAN_MARK_ADD|FAN_MARK_MOUNT`).
        flags: String,
        /// The path as passed.
        requested: String,
        /// The path resolved against the caller's root, working directory or directory fd,
        /// when that was still possible.
        path: Option<String>,
        /// How the mark covers watched files: `file` (a watched file), `directory` (one
        /// holding watched files), `mount` or `filesystem` (the one holding them); null
        /// when it covers none.
        covers: Option<String>,
        /// The watched files it covers (the first 16 by path).
        watched: Vec<String>,
        /// How many watched files it covers.
        watched_count: u64,
    },
    /// The file was opened through an overlayfs mount (device `overlay_dev`) by the path
    /// `opened`; `file` names the real file on the layer below, the one that was read.
    Overlay { opened: String, overlay_dev: String },
    /// The watched file was no longer at its watched path `was`: it was renamed or moved, its
    /// directory was, or it was reached by another hard link after `was` got a new file.
    /// `file.path` is where it was opened.
    Moved { was: String },
    /// The two names of a `file_rename`/`file_link` (`to` is none for `file_unlink`), each
    /// resolved as the caller saw it (canonical directory and name), or as passed when it
    /// could not be; `flags` names the call's flags (`RENAME_EXCHANGE`, `RENAME_NOREPLACE`,
    /// `RENAME_WHITEOUT`, `AT_REMOVEDIR`, ...).
    PathChange {
        from: String,
        to: Option<String>,
        flags: Vec<String>,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Process {
    /// Thread-group id.
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    /// Login uid; 4294967295 means no login session.
    pub auid: u32,
    pub comm: String,
    /// Executable path (empty when it could not be learned).
    pub exe: String,
    /// Arguments joined by spaces.
    pub cmdline: String,
    /// Executable names of the ancestors, parent first, up to init.
    pub ancestors: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// Unix user name of the effective uid (the number when it has no name).
    pub user: String,
    /// systemd unit from the cgroup path (`sshd.service`, `session-3.scope`).
    pub unit: Option<String>,
    pub container: Option<Container>,
    /// Kubernetes pod uid when the cgroup path names one.
    pub pod_uid: Option<String>,
    /// Whether a person is behind this process.
    pub human: bool,
    /// Why `human` was decided so (`login uid 1000 set`, `no login uid, unit cron.service`...).
    pub human_reason: String,
    /// The owner configured for this identity.
    pub owner: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    /// `docker`, `containerd`, `cri-o`, `podman`.
    pub runtime: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileAccess {
    /// The canonical path of the file that was opened (for `proc_access`, `/proc/<pid>/<name>`).
    pub path: String,
    /// The path string the process passed, as it passed it.
    pub requested: String,
    /// Credential kind of the matching rule (`password-db`, `ssh-key`, ...; `procfs` for proc_access).
    pub kind: String,
    /// `read`, `write`, `read-write` or `path` (O_PATH).
    pub access: String,
    /// Open flags, symbolic (`O_RDONLY|O_CLOEXEC`).
    pub flags: String,
    /// Which syscall opened it (`openat`, `openat2`, ...).
    pub syscall: String,
    /// Device (`major:minor`) and inode of the opened file, when it was opened.
    pub dev: Option<String>,
    pub inode: Option<u64>,
    /// Who answers for this credential: the `owner` of the watch rule that matched.
    pub owner: Option<String>,
    /// The open came through the 32-bit compat syscall entry (`int 0x80`), unusual for a
    /// 64-bit program.
    pub compat: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub pid: u32,
    pub exe: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyscallDetail {
    /// `ptrace` request (`PTRACE_ATTACH`), `keyctl` operation (`KEYCTL_READ`), io_uring opcode.
    pub operation: Option<String>,
    /// Key serial for `keyctl` (its second argument) and the result of `add_key`/`request_key`.
    pub key_serial: Option<i64>,
    pub key_type: Option<String>,
    pub key_description: Option<String>,
    /// Bytes transferred by `process_vm_readv`/`writev`.
    pub bytes: Option<u64>,
    /// The descriptor number in the target (`pidfd_getfd`).
    pub target_fd: Option<i32>,
    /// Set when the call came through the 32-bit compat entry.
    pub compat: bool,
}

impl Event {
    /// A `loss` event: `counts` (by kind) events from `source` were not delivered. `ok` is
    /// false: something the record should hold is missing.
    pub fn loss(source: &str, counts: BTreeMap<String, u64>, wall_ns: u64) -> Event {
        let total = counts.values().sum();
        Event {
            loss: Some(Loss {
                source: source.to_string(),
                counts,
                total,
            }),
            ..Event::of_agent(Kind::Loss, false, wall_ns)
        }
    }

    /// An event the agent makes about itself: no process, identity, file or target.
    fn of_agent(kind: Kind, ok: bool, wall_ns: u64) -> Event {
        Event {
            kind,
            time: crate::time::rfc3339(wall_ns),
            ok,
            errno: None,
            process: None,
            identity: None,
            file: None,
            target: None,
            syscall: None,
            loss: None,
            detail: None,
        }
    }

    /// A `watch_overflow` event: of the `files` that `rule` matched in `directory`, only
    /// `watched` are watched by inode. `ok` is false while some are not (an event saying
    /// that the overflow ended has `watched` = `files`).
    pub fn watch_overflow(
        directory: &str,
        rule: &str,
        files: u64,
        watched: u64,
        wall_ns: u64,
    ) -> Event {
        Event {
            detail: Some(Detail::WatchOverflow {
                directory: directory.to_string(),
                rule: rule.to_string(),
                files,
                watched,
            }),
            ..Event::of_agent(Kind::WatchOverflow, watched >= files, wall_ns)
        }
    }
}

/// Events the kernel or the agent could not deliver, counted and reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Loss {
    /// Where they were lost: `kernel_ringbuf`, `disk_full`, `stage_<name>`, ... (docs/events.md).
    pub source: String,
    /// Lost events by kind name since the previous `loss` event from the same source.
    #[serde(deserialize_with = "ascending_keys")]
    pub counts: BTreeMap<String, u64>,
    pub total: u64,
}

/// Reads a map whose keys must be strictly ascending. Encoding writes them so; reading a
/// repeated or unordered key into a `BTreeMap` would give a different map, whose bytes are
/// not the ones that were signed (a repeated key would hide its first count).
fn ascending_keys<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, u64>, D::Error> {
    struct Ascending;
    impl<'de> Visitor<'de> for Ascending {
        type Value = BTreeMap<String, u64>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map with strictly ascending keys")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, u64>()? {
                if let Some((last, _)) = out.last_key_value() {
                    if *last >= key {
                        return Err(A::Error::custom(format!(
                            "map key {key:?} does not follow {last:?} in ascending order"
                        )));
                    }
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Ascending)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_str` and serde derive the name each on their own: they must agree, or the JSON
    /// output, `sensorctl --kind` and the query index would name a kind differently.
    #[test]
    fn kind_names_agree_with_serde() {
        for &kind in Kind::ALL {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json.as_str(), Some(kind.as_str()), "{kind:?}");
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
        }
        assert_eq!(Kind::ProcessVmReadv.as_str(), "process_vm_readv");
        assert_eq!(Kind::WatchOverflow.as_str(), "watch_overflow");
        assert_eq!(Kind::PerfEventOpen.as_str(), "perf_event_open");
        assert_eq!(Kind::Prlimit64.as_str(), "prlimit64");
        assert_eq!(Kind::CorePatternWrite.as_str(), "core_pattern_write");
        assert_eq!(Kind::FileRename.as_str(), "file_rename");
        assert_eq!(Kind::FileUnlink.as_str(), "file_unlink");
        assert_eq!(Kind::FileLink.as_str(), "file_link");
        assert_eq!(
            Kind::ALL.len(),
            22,
            "kinds are only ever appended: loss stays 10"
        );
        assert_eq!(Kind::ALL[10], Kind::Loss);
    }

    /// The JSON form docs/events.md shows.
    #[test]
    fn detail_json_is_externally_tagged() {
        let e = Event::watch_overflow("/home/a/.aws/sso/cache", "~/.aws/sso/cache/*", 20_000, 0, 0);
        assert_eq!(
            serde_json::to_value(&e.detail).unwrap(),
            serde_json::json!({"watch_overflow": {
                "directory": "/home/a/.aws/sso/cache",
                "rule": "~/.aws/sso/cache/*",
                "files": 20_000,
                "watched": 0,
            }})
        );
        assert!(!e.ok);
        let repeated = Detail::Repeated {
            count: 3,
            first: "a".into(),
            last: "b".into(),
        };
        assert_eq!(
            serde_json::to_value(&repeated).unwrap(),
            serde_json::json!({"repeated": {"count": 3, "first": "a", "last": "b"}})
        );
    }
}
