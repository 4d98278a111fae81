//! Who is behind a process: its executable and ancestry (process table), its systemd unit,
//! container and pod (cgroup), its user, whether a person is behind it, and the configured
//! owner. Everything is cached per process so an event costs hash lookups, not `/proc` reads.

pub mod cgroup;
pub mod process;
pub mod users;

use std::path::PathBuf;

use globset::GlobMatcher;
use sensor_common::EventHeader;
use sensor_log::{Identity, Process};

pub use cgroup::{parse_cgroup, CgroupInfo};
pub use process::ProcessTable;
pub use users::UserNames;

use crate::pipeline::decode::c_string;

/// `auid` of a process without a login session.
pub const NO_AUID: u32 = u32::MAX;

/// One `[[owner]]` entry: every matcher given must match (globs).
#[derive(Clone, Debug)]
pub struct OwnerRule {
    pub owner: String,
    unit: Option<GlobMatcher>,
    user: Option<GlobMatcher>,
    container: Option<GlobMatcher>,
    exe: Option<GlobMatcher>,
}

/// Which `[[owner]]` key is wrong, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct OwnerRuleError {
    pub field: &'static str,
    pub message: String,
}

impl OwnerRule {
    pub fn new(
        owner: &str,
        unit: Option<&str>,
        user: Option<&str>,
        container: Option<&str>,
        exe: Option<&str>,
    ) -> Result<OwnerRule, OwnerRuleError> {
        let compile = |field: &'static str, pattern: Option<&str>| {
            pattern
                .map(|p| {
                    globset::Glob::new(p)
                        .map(|g| g.compile_matcher())
                        .map_err(|e| OwnerRuleError {
                            field,
                            message: format!("`{p}`: bad glob: {e}"),
                        })
                })
                .transpose()
        };
        if owner.trim().is_empty() {
            return Err(OwnerRuleError {
                field: "owner",
                message: "is empty".into(),
            });
        }
        let rule = OwnerRule {
            owner: owner.to_owned(),
            unit: compile("unit", unit)?,
            user: compile("user", user)?,
            container: compile("container", container)?,
            exe: compile("exe", exe)?,
        };
        if rule.unit.is_none()
            && rule.user.is_none()
            && rule.container.is_none()
            && rule.exe.is_none()
        {
            return Err(OwnerRuleError {
                field: "owner",
                message: "needs at least one of `unit`, `user`, `container`, `exe`".into(),
            });
        }
        Ok(rule)
    }

    /// A matcher given for a value the identity lacks (no unit, no container) does not match.
    pub fn matches(
        &self,
        unit: Option<&str>,
        user: &str,
        container: Option<&str>,
        exe: &str,
    ) -> bool {
        fn check(m: &Option<GlobMatcher>, value: Option<&str>) -> bool {
            m.as_ref()
                .is_none_or(|m| value.is_some_and(|v| m.is_match(v)))
        }
        check(&self.unit, unit)
            && check(&self.user, Some(user))
            && check(&self.container, container)
            && check(&self.exe, Some(exe))
    }
}

/// Process and identity attribution for event headers.
pub struct Attribution {
    pub procs: ProcessTable,
    users: UserNames,
    owners: Vec<OwnerRule>,
}

impl Attribution {
    /// Scans `proc_root` for the processes running now.
    pub fn new(
        proc_root: impl Into<PathBuf>,
        passwd: impl Into<PathBuf>,
        owners: Vec<OwnerRule>,
    ) -> Attribution {
        let mut procs = ProcessTable::new(proc_root);
        procs.scan();
        Attribution {
            procs,
            users: UserNames::new(passwd),
            owners,
        }
    }

    /// The `process` object of an event.
    pub fn process(&mut self, h: &EventHeader) -> Process {
        let entry = self.procs.get(h.tgid);
        let (exe, cmdline) = (entry.exe.to_string(), entry.cmdline.to_string());
        Process {
            pid: h.tgid,
            tid: h.tid,
            ppid: h.ppid,
            uid: h.uid,
            euid: h.euid,
            gid: h.gid,
            auid: h.auid,
            comm: c_string(&h.comm),
            exe,
            cmdline,
            ancestors: self.procs.ancestors(h.ppid),
        }
    }

