//! Keeps the kernel's watched-set maps equal to the latest resolved [`WatchSet`].
//!
//! Each map's contents are tracked as the kernel acknowledged them, and every refresh is the
//! difference between those contents and the new set: an update that failed is retried by
//! the next refresh, and one that fails never stops the others.

use std::{collections::HashMap as StdHashMap, hash::Hash};

use aya::{
    maps::{Array, HashMap, MapData, MapError},
    Ebpf, Pod,
};
use sensor_common::{
    InodeKey, LeafKey, NameKey, TreeGate, WatchValue, MAX_TREE_DEPTH, MAX_WATCHED, TREE_GATE,
    WATCHED_DIRS, WATCHED_INODES, WATCHED_LEAVES, WATCHED_NAMES,
};

use super::take_hash_map;
use crate::{watch::WatchSet, Error};

pub struct MapSync {
    inodes: Tracked<InodeKey>,
    dirs: Tracked<InodeKey>,
    names: Tracked<NameKey>,
    leaves: Tracked<LeafKey>,
    gate: Array<MapData, TreeGate>,
    generation: u64,
}

impl MapSync {
    pub fn take(ebpf: &mut Ebpf) -> Result<MapSync, Error> {
        Ok(MapSync {
            inodes: Tracked::take(ebpf, WATCHED_INODES)?,
            dirs: Tracked::take(ebpf, WATCHED_DIRS)?,
            names: Tracked::take(ebpf, WATCHED_NAMES)?,
            leaves: Tracked::take(ebpf, WATCHED_LEAVES)?,
            gate: {
                let map = ebpf
                    .take_map(TREE_GATE)
                    .ok_or(Error::MissingMap(TREE_GATE))?;
                Array::try_from(map).map_err(|e| Error::Map {
                    map: TREE_GATE,
                    reason: e.to_string(),
                })?
            },
            generation: 0,
        })
    }

    /// Brings the maps to `new`. Every update is tried; the error counts those that failed
    /// and names the first.
    ///
    /// The ancestry walk's gate moves to `new`'s resolution only once the maps hold all of
    /// `new`: while they do not, every file in a directory they miss is walked, as deep as
    /// the walk goes.
    pub fn apply(&mut self, new: &WatchSet) -> Result<(), Error> {
        let mut failures = Failures::default();
        self.inodes.apply(new.inodes(), &mut failures);
        self.dirs.apply(new.dirs(), &mut failures);
        self.names.apply(new.names(), &mut failures);
        self.leaves.apply(new.leaves(), &mut failures);
        self.generation += 1;
        let gate = if failures.first.is_none() {
            TreeGate {
                generation: self.generation,
                ..new.tree_gate()
            }
        } else {
            TreeGate {
                not_before: i64::MIN,
                generation: self.generation,
                max_depth: MAX_TREE_DEPTH,
                _pad: 0,
            }
        };
        if let Err(e) = self.gate.set(0, gate, 0) {
            failures.note(TREE_GATE, e);
        }
        match failures.first {
            None => Ok(()),
            Some((map, source)) => Err(Error::WatchSync {
                failed: failures.count,
                map,
                source,
            }),
        }
    }
}

#[derive(Default)]
struct Failures {
    count: usize,
    first: Option<(&'static str, MapError)>,
}

impl Failures {
    fn note(&mut self, map: &'static str, error: MapError) {
        self.count += 1;
        self.first.get_or_insert((map, error));
    }
}

/// A kernel map and the entries the kernel confirmed it holds.
struct Tracked<K> {
    name: &'static str,
    map: HashMap<MapData, K, WatchValue>,
    held: StdHashMap<K, WatchValue>,
}

impl<K: Pod + Eq + Hash> Tracked<K> {
    /// The map as loaded: empty.
    fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Tracked<K>, Error> {
        Ok(Tracked {
            name,
            map: take_hash_map(ebpf, name)?,
            held: StdHashMap::new(),
        })
    }

    /// Adds before removing, so a file watched before and after is never briefly unwatched;
    /// unless the additions would not fit beside the stale entries: then those go first.
    fn apply(&mut self, new: &StdHashMap<K, WatchValue>, failures: &mut Failures) {
        let stale: Vec<K> = self
            .held
            .keys()
            .filter(|k| !new.contains_key(k))
            .copied()
            .collect();
        let changed: Vec<(&K, &WatchValue)> = new
            .iter()
            .filter(|(k, v)| self.held.get(k) != Some(v))
            .collect();
        let added = changed
            .iter()
            .filter(|(k, _)| !self.held.contains_key(k))
            .count();
        let room_first = self.held.len() + added > MAX_WATCHED as usize;
        if room_first {
            self.remove(&stale, failures);
        }
        for (key, value) in changed {
            match self.map.insert(key, value, 0) {
                Ok(()) => {
                    self.held.insert(*key, *value);
                }
                Err(e) => failures.note(self.name, e),
            }
        }
        if !room_first {
            self.remove(&stale, failures);
        }
    }

    fn remove(&mut self, keys: &[K], failures: &mut Failures) {
        for key in keys {
            match self.map.remove(key) {
                Ok(()) => {
                    self.held.remove(key);
                }
                // Not there: what was wanted.
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    self.held.remove(key);
                }
                Err(e) => failures.note(self.name, e),
            }
        }
    }
}
