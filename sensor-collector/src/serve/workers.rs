//! The ingest workers: threads that each own a `Collector` over its own store connection
//! (the stores are blocking clients), taking jobs from the sessions through one bounded
//! queue. Full-queue policy: the session waits, so a host that sends faster than the store
//! commits is slowed down through its own connection, and nothing is dropped.
//!
//! Group commit: a worker takes every job waiting (up to [`GROUP`]) and runs them in one
//! store group ([`store::Store::begin_group`]): SQLite commits them with one fsync instead of
//! one each, and answers none before that commit (an acknowledgement still means durably
//! stored; a failed commit answers every job of the group `unavailable`). A lone job is a
//! group of one, so grouping costs no latency when the queue is empty.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    thread,
};

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::{store, Collector};

/// Jobs waiting for a worker.
const QUEUE: usize = 1024;
/// Most jobs one worker commits together.
const GROUP: usize = 64;

/// Sends a job's result once its group's commit is known (`Err`: why it failed).
type Answer = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&mut Collector) -> Answer + Send>;

#[derive(Clone)]
pub struct Workers {
    jobs: mpsc::Sender<Job>,
}

impl Workers {
    /// Starts `count` worker threads, each with its own connection to the store `url`
    /// names, opened on that thread (the PostgreSQL client runs its own runtime, which must
    /// not nest in the server's); returns once every one is connected.
    pub fn start(url: &str, count: usize) -> Result<Workers> {
        let (jobs, queue) = mpsc::channel::<Job>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        for i in 0..count {
            let (queue, url, ready_tx) = (Arc::clone(&queue), url.to_owned(), ready_tx.clone());
            thread::Builder::new()
                .name(format!("ingest-{i}"))
                .spawn(move || {
                    let mut collector = match store::open(&url) {
                        Ok(store) => Collector::new(store),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    drop(ready_tx);
                    while let Some(group) = next_group(&queue) {
                        run_group(&mut collector, group);
                    }
                })
                .map_err(|e| Error::Unavailable(format!("cannot start an ingest worker: {e}")))?;
        }
        drop(ready_tx);
        for _ in 0..count {
            ready
                .recv()
                .map_err(|_| Error::Unavailable("an ingest worker ended at start".into()))??;
        }
        Ok(Workers { jobs })
    }

    /// Runs `job` on the next free worker and returns its result; `Err` when no worker took
    /// it or it panicked (nothing of it was committed then, or all of it).
    pub async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Collector) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |c| {
            let result = job(c);
            Box::new(move |committed| {
                let _ = tx.send(committed.map_err(Error::Unavailable).and(result));
            })
        });
        let gone = || Error::Unavailable("no ingest worker took the batch".into());
        self.jobs.send(job).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// The next job, waiting for one, and every job already queued behind it, up to [`GROUP`];
/// `None` once the queue is closed.
fn next_group(queue: &Mutex<mpsc::Receiver<Job>>) -> Option<Vec<Job>> {
    let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
    let mut group = vec![queue.blocking_recv()?];
    while group.len() < GROUP {
        match queue.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
    Some(group)
}

/// Runs `group` in one store group and answers each job once it is committed.
fn run_group(collector: &mut Collector, group: Vec<Job>) {
    let grouped = match collector.store().begin_group() {
        Ok(()) => true,
        Err(e) => {
            // Each job then commits on its own, as it would alone.
            tracing::warn!("cannot group commits: {e}");
            false
        }
    };
    let answers: Vec<Answer> = group
        .into_iter()
        .filter_map(|job| {
            // A panic is a bug in one job: its session gets `unavailable` (its reply channel
            // is dropped; a batch it was storing rolls back with its savepoint) and the rest
            // of the group goes on.
            let answer = std::panic::catch_unwind(AssertUnwindSafe(|| job(collector)));
            if answer.is_err() {
                tracing::error!("an ingest job panicked; its batch was not stored");
            }
            answer.ok()
        })
        .collect();
    let committed = if grouped {
        collector.store().end_group().map_err(|e| {
            tracing::error!("committing {} ingest jobs failed: {e}", answers.len());
            "the collector's store failed to commit; nothing of this batch was stored".to_string()
        })
    } else {
        Ok(())
    };
    for answer in answers {
        answer(committed.clone());
    }
}
