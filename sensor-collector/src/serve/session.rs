//! One agent's session (docs/forwarding.md, "Session"): hello, welcome, then every batch
//! verified and committed by a worker and answered in order. Whatever the peer sends wrong is
//! answered with its reason, logged with the peer and counted; a message that leaves the
//! stream in step costs only that message, and the session goes on.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sensor_forward::{Error as TransportError, MessageReader, MessageWriter};
use sensor_log::forward::{
    ErrorCode, Hello, Message, ProtocolError, Refusal, RefuseCode, SessionError, Welcome,
    PROTOCOL_VERSION,
};
use sensor_log::hex;
use sensor_log::record::HostId;

use super::Shared;
use crate::ingest::{Greeting, Reply};
use crate::metrics;

/// Longest wait for the hello once the session's stream is open.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session ended early.
enum End {
    /// The peer was at fault: the error sent before closing.
    Peer { code: ErrorCode, reason: String },
    /// The peer or the connection is gone: nothing left to say.
    Gone,
}

pub async fn run(
    shared: Arc<Shared>,
    host: HostId,
    peer: SocketAddr,
    mut reader: MessageReader,
    writer: MessageWriter,
) {
    let host_hex = hex::encode(host);
    match converse(&shared, host, peer, &mut reader, &writer).await {
        Ok(()) => tracing::debug!(%peer, host = %host_hex, "session ended"),
        Err(End::Gone) => tracing::debug!(%peer, host = %host_hex, "session closed by the peer"),
        Err(End::Peer { code, reason }) => {
            tracing::warn!(%peer, host = %host_hex, %code, "session ended: {reason}");
            metrics::rejected(code.into());
            let _ = writer
                .send(&Message::Error(SessionError { code, reason }))
                .await;
        }
    }
}

async fn converse(
    shared: &Shared,
    host: HostId,
    peer: SocketAddr,
    reader: &mut MessageReader,
    writer: &MessageWriter,
) -> Result<(), End> {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await {
        Err(_) => return Err(end(ErrorCode::ProtocolViolation, "no hello within 10 s")),
        Ok(Ok(Some(Message::Hello(hello)))) => hello,
        Ok(Ok(Some(other))) => {
            return Err(end(
                ErrorCode::ProtocolViolation,
                format!("a {} before the hello", other.name()),
            ))
        }
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(TransportError::Protocol(ProtocolError::UnsupportedVersion(v)))) => {
            return Err(end(
                ErrorCode::UnsupportedVersion,
                format!("version {v}; this collector speaks {PROTOCOL_VERSION}"),
            ))
        }
        Ok(Err(TransportError::Protocol(e))) => {
            return Err(end(ErrorCode::BadHello, e.to_string()))
        }
        Ok(Err(e)) => return transport_ended(e),
    };
    // Where the host's log begins now: what it pruned before forwarding is a gap.
    let oldest = hello.oldest;
    let mut expected = greet(shared, host, peer, hello, writer).await?;
    loop {
        let message = match reader.next().await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            Err(TransportError::Protocol(e)) if e.recoverable() => {
                let code = match e {
                    ProtocolError::TooLong { .. } => RefuseCode::Oversized,
                    _ => RefuseCode::Malformed,
                };
                let refusal = Refusal {
                    batch: 0,
                    expected,
                    code,
                    reason: e.to_string(),
                };
                answer(peer, &host, writer, Reply::Refuse(refusal)).await?;
                continue;
            }
            Err(TransportError::Protocol(e)) => {
                return Err(end(ErrorCode::ProtocolViolation, e.to_string()))
            }
            Err(e) => return transport_ended(e),
        };
        let batch = match message {
            Message::Batch(batch) => batch,
            Message::Bye => return Ok(()),
            other => {
                return Err(end(
                    ErrorCode::ProtocolViolation,
                    format!("a {} in the middle of a session", other.name()),
                ))
            }
        };
        let reply = if batch.records.len() > shared.config.max_records as usize {
            Reply::Refuse(Refusal {
                batch: 0,
                expected,
                code: RefuseCode::Oversized,
                reason: format!(
                    "{} records in one batch is more than {}",
                    batch.records.len(),
                    shared.config.max_records
                ),
            })
        } else {
            let started = std::time::Instant::now();
            let records = batch.records.len() as u64;
            match shared
                .workers
                .run(move |c| c.receive_from(&host, &batch, Some(oldest)))
                .await
            {
                Ok(reply) => {
                    if let Reply::Ack(_) = reply {
                        metrics::accepted(records, started.elapsed());
                    }
                    reply
                }
                Err(e) => {
                    tracing::error!(%peer, "storing a batch failed: {e}");
                    Reply::Refuse(Refusal {
                        batch: 0,
                        expected,
                        code: RefuseCode::Unavailable,
                        reason: "the collector's store failed; nothing was stored".into(),
                    })
                }
            }
        };
        expected = match &reply {
            Reply::Ack(n) => n.saturating_add(1),
            Reply::Refuse(r) => r.expected,
        };
        answer(peer, &host, writer, reply).await?;
    }
}

