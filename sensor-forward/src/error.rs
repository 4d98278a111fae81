use std::path::PathBuf;

use sensor_log::forward::ProtocolError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate, key or CA file that cannot be read or used; names the file.
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Tls(#[source] rustls::Error),
    /// The peer's certificate does not name a host (subject CN of 32 hex digits).
    #[error("client certificate: {0}")]
    Identity(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake: {0}")]
    Handshake(#[source] std::io::Error),
    #[error("HTTP/2: {0}")]
    Http(#[source] hyper::Error),
    /// The collector answered the session's request with another status than 200.
    #[error("the collector answered HTTP {0}")]
    Status(u16),
    #[error("protocol: {0}")]
    Protocol(#[source] ProtocolError),
    /// The peer ended the session (its stream ended, or the connection closed).
    #[error("the session ended")]
    Closed,
    #[error("no answer within {0} s")]
    Timeout(u64),
    /// The peer sent a message the session does not allow at this point.
    #[error("unexpected message: {0}")]
    Unexpected(String),
}
