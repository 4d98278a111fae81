//! The agent's side of a session: connect over mutually authenticated TLS, open the session's
//! HTTP/2 stream, say hello, and then send batches and read the collector's answers.

use std::{sync::Arc, time::Duration};

use http::{header, Method, Request, StatusCode};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use sensor_log::forward::{self, BatchMessage, Hello, Message, Refusal, Welcome, HARD_MAX_MESSAGE};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::{Error, Result};
use crate::stream::{MessageReader, MessageWriter};
use crate::{CONTENT_TYPE, PATH};

/// Longest wait for the connection, the handshake and the welcome.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings find a dead collector (or a dead path to it) while no answer is due.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// One session with a collector.
pub struct Session {
    /// `None` once the agent's side of the stream is closed.
    writer: Option<MessageWriter>,
    reader: MessageReader,
    welcome: Welcome,
}

/// What the collector said of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Ack(u64),
    Refuse(Refusal),
}

impl Session {
    /// Connects to `addr` (host:port), checks the collector's certificate against
    /// `server_name`, and says hello. Fails on anything but a welcome.
    pub async fn connect(
        addr: &str,
        server_name: &str,
        tls: Arc<ClientConfig>,
        hello: Hello,
    ) -> Result<Session> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::open(addr, server_name, tls, hello))
            .await
            .map_err(|_| Error::Timeout(CONNECT_TIMEOUT.as_secs()))?
    }

    async fn open(
        addr: &str,
        server_name: &str,
        tls: Arc<ClientConfig>,
        hello: Hello,
    ) -> Result<Session> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| Error::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        // Answers are small and awaited: never hold them back for coalescing.
        tcp.set_nodelay(true).map_err(|source| Error::Connect {
            addr: addr.to_owned(),
            source,
        })?;
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| Error::Identity(format!("server name {server_name:?}: {e}")))?;
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(Error::Handshake)?;
        let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(Error::Http)?;
        // The connection is driven in the background and ends with the session's request.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("collector connection ended: {e}");
            }
        });
        let (writer, body) = MessageWriter::channel();
        writer.send(&Message::Hello(hello)).await?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("https://{server_name}{PATH}"))
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body)
            .map_err(|e| Error::Unexpected(format!("request: {e}")))?;
        let response = sender.send_request(request).await.map_err(Error::Http)?;
        if response.status() != StatusCode::OK {
            return Err(Error::Status(response.status().as_u16()));
        }
        // Until the welcome says otherwise, the largest frame anyone may send.
        let mut reader = MessageReader::new(response.into_body(), HARD_MAX_MESSAGE);
        match reader.next().await? {
            Some(Message::Welcome(welcome)) => Ok(Session {
                writer: Some(writer),
                reader,
                welcome,
            }),
            Some(Message::Error(e)) => Err(Error::Unexpected(format!(
                "the collector ended the session: {} ({})",
                e.code, e.reason
            ))),
            Some(other) => Err(unexpected(&other)),
            None => Err(Error::Closed),
        }
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends one batch; waits only while the connection's send queue is full.
    pub async fn send(&self, batch: &BatchMessage) -> Result<()> {
        let mut frame = Vec::new();
        forward::encode_batch(batch, &mut frame)
            .map_err(|e| Error::Protocol(forward::ProtocolError::Malformed(e)))?;
        self.writer()?.send_encoded(frame.into()).await
    }

    /// Sends frames already encoded (tests send damaged ones).
    pub async fn send_raw(&self, frames: Vec<u8>) -> Result<()> {
        self.writer()?.send_encoded(frames.into()).await
    }

    /// Ends the agent's side of the stream (after a bye, or in the middle of a message to
    /// test the collector); answers can still be read.
    pub fn close_sending(&mut self) {
        self.writer = None;
    }

    fn writer(&self) -> Result<&MessageWriter> {
        self.writer.as_ref().ok_or(Error::Closed)
    }

    /// The collector's next answer. A session error from the collector, or the end of its
    /// stream, ends the session.
    pub async fn answer(&mut self) -> Result<Answer> {
        match self.reader.next().await? {
            Some(Message::Ack(n)) => Ok(Answer::Ack(n)),
            Some(Message::Refuse(r)) => Ok(Answer::Refuse(r)),
            Some(Message::Error(e)) => Err(Error::Unexpected(format!(
                "the collector ended the session: {} ({})",
                e.code, e.reason
            ))),
            Some(other) => Err(unexpected(&other)),
            None => Err(Error::Closed),
        }
    }

    /// Ends the session cleanly.
    pub async fn bye(mut self) -> Result<()> {
        self.writer()?.send(&Message::Bye).await?;
        self.close_sending();
        Ok(())
    }
}

fn unexpected(message: &Message) -> Error {
    Error::Unexpected(format!("{message:?}").chars().take(120).collect())
}