    /// The `identity` object of an event, cached per process for its (euid, auid, cgroup).
    pub fn identity(&mut self, h: &EventHeader) -> Identity {
        if let Some((euid, auid, cgroup_id, identity)) = &self.procs.get(h.tgid).identity {
            if *euid == h.euid && *auid == h.auid && *cgroup_id == h.cgroup_id {
                return identity.clone();
            }
        }
        let cgroup = self.procs.cgroup(h.tgid, h.cgroup_id);
        let exe = self.procs.get(h.tgid).exe.clone();
        let user = self.users.name(h.euid);
        let (human, human_reason) = if h.auid != NO_AUID {
            (
                true,
                format!("login uid {} ({})", h.auid, self.users.name(h.auid)),
            )
        } else if cgroup.user_session {
            let unit = cgroup.unit.as_deref().unwrap_or("?");
            (
                true,
                format!("no login uid; unit {unit} is in a user session"),
            )
        } else {
            (false, non_human_reason(&cgroup))
        };
        let container_id = cgroup.container.as_ref().map(|c| c.id.as_str());
        let owner = self
            .owners
            .iter()
            .find(|o| o.matches(cgroup.unit.as_deref(), &user, container_id, &exe))
            .map(|o| o.owner.clone());
        let identity = Identity {
            user: user.to_string(),
            unit: cgroup.unit.clone(),
            container: cgroup.container.clone(),
            pod_uid: cgroup.pod_uid.clone(),
            human,
            human_reason,
            owner,
        };
        self.procs.get(h.tgid).identity = Some((h.euid, h.auid, h.cgroup_id, identity.clone()));
        identity
    }
}

/// Names the evidence for a non-human actor: container first (the most specific), then unit.
fn non_human_reason(cgroup: &CgroupInfo) -> String {
    match (&cgroup.container, &cgroup.pod_uid, &cgroup.unit) {
        (Some(c), Some(pod), _) => {
            format!(
                "no login uid; container {} ({}) in pod {pod}",
                short_id(&c.id),
                c.runtime
            )
        }
        (Some(c), None, _) => format!(
            "no login uid; container {} ({})",
            short_id(&c.id),
            c.runtime
        ),
        (None, _, Some(unit)) => format!("no login uid; unit {unit}"),
        (None, _, None) => "no login uid; no unit or container in its cgroup".to_owned(),
    }
}

/// The 12-character form `docker ps` shows.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_log::Container;

    #[test]
    fn owner_rules_need_every_given_matcher() {
        let rule =
            OwnerRule::new("web", Some("nginx*.service"), Some("www-data"), None, None).unwrap();
        assert!(rule.matches(Some("nginx.service"), "www-data", None, "/usr/sbin/nginx"));
        assert!(!rule.matches(Some("nginx.service"), "root", None, "/usr/sbin/nginx"));
        assert!(!rule.matches(None, "www-data", None, "/usr/sbin/nginx"));
        let exe = OwnerRule::new("backup", None, None, None, Some("/usr/bin/restic")).unwrap();
        assert!(exe.matches(None, "root", None, "/usr/bin/restic"));
        assert_eq!(
            OwnerRule::new("x", None, None, None, None)
                .unwrap_err()
                .field,
            "owner"
        );
        assert_eq!(
            OwnerRule::new("x", Some("a[b"), None, None, None)
                .unwrap_err()
                .field,
            "unit"
        );
    }

    #[test]
    fn reasons_name_the_evidence() {
        let id = "3f2a9c1b7e8d4f6a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a".to_owned();
        let container = Some(Container {
            id,
            runtime: "docker".into(),
        });
        let c = CgroupInfo {
            container: container.clone(),
            ..CgroupInfo::default()
        };
        assert_eq!(
            non_human_reason(&c),
            "no login uid; container 3f2a9c1b7e8d (docker)"
        );
        let u = CgroupInfo {
            unit: Some("nginx.service".into()),
            ..CgroupInfo::default()
        };
        assert_eq!(non_human_reason(&u), "no login uid; unit nginx.service");
        let p = CgroupInfo {
            container,
            pod_uid: Some("p-1".into()),
            ..CgroupInfo::default()
        };
        assert_eq!(
            non_human_reason(&p),
            "no login uid; container 3f2a9c1b7e8d (docker) in pod p-1"
        );
    }
}
