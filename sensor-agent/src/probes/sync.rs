//! Keeps the kernel's watched-set maps equal to the latest resolved [`WatchSet`].
//!
//! Each map's contents are tracked as the kernel acknowledged them, and every refresh is the
//! difference between those contents and the new set: an update that failed is retried by
//! the next refresh, and one that fails never stops the others.
//!
//! `WATCH_FILTER` is written around the inode and directory maps' updates, so that a key
//! the kernel may find in them always has its bit (sensor-common's `WatchFilter`): before
//! them, with the bits of what they hold and of what they are about to hold; after them,
//! with the bits of what they hold.

use std::{collections::HashMap as StdHashMap, hash::Hash};

use aya::{
    maps::{Array, HashMap, MapData, MapError},
    Ebpf, Pod,
};
use sensor_common::{
    InodeKey, LeafKey, NameKey, TreeGate, WatchFilter, WatchValue, MAX_TREE_DEPTH, MAX_WATCHED,
    TREE_GATE, WATCHED_DIRS, WATCHED_INODES, WATCHED_LEAVES, WATCHED_NAMES, WATCH_FILTER,
    WATCH_FILTER_WORDS,
};

use super::take_map;
use crate::{watch::WatchSet, Error};

pub struct MapSync {
    inodes: Tracked<InodeKey>,
    dirs: Tracked<InodeKey>,
    names: Tracked<NameKey>,
    leaves: Tracked<LeafKey>,
    gate: Array<MapData, TreeGate>,
    filter: Array<MapData, WatchFilter>,
    /// The filter as the kernel holds it (all clear at load).
    filter_held: Box<WatchFilter>,
    generation: u64,
}

impl MapSync {
    pub fn take(ebpf: &mut Ebpf) -> Result<MapSync, Error> {
        Ok(MapSync {
            inodes: Tracked::take(ebpf, WATCHED_INODES)?,
            dirs: Tracked::take(ebpf, WATCHED_DIRS)?,
            names: Tracked::take(ebpf, WATCHED_NAMES)?,
            leaves: Tracked::take(ebpf, WATCHED_LEAVES)?,
            gate: take_map(ebpf, TREE_GATE)?,
            filter: take_map(ebpf, WATCH_FILTER)?,
            filter_held: filter_of(std::iter::empty()),
            generation: 0,
        })
    }

    /// Brings the maps to `new`. Every update is tried; the error counts those that failed
    /// and names the first.
    ///
    /// The ancestry walk's gate moves to `new`'s resolution only once the maps hold all of
    /// `new`: while they do not, every file in a directory they miss is walked, as deep as
    /// the walk goes.
    ///
    /// If the filter cannot take the new keys' bits, nothing changes (the next refresh
    /// tries again): a key inserted without its bit would never be looked up.
    pub fn apply(&mut self, new: &WatchSet) -> Result<(), Error> {
        let mut failures = Failures::default();
        let widened = filter_of(
            self.inodes
                .held
                .keys()
                .chain(self.dirs.held.keys())
                .chain(new.inodes().keys())
                .chain(new.dirs().keys()),
        );
        if let Err(e) = self.write_filter(widened) {
            failures.note(WATCH_FILTER, e);
            return failures.into_result();
        }
        self.inodes.apply(new.inodes(), &mut failures);
        self.dirs.apply(new.dirs(), &mut failures);
        let narrowed = filter_of(self.inodes.held.keys().chain(self.dirs.held.keys()));
        if let Err(e) = self.write_filter(narrowed) {
            failures.note(WATCH_FILTER, e);
        }
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
        failures.into_result()
    }

    /// Writes `filter` unless the kernel holds it already.
    fn write_filter(&mut self, filter: Box<WatchFilter>) -> Result<(), MapError> {
        if filter != self.filter_held {
            self.filter.set(0, *filter, 0)?;
            self.filter_held = filter;
        }
        Ok(())
    }
}

/// The filter with the bits of `keys` set.
fn filter_of<'k>(keys: impl Iterator<Item = &'k InodeKey>) -> Box<WatchFilter> {
    let mut filter = Box::new([0u64; WATCH_FILTER_WORDS]);
    for key in keys {
        let (word, mask) = key.filter_bit();
        filter[word] |= mask;
    }
    filter
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

    /// `Err` naming the first failure, if there was one.
    fn into_result(self) -> Result<(), Error> {
        match self.first {
            None => Ok(()),
            Some((map, source)) => Err(Error::WatchSync {
                failed: self.count,
                map,
                source,
            }),
        }
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
            map: take_map(ebpf, name)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dev: u32, ino: u64) -> InodeKey {
        InodeKey { dev, _pad: 0, ino }
    }

    fn has(filter: &WatchFilter, key: &InodeKey) -> bool {
        let (word, mask) = key.filter_bit();
        filter[word] & mask != 0
    }

    #[test]
    fn every_key_of_the_filter_has_its_bit() {
        let keys: Vec<InodeKey> = (0..5000)
            .map(|i| key(0x0080_0001 + i % 3, 1 + i as u64 * 7))
            .collect();
        let filter = filter_of(keys.iter());
        assert!(keys.iter().all(|k| has(&filter, k)));
        assert!(filter_of(std::iter::empty()).iter().all(|w| *w == 0));
    }

    /// Inode numbers come in runs on one device: neighbours of watched keys must not share
    /// their bits, or the filter spares no lookup where it matters.
    #[test]
    fn the_keys_around_watched_ones_are_mostly_clear() {
        let watched: Vec<InodeKey> = (0..2000).map(|i| key(0x0080_0001, 1000 + i * 50)).collect();
        let filter = filter_of(watched.iter());
        let others = (0..100_000u64)
            .map(|i| key(0x0080_0001, 1000 + i))
            .filter(|k| !watched.contains(k));
        let (mut looked, mut total) = (0, 0);
        for k in others {
            total += 1;
            looked += usize::from(has(&filter, &k));
        }
        // 2,000 bits of 262,144 set: about 0.8 % of other keys look.
        assert!(
            looked * 100 < total * 2,
            "{looked} of {total} keys looked up"
        );
    }
}
