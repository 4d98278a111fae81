//! Keeps the watched set current: inotify on every directory whose changes can change it
//! (parents of exact paths, glob directories, and directories whose `*` expansion can gain
//! entries, such as `/home` for a new user), re-resolving after a burst settles.
//!
//! Between a change and the refresh the kernel's directory and name entries already catch
//! new and replaced files; the refresh adds their inodes so hard links are caught too.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use tokio::sync::watch;

use super::{Budget, Rule, WatchSet};

/// Quiet time that ends a burst of changes (a package upgrade, `ssh-keygen`).
const DEBOUNCE: Duration = Duration::from_millis(50);
/// A burst that never settles is still resolved this often.
const MAX_DELAY: Duration = Duration::from_millis(500);
/// After each resolution the thread waits at least this many times as long as it took, so
/// that a directory a user keeps crowded costs it at most a fifth of a core; the kernel's
/// directory and name entries catch new files meanwhile.
const REST_FACTOR: u32 = 4;
/// Full re-resolution even without inotify events: mounts and bind mounts change inodes
/// without any directory event.
const RESYNC: Duration = Duration::from_secs(60);

/// The refresh thread's state.
pub struct Watcher {
    rules: Vec<Rule>,
    inotify: Inotify,
    watched: HashMap<PathBuf, WatchDescriptor>,
    tx: watch::Sender<Arc<WatchSet>>,
}

impl Watcher {
    /// Resolves `rules` now and starts a thread that publishes a new set after each change.
    /// The thread ends when every receiver is dropped.
    pub fn spawn(rules: &[Rule]) -> io::Result<watch::Receiver<Arc<WatchSet>>> {
        let set = WatchSet::resolve(rules);
        let (tx, rx) = watch::channel(Arc::new(set));
        let mut watcher = Watcher {
            rules: rules.to_vec(),
            inotify: Inotify::init()?,
            watched: HashMap::new(),
            tx,
        };
        watcher.sync_inotify();
        std::thread::Builder::new()
            .name("watch-refresh".into())
            .spawn(move || watcher.run())?;
        Ok(rx)
    }

    fn run(mut self) {
        let mut buf = [0u8; 4096];
        let mut last_resync = Instant::now();
        let mut rest_until = Instant::now();
        loop {
            if crate::pipeline::fault::fails("watch") {
                tracing::error!("watched-set refresh stopped: fault injected (test build)");
                return;
            }
            match self.wait(Duration::from_secs(1)) {
                Ok(true) => {}
                Ok(false) if self.tx.is_closed() => return,
                Ok(false) if last_resync.elapsed() < RESYNC => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!("watched-set refresh stopped: inotify: {e}");
                    return;
                }
            }
            let start = Instant::now();
            self.drain(&mut buf);
            while start.elapsed() < MAX_DELAY && matches!(self.wait(DEBOUNCE), Ok(true)) {
                self.drain(&mut buf);
            }
            let rest = rest_until.saturating_duration_since(Instant::now());
            if !rest.is_zero() {
                std::thread::sleep(rest);
                self.drain(&mut buf);
            }
            last_resync = Instant::now();
            let mut set = WatchSet::resolve(&self.rules);
            set.keep_moved(&self.tx.borrow(), Budget::KERNEL.per_map);
            let took = last_resync.elapsed();
            rest_until = Instant::now() + took * REST_FACTOR;
            if !set.same_entries(&self.tx.borrow()) {
                tracing::debug!(
                    took_ms = took.as_millis() as u64,
                    inodes = set.inodes().len(),
                    dirs = set.dirs().len(),
                    names = set.names().len(),
                    "watched set changed"
                );
            }
            // Sent even unchanged: the newer resolution narrows the kernel's ancestry walk
            // to directories changed since (`WatchSet::tree_gate`).
            if self.tx.send(Arc::new(set)).is_err() {
                return;
            }
            self.sync_inotify();
        }
    }

    /// Waits until inotify has events (true) or the timeout passes (false).
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut fds = [PollFd::new(&self.inotify, PollFlags::IN)];
        // A timeout too long for a timespec waits without one.
        let timeout = Timespec::try_from(timeout).ok();
        match poll(&mut fds, timeout.as_ref()) {
            Ok(n) => Ok(n > 0),
            Err(Errno::INTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Consumes pending events. Any change triggers a full resolution, so their details (and
    /// a queue overflow) do not matter, except that a removed watch (its directory was
    /// deleted) must be forgotten so a recreated directory is watched again.
    fn drain(&mut self, buf: &mut [u8]) {
        while let Ok(events) = self.inotify.read_events(buf) {
            let mut any = false;
            for event in events {
                any = true;
                if event.mask.contains(EventMask::IGNORED) {
                    self.watched.retain(|_, wd| *wd != event.wd);
                }
            }
            if !any {
                break;
            }
        }
    }

    /// Watches the directories of the current set and drops watches on the others.
    fn sync_inotify(&mut self) {
        let set = Arc::clone(&self.tx.borrow());
        let wanted = set.inotify_dirs();
        let mut watches = self.inotify.watches();
        self.watched.retain(|path, wd| {
            let keep = wanted.contains(path);
            if !keep {
                // Fails harmlessly when the directory is already gone.
                let _ = watches.remove(wd.clone());
            }
            keep
        });
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::ATTRIB
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR;
        for dir in wanted {
            if self.watched.contains_key(dir) {
                continue;
            }
            match watches.add(dir, mask) {
                Ok(wd) => {
                    self.watched.insert(dir.clone(), wd);
                }
                Err(e) => tracing::warn!("cannot watch {} for changes: {e}", dir.display()),
            }
        }
    }
}
