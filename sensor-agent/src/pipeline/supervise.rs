//! Stage supervision: every stage runs in one [`Stages`] set, so the agent learns when one
//! ends before it was asked to stop instead of running on blind (`commands::run` decides
//! what follows).

use std::{collections::HashMap, future::Future};

use tokio::task::{Id, JoinError, JoinSet};

use crate::Error;

/// A stage by the name the agent reports (log lines, the `stage_<name>` loss source).
pub type Stage = &'static str;

/// How a stage ended.
#[derive(Debug)]
pub enum Outcome {
    /// It returned on its own: at stop, or because a neighbour ended and closed its channel.
    Returned,
    /// It returned an error or panicked.
    Failed(String),
}

#[derive(Default)]
pub struct Stages {
    tasks: JoinSet<Result<(), Error>>,
    names: HashMap<Id, Stage>,
}

impl Stages {
    pub fn spawn(
        &mut self,
        stage: Stage,
        task: impl Future<Output = Result<(), Error>> + Send + 'static,
    ) {
        let id = self.tasks.spawn(task).id();
        self.names.insert(id, stage);
    }

    /// For stages that block (SQLite, `/proc`, stdout, the TPM): on their own thread.
    pub fn spawn_blocking(
        &mut self,
        stage: Stage,
        task: impl FnOnce() -> Result<(), Error> + Send + 'static,
    ) {
        let id = self.tasks.spawn_blocking(task).id();
        self.names.insert(id, stage);
    }

    /// The next stage to end and how; `None` once all have.
    pub async fn next(&mut self) -> Option<(Stage, Outcome)> {
        let (id, outcome) = match self.tasks.join_next_with_id().await? {
            Ok((id, Ok(()))) => (id, Outcome::Returned),
            Ok((id, Err(e))) => (id, Outcome::Failed(e.to_string())),
            Err(e) => (e.id(), Outcome::Failed(join_error(e))),
        };
        Some((self.names.remove(&id).unwrap_or("unknown"), outcome))
    }
}

fn join_error(e: JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    format!("panicked: {message}")
}
