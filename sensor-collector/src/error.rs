//! The crate's single error type: the collector's own store failed. A peer's bad input is
//! never an error here but a refusal (`ingest::Reply`).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("collector store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("collector store: {0}")]
    Postgres(#[source] postgres::Error),
    /// The store holds something this build did not write (an edited database).
    #[error("collector store: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
