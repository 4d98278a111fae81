//! The crate's single error type: the collector's own store (or its workers) failed. A peer's bad input is
//! never an error here but a refusal (`ingest::Reply`).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("collector store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("collector store: {}", postgres_message(.0))]
    Postgres(#[source] postgres::Error),
    /// The store holds something this build did not write (an edited database).
    #[error("collector store: {0}")]
    Corrupt(String),
    /// The collector cannot take work (its workers are gone, or it cannot start them).
    #[error("collector: {0}")]
    Unavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The server's own message when there is one: `postgres::Error` alone says "db error".
fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}
