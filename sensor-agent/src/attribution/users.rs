//! uid → user name from `/etc/passwd`, cached. An unknown uid re-reads the file at most
//! every [`RELOAD_INTERVAL`], so users created after start get their names.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

pub struct UserNames {
    path: PathBuf,
    names: HashMap<u32, Arc<str>>,
    loaded: Option<Instant>,
}

impl UserNames {
    pub fn new(path: impl Into<PathBuf>) -> UserNames {
        let mut users = UserNames {
            path: path.into(),
            names: HashMap::new(),
            loaded: None,
        };
        users.reload();
        users
    }

    /// The name of `uid`, or the number as text when it has none.
    pub fn name(&mut self, uid: u32) -> Arc<str> {
        if let Some(name) = self.names.get(&uid) {
            return name.clone();
        }
        if self.loaded.is_none_or(|t| t.elapsed() >= RELOAD_INTERVAL) {
            self.reload();
        }
        // Cached so a uid without a name does not cost a lookup per event; replaced by the
        // next reload if the user appears.
        self.names
            .entry(uid)
            .or_insert_with(|| uid.to_string().into())
            .clone()
    }

    fn reload(&mut self) {
        self.loaded = Some(Instant::now());
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        self.names = parse_passwd(&text);
    }
}

fn parse_passwd(text: &str) -> HashMap<u32, Arc<str>> {
    let mut names = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(uid) = uid.parse::<u32>() {
            // The first entry for a uid wins, as with getpwuid.
            names.entry(uid).or_insert_with(|| Arc::from(name));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_passwd_and_numbers_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nbroken\ntoor:x:0:0::/:/bin/sh\n").unwrap();
        let mut users = UserNames::new(&path);
        assert_eq!(&*users.name(0), "root");
        assert_eq!(&*users.name(1000), "alice");
        assert_eq!(&*users.name(4242), "4242");
    }
}
