//! The transport of the forwarding protocol (docs/forwarding.md): mutually authenticated TLS
//! (rustls, ring) and one HTTP/2 request per session whose two bodies carry the protocol's
//! messages (`sensor_log::forward`). The agent's forward stage uses [`client`]; the collector
//! uses [`server`]; both load their certificates with [`tls`].
//!
//! The messages' bytes and their bounded decoder are `sensor_log::forward`'s; this crate only
//! moves them, so the agent, the collector and the tests can never frame them differently.

pub mod client;
mod error;
pub mod server;
mod stream;
pub mod tls;

pub use error::{Error, Result};
pub use stream::{MessageReader, MessageWriter};

/// The request that opens a session.
pub const PATH: &str = "/sensor-forward/v1";
pub const CONTENT_TYPE: &str = "application/x-sensor-forward";
/// The protocol name both sides announce in TLS (ALPN).
pub const ALPN: &[u8] = b"h2";
