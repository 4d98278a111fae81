//! The collector's side of the transport: the TLS handshake, which names the host by its
//! client certificate before any HTTP byte is read, and the HTTP/2 connection whose session
//! request is handed, with the host, to the collector's session code.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::{body::Incoming, server::conn::http2, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use sensor_log::record::HostId;
use tokio::net::TcpStream;
use tokio_rustls::{server::TlsStream, TlsAcceptor};

use crate::error::{Error, Result};
use crate::stream::{MessageReader, MessageWriter};
use crate::{tls, CONTENT_TYPE, PATH};

/// Longest a peer may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE: Duration = Duration::from_secs(20);

/// Bounds of one connection's HTTP/2 layer.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest protocol message a session reads.
    pub max_message: u32,
}

/// The TLS side of a connection that completed its handshake with a valid client
/// certificate, and the host that certificate names.
pub struct Authenticated {
    pub stream: TlsStream<TcpStream>,
    pub host: HostId,
}

/// Runs the handshake with a fresh connection: `Err` for a peer without a certificate
/// chaining to the client CA, one whose certificate names no host, or one too slow.
pub async fn handshake(acceptor: &TlsAcceptor, tcp: TcpStream) -> Result<Authenticated> {
    let _ = tcp.set_nodelay(true);
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| Error::Timeout(HANDSHAKE_TIMEOUT.as_secs()))?
        .map_err(Error::Handshake)?;
    let host = {
        let (_, connection) = stream.get_ref();
        let cert = connection
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| Error::Identity("the peer sent no certificate".into()))?;
        tls::host_of(cert)?
    };
    Ok(Authenticated { stream, host })
}

pub fn acceptor(config: Arc<ServerConfig>) -> TlsAcceptor {
    TlsAcceptor::from(config)
}

type ResponseBody = UnsyncBoxBody<bytes::Bytes, std::convert::Infallible>;

/// Serves HTTP/2 on an authenticated connection until it closes. Each session request
/// (`POST /sensor-forward/v1` with the protocol's content type) gets a 200 at once and
/// `session(host, peer, reader, writer)` runs with its two bodies; any other request gets
/// 404 or 415 with the reason.
pub async fn serve<S, F>(
    conn: Authenticated,
    peer: SocketAddr,
    limits: Limits,
    session: S,
) -> Result<()>
where
    S: Fn(HostId, SocketAddr, MessageReader, MessageWriter) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let host = conn.host;
    let session = Arc::new(session);
    let service = service_fn(move |request: Request<Incoming>| {
        let session = Arc::clone(&session);
        async move {
            let response = if request.method() != Method::POST || request.uri().path() != PATH {
                refuse(
                    StatusCode::NOT_FOUND,
                    "not a sensor-forward session: POST /sensor-forward/v1",
                )
            } else if request
                .headers()
                .get(header::CONTENT_TYPE)
                .is_none_or(|t| t.as_bytes() != CONTENT_TYPE.as_bytes())
            {
                refuse(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "the content type is not application/x-sensor-forward",
                )
            } else {
                let reader = MessageReader::new(request.into_body(), limits.max_message);
                let (writer, body) = MessageWriter::channel();
                tokio::spawn(session(host, peer, reader, writer));
                Response::new(body.boxed_unsync())
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(1)
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .max_header_list_size(16 << 10)
        .serve_connection(TokioIo::new(conn.stream), service)
        .await
        .map_err(Error::Http)
}

fn refuse(status: StatusCode, reason: &'static str) -> Response<ResponseBody> {
    let mut response =
        Response::new(Full::new(bytes::Bytes::from_static(reason.as_bytes())).boxed_unsync());
    *response.status_mut() = status;
    response
}