/// Checks the hello against the certificate, enrolls on first contact when allowed, and
/// sends the welcome; returns the batch expected next.
async fn greet(
    shared: &Shared,
    host: HostId,
    peer: SocketAddr,
    hello: Hello,
    writer: &MessageWriter,
) -> Result<u64, End> {
    if hello.host_id != host {
        return Err(end(
            ErrorCode::HostMismatch,
            format!(
                "the hello names host {}, the client certificate {}",
                hex::encode(hello.host_id),
                hex::encode(host)
            ),
        ));
    }
    let first_contact = shared.config.enrollment == crate::config::Enrollment::FirstContact;
    let greeting = shared
        .workers
        .run(move |c| c.hello(&host, &hello, first_contact))
        .await
        .map_err(|e| {
            tracing::error!(%peer, "reading the host's state failed: {e}");
            end(
                ErrorCode::Unavailable,
                "the collector's store failed; try again later",
            )
        })?;
    let host_hex = hex::encode(host);
    let next_batch = match greeting {
        Greeting::Known { next_batch } => next_batch,
        Greeting::Enrolled(pinned) => {
            tracing::warn!(
                %peer, host = %host_hex, key_epoch = pinned.key_epoch,
                key = %hex::encode(pinned.public_key.as_bytes()),
                "enrolled on first contact: this key is now pinned for the host"
            );
            0
        }
        Greeting::NotEnrolled => {
            tracing::warn!(%peer, host = %host_hex, "a host that is not enrolled: its batches are refused until an operator approves its key");
            0
        }
    };
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        next_batch,
        max_message: shared.config.max_message,
        max_records: shared.config.max_records,
        window: shared.config.window,
        collector: shared.config.name.clone(),
    };
    writer
        .send(&Message::Welcome(welcome))
        .await
        .map_err(|_| End::Gone)?;
    Ok(next_batch)
}

async fn answer(
    peer: SocketAddr,
    host: &HostId,
    writer: &MessageWriter,
    reply: Reply,
) -> Result<(), End> {
    let message = match reply {
        Reply::Ack(n) => Message::Ack(n),
        Reply::Refuse(refusal) => {
            if refusal.code != RefuseCode::OutOfOrder {
                tracing::warn!(%peer, host = %hex::encode(host), batch = refusal.batch, code = %refusal.code, "refused: {}", refusal.reason);
            }
            metrics::rejected(refusal.code.into());
            Message::Refuse(refusal)
        }
    };
    // A writer that fails means the peer is gone: the session is over, nothing to say.
    writer.send(&message).await.map_err(|_| End::Gone)
}

fn transport_ended(e: TransportError) -> Result<(), End> {
    tracing::debug!("session transport ended: {e}");
    Err(End::Gone)
}

fn end(code: ErrorCode, reason: impl Into<String>) -> End {
    End::Peer {
        code,
        reason: reason.into(),
    }
}
