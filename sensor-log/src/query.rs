//! Reading records back for `sensorctl events`, `identities` and `--follow`.
//!
//! SQL on the index columns only narrows the candidate rows; every filter is applied again to
//! the record decoded from its signed bytes, and only decoded data is returned.

use rusqlite::types::Value;

use crate::error::Result;
use crate::record::{Body, Record};
use crate::store::{to_i64, Store};

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

    fn sql(&self) -> Result<(String, Vec<Value>)> {
        let mut conditions: Vec<String> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        let mut push = |condition: &str, value: Value| {
            values.push(value);
            conditions.push(condition.replace('?', &format!("?{}", values.len())));
        };
        if let Some(s) = self.since_ns {
            push("wall_ns >= ?", Value::Integer(to_i64(s)?));
        }
        if let Some(u) = self.until_ns {
            push("wall_ns <= ?", Value::Integer(to_i64(u)?));
        }
        if let Some(p) = &self.path_prefix {
            // The prefix holds no glob metacharacters, so SQLite turns this into an index range.
            push("path GLOB ?", Value::Text(format!("{p}*")));
        }
        if let Some(p) = self.pid {
            push("pid = ?", Value::Integer(i64::from(p)));
        }
        for (column, value) in [
            ("exe", &self.exe),
            ("user", &self.user),
            ("unit", &self.unit),
            ("container", &self.container),
        ] {
            if let Some(v) = value {
                push(&format!("{column} = ?"), Value::Text(v.clone()));
            }
        }
        if let Some(h) = self.human {
            push("human = ?", Value::Integer(i64::from(h)));
        }
        if let Some(s) = self.after_seq {
            push("seq > ?", Value::Integer(to_i64(s)?));
        }
        if !self.kinds.is_empty() {
            let mut placeholders = Vec::new();
            for k in &self.kinds {
                values.push(Value::Text(k.clone()));
                placeholders.push(format!("?{}", values.len()));
            }
            conditions.push(format!("kind IN ({})", placeholders.join(", ")));
        }
        let clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        Ok((
            format!("SELECT bytes FROM records {clause} ORDER BY seq"),
            values,
        ))
    }
}

impl Store {
    /// Visits matching records in sequence order until `visit` returns false. A row whose
    /// bytes do not decode is an error (run `sensorctl verify`), never silently skipped.
    pub fn query(
        &self,
        filter: &Filter,
        mut visit: impl FnMut(Record) -> Result<bool>,
    ) -> Result<()> {
        let (sql, values) = filter.sql()?;
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
        while let Some(row) = rows.next()? {
            let bytes: Vec<u8> = row.get(0)?;
            let record = Record::decode(&bytes)?;
            if filter.matches(&record) && !visit(record)? {
                break;
            }
        }
        Ok(())
    }
}
