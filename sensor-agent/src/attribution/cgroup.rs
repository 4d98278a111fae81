//! What a process's cgroup path says about it: systemd unit, container, Kubernetes pod.
//!
//! Handles pure cgroup v2 (`0::/path`), v1 and the hybrid layout (a `name=systemd`
//! hierarchy beside an often-empty `0::/`). The v2 path is preferred, then `name=systemd`,
//! then the other v1 hierarchies; each field comes from the first path that names it.

use std::{collections::HashMap, os::unix::fs::MetadataExt, path::PathBuf, time::Instant};

use sensor_log::Container;

/// Attribution facts read from `/proc/<pid>/cgroup`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupInfo {
    /// Innermost systemd unit (`nginx.service`, `session-3.scope`).
    pub unit: Option<String>,
    pub container: Option<Container>,
    /// Kubernetes pod uid, with dashes.
    pub pod_uid: Option<String>,
    /// The path lies in a login session (`session-N.scope`) or a user manager
    /// (`user@N.service`).
    pub user_session: bool,
}

/// Parses the contents of `/proc/<pid>/cgroup`.
pub fn parse_cgroup(content: &str) -> CgroupInfo {
    let mut v2 = None;
    let mut systemd = None;
    let mut v1 = Vec::new();
    for line in content.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if path == "/" {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else if controllers == "name=systemd" {
            systemd = Some(path);
        } else {
            v1.push(path);
        }
    }
    let mut info = CgroupInfo::default();
    for path in v2.into_iter().chain(systemd).chain(v1) {
        let found = parse_path(path);
        info.unit = info.unit.or(found.unit);
        info.container = info.container.or(found.container);
        info.pod_uid = info.pod_uid.or(found.pod_uid);
        info.user_session |= found.user_session;
    }
    info
}

fn parse_path(path: &str) -> CgroupInfo {
    let mut info = CgroupInfo::default();
    let mut previous = "";
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part.ends_with(".service") || part.ends_with(".scope") {
            // `user@1000.service/init.scope` is the user manager itself: keep the service.
            if !(part == "init.scope" && info.unit.is_some()) {
                info.unit = Some(part.to_owned());
            }
            if (part.starts_with("session-") && part.ends_with(".scope"))
                || (part.starts_with("user@") && part.ends_with(".service"))
            {
                info.user_session = true;
            }
        }
        if let Some(c) = container_of(previous, part) {
            info.container = Some(c);
        }
        if let Some(uid) = pod_uid_of(part) {
            info.pod_uid = Some(uid);
        }
        previous = part;
    }
    info
}

/// systemd-driver scopes (`docker-<id>.scope`) and cgroupfs-driver directories
/// (`/docker/<id>`, `/kubepods/<qos>/pod<uid>/<id>`). `crio-conmon-` and `libpod-conmon-`
/// (the monitors, not the containers) fail the hex check.
fn container_of(parent: &str, part: &str) -> Option<Container> {
    const PREFIXES: [(&str, &str); 4] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ];
    let stem = part.strip_suffix(".scope").unwrap_or(part);
    let container = |id: &str, runtime: &str| Container {
        id: id.to_owned(),
        runtime: runtime.to_owned(),
    };
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = stem.strip_prefix(prefix).filter(|id| is_container_id(id)) {
            return Some(container(id, runtime));
        }
    }
    if !is_container_id(part) {
        return None;
    }
    if parent == "docker" {
        Some(container(part, "docker"))
    } else if parent.starts_with("pod") {
        // cgroupfs-driver Kubernetes: the path does not say which runtime.
        Some(container(part, "unknown"))
    } else {
        None
    }
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `kubepods-burstable-pod<uid with _>.slice` (systemd driver) or `pod<uid>` (cgroupfs).
fn pod_uid_of(part: &str) -> Option<String> {
    let raw = if part.starts_with("kubepods") {
        let slice = part.strip_suffix(".slice")?;
        &slice[slice.rfind("-pod")? + 4..]
    } else {
        part.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-");
    let uuid_like = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    uuid_like.then_some(uid)
}

/// Maps cgroup v2 ids, which the kernel stamps on every event, to cgroup paths. A process
/// that exits before its `/proc/<pid>/cgroup` is read is still placed by the cgroup it ran
/// in, as long as that cgroup (a service's, a container's) still exists.
pub struct CgroupPaths {
    /// Where cgroup2 is mounted (`/sys/fs/cgroup` on v2, `/sys/fs/cgroup/unified` on hybrid).
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    /// Walks allowed now (a token bucket), and when it was last refilled.
    scan_budget: f64,
    refilled: Instant,
}

/// Walks of the cgroup tree that unknown ids may trigger: a burst, then a steady rate.
const SCAN_BURST: f64 = 8.0;
const SCANS_PER_SECOND: f64 = 10.0;
/// Bounds on one walk, so a huge or looping tree cannot stall the pipeline.
const MAX_CGROUPS: usize = 100_000;
const MAX_DEPTH: usize = 32;

impl CgroupPaths {
    pub fn new() -> CgroupPaths {
        let root = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| cgroup2_mount(&m));
        CgroupPaths {
            root,
            paths: HashMap::new(),
            scan_budget: SCAN_BURST,
            refilled: Instant::now(),
        }
    }

    /// The path of cgroup `id` relative to the cgroup2 root (`/system.slice/x.service`).
    pub fn path(&mut self, id: u64) -> Option<&str> {
        if !self.paths.contains_key(&id) {
            let now = Instant::now();
            let refill = now.duration_since(self.refilled).as_secs_f64() * SCANS_PER_SECOND;
            self.scan_budget = (self.scan_budget + refill).min(SCAN_BURST);
            self.refilled = now;
            if self.scan_budget >= 1.0 {
                self.scan_budget -= 1.0;
                self.scan();
            }
        }
        self.paths.get(&id).map(String::as_str)
    }

    fn scan(&mut self) {
        let Some(root) = &self.root else { return };
        self.paths.clear();
        let mut stack = vec![(root.clone(), String::new(), 0usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            self.paths.insert(
                meta.ino(),
                if rel.is_empty() {
                    "/".to_owned()
                } else {
                    rel.clone()
                },
            );
            if depth >= MAX_DEPTH || self.paths.len() >= MAX_CGROUPS {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    stack.push((entry.path(), format!("{rel}/{name}"), depth + 1));
                }
            }
        }
    }
}

