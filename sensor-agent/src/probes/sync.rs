//! Keeps the kernel's watched-set maps equal to the latest resolved [`WatchSet`].

use std::{collections::HashMap as StdHashMap, hash::Hash};

use aya::{
    maps::{HashMap, MapData},
    Ebpf,
};
use sensor_common::{InodeKey, NameKey, WatchValue, WATCHED_DIRS, WATCHED_INODES, WATCHED_NAMES};

use super::take_hash_map;
use crate::{watch::WatchSet, Error};

pub struct MapSync {
    inodes: HashMap<MapData, InodeKey, WatchValue>,
    dirs: HashMap<MapData, InodeKey, WatchValue>,
    names: HashMap<MapData, NameKey, WatchValue>,
}

impl MapSync {
    pub fn take(ebpf: &mut Ebpf) -> Result<MapSync, Error> {
        Ok(MapSync {
            inodes: take_hash_map(ebpf, WATCHED_INODES)?,
            dirs: take_hash_map(ebpf, WATCHED_DIRS)?,
            names: take_hash_map(ebpf, WATCHED_NAMES)?,
        })
    }

    /// Brings the maps from `old` to `new`. Entries are added before stale ones are removed,
    /// so a file watched in both sets is never briefly unwatched.
    pub fn apply(&mut self, old: Option<&WatchSet>, new: &WatchSet) -> Result<(), Error> {
        update(
            &mut self.inodes,
            WATCHED_INODES,
            old.map(|o| o.inodes()),
            new.inodes(),
        )?;
        update(
            &mut self.dirs,
            WATCHED_DIRS,
            old.map(|o| o.dirs()),
            new.dirs(),
        )?;
        update(
            &mut self.names,
            WATCHED_NAMES,
            old.map(|o| o.names()),
            new.names(),
        )
    }
}

fn update<K: aya::Pod + Eq + Hash>(
    map: &mut HashMap<MapData, K, WatchValue>,
    name: &'static str,
    old: Option<&StdHashMap<K, WatchValue>>,
    new: &StdHashMap<K, WatchValue>,
) -> Result<(), Error> {
    let fail = |e: aya::maps::MapError| Error::Map {
        map: name,
        reason: format!(
            "{e} (the map holds at most {} entries)",
            sensor_common::MAX_WATCHED
        ),
    };
    for (key, value) in new {
        if old.and_then(|o| o.get(key)) != Some(value) {
            map.insert(key, value, 0).map_err(fail)?;
        }
    }
    if let Some(old) = old {
        for key in old.keys().filter(|k| !new.contains_key(k)) {
            map.remove(key).map_err(fail)?;
        }
    }
    Ok(())
}
