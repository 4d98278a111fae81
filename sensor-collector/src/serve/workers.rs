//! The ingest workers: threads that each own a `Collector` over its own store connection
//! (the stores are blocking clients), taking jobs from the sessions through one bounded
//! queue. Full-queue policy: the session waits, so a host that sends faster than the store
//! commits is slowed down through its own connection, and nothing is dropped.

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

type Job = Box<dyn FnOnce(&mut Collector) + Send>;

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
                    loop {
                        let job = queue
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .blocking_recv();
                        let Some(job) = job else { break };
                        // A panic is a bug in one job: its session gets `unavailable` (its
                        // reply channel is dropped) and the worker serves the next one.
                        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut collector)))
                            .is_err()
                        {
                            tracing::error!("an ingest job panicked; its batch was not stored");
                        }
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
            let _ = tx.send(job(c));
        });
        let gone = || Error::Unavailable("no ingest worker took the batch".into());
        self.jobs.send(job).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}