impl Default for CgroupPaths {
    fn default() -> Self {
        CgroupPaths::new()
    }
}

/// The first cgroup2 mount point in a `/proc/self/mountinfo` text.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        mount.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup2_mount_point_from_mountinfo() {
        let info = "30 23 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
                    31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("30 23 0:26 / /x rw - tmpfs tmpfs rw\n"), None);
    }

    /// The real cgroup2 tree of this machine: the root cgroup is known by its id.
    #[test]
    fn the_root_cgroup_is_found_by_id() {
        let mut paths = CgroupPaths::new();
        let root = paths.root.clone().expect("this machine mounts cgroup2");
        let id = std::fs::metadata(&root).expect("cgroup2 root").ino();
        assert_eq!(paths.path(id), Some("/"));
    }

    const ID: &str = "3f2a9c1b7e8d4f6a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a";

    fn container(runtime: &str) -> Option<Container> {
        Some(Container {
            id: ID.into(),
            runtime: runtime.into(),
        })
    }

    #[test]
    fn systemd_service_v2() {
        let info = parse_cgroup("0::/system.slice/nginx.service\n");
        assert_eq!(info.unit.as_deref(), Some("nginx.service"));
        assert!(!info.user_session);
        assert_eq!(info.container, None);
    }

    #[test]
    fn hybrid_uses_name_systemd() {
        let info = parse_cgroup(
            "12:memory:/system.slice/cron.service\n1:name=systemd:/system.slice/cron.service\n0::/\n",
        );
        assert_eq!(info.unit.as_deref(), Some("cron.service"));
    }

    #[test]
    fn this_machine_root_cgroups_name_nothing() {
        let info = parse_cgroup(
            "9:name=systemd:/\n4:memory:/process_api/66906b25e9c825c3b0bdb8a4ba85ce95\n0::/\n",
        );
        assert_eq!(info, CgroupInfo::default());
    }

    #[test]
    fn login_session_and_user_manager() {
        let s = parse_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n");
        assert_eq!(s.unit.as_deref(), Some("session-3.scope"));
        assert!(s.user_session);
        let m = parse_cgroup("0::/user.slice/user-1000.slice/user@1000.service/init.scope\n");
        assert_eq!(m.unit.as_deref(), Some("user@1000.service"));
        assert!(m.user_session);
        let app = parse_cgroup(
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-1234.scope\n",
        );
        assert_eq!(app.unit.as_deref(), Some("app-firefox-1234.scope"));
        assert!(app.user_session);
        assert_eq!(
            parse_cgroup("0::/init.scope\n").unit.as_deref(),
            Some("init.scope")
        );
    }

    #[test]
    fn docker_systemd_and_cgroupfs() {
        let v2 = parse_cgroup(&format!("0::/system.slice/docker-{ID}.scope\n"));
        assert_eq!(v2.container, container("docker"));
        assert_eq!(v2.unit, Some(format!("docker-{ID}.scope")));
        let v1 = parse_cgroup(&format!(
            "12:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n"
        ));
        assert_eq!(v1.container, container("docker"));
        assert_eq!(v1.unit, None);
    }

    #[test]
    fn podman_crio_and_conmon() {
        let p = parse_cgroup(&format!("0::/machine.slice/libpod-{ID}.scope/container\n"));
        assert_eq!(p.container, container("podman"));
        let conmon = parse_cgroup(&format!("0::/machine.slice/libpod-conmon-{ID}.scope\n"));
        assert_eq!(conmon.container, None);
        let c = parse_cgroup(&format!("0::/system.slice/crio-{ID}.scope\n"));
        assert_eq!(c.container, container("cri-o"));
    }

    #[test]
    fn kubernetes_systemd_driver() {
        let info = parse_cgroup(&format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/cri-containerd-{ID}.scope\n"
        ));
        assert_eq!(
            info.pod_uid.as_deref(),
            Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789")
        );
        assert_eq!(info.container, container("containerd"));
        let besteffort = parse_cgroup(&format!(
            "0::/kubepods.slice/kubepods-podaaaaaaaa_bbbb_cccc_dddd_eeeeeeeeeeee.slice/crio-{ID}.scope\n"
        ));
        assert_eq!(
            besteffort.pod_uid.as_deref(),
            Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
        );
        assert_eq!(besteffort.container, container("cri-o"));
    }

    #[test]
    fn kubernetes_cgroupfs_driver_v1() {
        let info = parse_cgroup(&format!(
            "11:memory:/kubepods/burstable/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/{ID}\n"
        ));
        assert_eq!(
            info.pod_uid.as_deref(),
            Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789")
        );
        assert_eq!(info.container, container("unknown"));
    }

    #[test]
    fn malformed_lines_are_ignored() {
        assert_eq!(parse_cgroup("garbage\n\n0:\n"), CgroupInfo::default());
    }
}
