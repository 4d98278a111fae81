//! The crate's single error type.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// Bytes read back from the store or a file did not parse, or a record did not encode.
    #[error(transparent)]
    Format(#[from] sensor_log::Error),
    #[error("no log in {}: the agent has not run there", .0.display())]
    NoStore(PathBuf),
    #[error("the store in {} belongs to host {store} but host-id says {file}", dir.display())]
    HostMismatch {
        dir: PathBuf,
        store: String,
        file: String,
    },
    /// The store's SQLite schema is not the one this build creates: it was edited.
    #[error("{}: {detail}; refusing to use this store (see docs/log-format.md, Store)", path.display())]
    Schema { path: PathBuf, detail: String },
    #[error("random source failed: {0}")]
    Random(String),
    #[error("signing key: {0}")]
    Key(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<sensor_log::codec::EncodeError> for Error {
    fn from(e: sensor_log::codec::EncodeError) -> Error {
        Error::Format(e.into())
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn malformed(what: &'static str, detail: impl ToString) -> Error {
        Error::Format(sensor_log::Error::malformed(what, detail))
    }
}
