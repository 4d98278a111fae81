//! The crate's single error type: bytes that do not decode, a value that cannot be encoded,
//! or a failure to read a batch file. Tampering is not an error but a `Verdict`.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot encode record: {0}")]
    Encode(#[from] crate::codec::EncodeError),
    /// Bytes read from a store, a file or the network did not parse; they are untrusted input.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("reading batches: {0}")]
    Read(#[source] io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn malformed(what: &'static str, detail: impl ToString) -> Error {
        Error::Malformed {
            what,
            detail: detail.to_string(),
        }
    }
}
