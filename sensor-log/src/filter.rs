//! The conditions `sensorctl events` and `sensor-collector events` select records by, applied
//! to decoded records. Stores narrow their search with indexes of their own; this decides.

use crate::record::{Body, Record};

/// The denormalised query columns of a record (all NULL for log-internal records).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexColumns {
    pub pid: Option<u32>,
    pub exe: Option<String>,
    pub user: Option<String>,
    pub unit: Option<String>,
    pub container: Option<String>,
    pub path: Option<String>,
    pub human: Option<bool>,
}

impl IndexColumns {
    pub fn of(body: &Body) -> IndexColumns {
        let Body::Event(e) = body else {
            return IndexColumns::default();
        };
        let identity = e.identity.as_ref();
        IndexColumns {
            pid: e.process.as_ref().map(|p| p.pid),
            exe: e.process.as_ref().map(|p| p.exe.clone()),
            user: identity.map(|i| i.user.clone()),
            unit: identity.and_then(|i| i.unit.clone()),
            container: identity
                .and_then(|i| i.container.as_ref())
                .map(|c| c.id.clone()),
            path: e.file.as_ref().map(|f| f.path.clone()),
            human: identity.map(|i| i.human),
        }
    }
}

/// Conditions on records; every set field must hold.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub since_ns: Option<u64>,
    pub until_ns: Option<u64>,
    /// Kind names (`Body::kind_name`); empty means any.
    pub kinds: Vec<String>,
    /// Literal prefix of the path pattern; the caller matches the full pattern itself.
    pub path_prefix: Option<String>,
    pub pid: Option<u32>,
    pub exe: Option<String>,
    pub user: Option<String>,
    pub unit: Option<String>,
    pub container: Option<String>,
    pub human: Option<bool>,
    /// Only records after this sequence number (`--follow` polls with the last one seen).
    pub after_seq: Option<u64>,
}

impl Filter {
    /// The filter applied to decoded data, the authority over what the SQL selected.
    pub fn matches(&self, record: &Record) -> bool {
        let c = IndexColumns::of(&record.body);
        let wall = record.header.wall_ns;
        self.since_ns.is_none_or(|s| wall >= s)
            && self.until_ns.is_none_or(|u| wall <= u)
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == record.body.kind_name()))
            && self.path_prefix.as_ref().is_none_or(|p| {
                c.path
                    .as_ref()
                    .is_some_and(|path| path.starts_with(p.as_str()))
            })
            && self.pid.is_none_or(|p| c.pid == Some(p))
            && self.exe.as_ref().is_none_or(|x| c.exe.as_ref() == Some(x))
            && self
                .user
                .as_ref()
                .is_none_or(|x| c.user.as_ref() == Some(x))
            && self
                .unit
                .as_ref()
                .is_none_or(|x| c.unit.as_ref() == Some(x))
            && self
                .container
                .as_ref()
                .is_none_or(|x| c.container.as_ref() == Some(x))
            && self.human.is_none_or(|h| c.human == Some(h))
            && self.after_seq.is_none_or(|s| record.header.seq > s)
    }
}
