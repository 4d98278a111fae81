//! Protocol messages over one HTTP/2 body in each direction: a [`MessageReader`] reassembles
//! them from the data frames of an incoming body with `sensor_log::forward::Framer` (bounded:
//! a frame's length is checked before its payload is waited for), and a [`MessageWriter`]
//! feeds an outgoing body through a bounded channel.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use sensor_log::forward::{self, Framer, Message};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Encoded messages waiting to be sent on one body; beyond it the writer waits, so a peer
/// that stops reading slows its session down rather than growing its buffer.
const OUTGOING_MESSAGES: usize = 64;

/// Reads protocol messages from a body.
pub struct MessageReader {
    body: Incoming,
    framer: Framer,
    ended: bool,
}

impl MessageReader {
    pub fn new(body: Incoming, max_message: u32) -> MessageReader {
        MessageReader {
            body,
            framer: Framer::new(max_message),
            ended: false,
        }
    }

    /// The next message; `Ok(None)` when the peer ended its body cleanly between messages.
    /// A protocol error that leaves the stream in step (`ProtocolError::recoverable`) may be
    /// followed by more messages; any other ends the session.
    pub async fn next(&mut self) -> Result<Option<Message>> {
        loop {
            if let Some(message) = self.framer.next_message().map_err(Error::Protocol)? {
                return Ok(Some(message));
            }
            if self.ended {
                self.framer.finish().map_err(Error::Protocol)?;
                return Ok(None);
            }
            match self.body.frame().await {
                None => self.ended = true,
                Some(Err(e)) => return Err(Error::Http(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.framer.push(&data);
                    }
                }
            }
        }
    }
}

/// Writes protocol messages to a body.
#[derive(Clone)]
pub struct MessageWriter {
    tx: mpsc::Sender<Bytes>,
}

impl MessageWriter {
    /// A writer and the body it feeds.
    pub fn channel() -> (MessageWriter, OutgoingBody) {
        let (tx, rx) = mpsc::channel(OUTGOING_MESSAGES);
        (MessageWriter { tx }, OutgoingBody(rx))
    }

    /// Queues `message`; waits while the body's queue is full. `Error::Closed` once the peer
    /// or the connection is gone.
    pub async fn send(&self, message: &Message) -> Result<()> {
        let mut bytes = Vec::new();
        forward::encode(message, &mut bytes)
            .map_err(|e| Error::Protocol(forward::ProtocolError::Malformed(e)))?;
        self.send_encoded(Bytes::from(bytes)).await
    }

    /// Queues frames already encoded.
    pub async fn send_encoded(&self, frames: Bytes) -> Result<()> {
        self.tx.send(frames).await.map_err(|_| Error::Closed)
    }
}

/// The body a [`MessageWriter`] feeds; it ends when every writer is dropped.
pub struct OutgoingBody(mpsc::Receiver<Bytes>);

impl Body for OutgoingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|next| next.map(|b| Ok(Frame::data(b))))
    }
}
