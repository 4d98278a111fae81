//! `sensor-collector serve`: accepts hosts over mutually authenticated TLS, runs each
//! session (`session.rs`) with the ingest workers (`workers.rs`), and sweeps for silent
//! hosts. A peer's failure (handshake, protocol, bad batch) is logged with the peer and
//! counted, and never stops the service for anyone else.

mod session;
mod workers;

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use sensor_forward::server::{self, Limits};
use sensor_log::hex;
use sensor_log::time::wall_now_ns;
use tokio::{net::TcpListener, sync::Semaphore};

use crate::config::Config;
use crate::metrics;
pub use workers::Workers;

/// What every session shares.
pub struct Shared {
    pub config: Config,
    pub workers: Workers,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("tls: {0}")]
    Tls(#[source] sensor_forward::Error),
    #[error(transparent)]
    Store(#[from] crate::Error),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Metrics(String),
}

/// Serves until SIGTERM or SIGINT. Every acknowledged batch is durably committed before its
/// ack, so a stop at any moment loses nothing a host was told is stored.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let tls = sensor_forward::tls::server_config(
        &config.tls.cert,
        &config.tls.key,
        &config.tls.client_ca,
    )
    .map_err(ServeError::Tls)?;
    let (url, count) = (config.store.clone(), config.workers);
    let workers = tokio::task::spawn_blocking(move || Workers::start(&url, count))
        .await
        .map_err(|e| ServeError::Store(crate::Error::Unavailable(e.to_string())))??;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen,
        source,
    })?;
    if let Some(addr) = config.metrics_listen {
        metrics::install(addr).map_err(ServeError::Metrics)?;
    }
    tracing::info!(
        "listening on {bound} (store {}, enrollment {:?}, {} worker(s))",
        config.store,
        config.enrollment,
        config.workers
    );
    let shared = Arc::new(Shared { config, workers });
    tokio::spawn(sweep(Arc::clone(&shared)));
    let acceptor = server::acceptor(tls);
    let permits = Arc::new(Semaphore::new(shared.config.max_sessions));
    let open = Arc::new(AtomicUsize::new(0));
    let limits = Limits {
        max_message: shared.config.max_message,
    };
    let mut stop = std::pin::pin!(shutdown());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, usually: wait for sessions to end.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, "refused: {} sessions are open (limits.max_sessions)", shared.config.max_sessions);
            metrics::rejected("max_sessions");
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = Arc::clone(&shared);
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            let _permit = permit;
            let conn = match server::handshake(&acceptor, tcp).await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(%peer, "refused at the handshake: {e}");
                    metrics::handshake_failed();
                    return;
                }
            };
            metrics::sessions(open.fetch_add(1, Ordering::Relaxed) + 1);
            let served = server::serve(conn, peer, limits, move |host, peer, reader, writer| {
                session::run(Arc::clone(&shared), host, peer, reader, writer)
            })
            .await;
            if let Err(e) = served {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            metrics::sessions(open.fetch_sub(1, Ordering::Relaxed) - 1);
        });
    }
    tracing::info!("stopping");
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Every half heartbeat timeout, raises a `silent` alarm for hosts not heard from for longer
/// than the timeout, and says so once per silence.
async fn sweep(shared: Arc<Shared>) {
    let timeout = shared.config.heartbeat_timeout;
    let mut tick = tokio::time::interval(timeout / 2);
    let mut reported = BTreeSet::new();
    loop {
        tick.tick().await;
        let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let swept = shared
            .workers
            .run(move |c| {
                let silent = c.sweep_silent(wall_now_ns(), timeout_ns)?;
                Ok((silent, c.store().heard()?.len()))
            })
            .await;
        match swept {
            Ok((silent, hosts)) => {
                metrics::hosts(hosts, silent.len());
                for host in &silent {
                    if !reported.contains(host) {
                        tracing::warn!(host = %hex::encode(host), "silent for longer than {}", humantime::format_duration(timeout));
                    }
                }
                reported = silent.into_iter().collect();
            }
            Err(e) => tracing::error!("the silence sweep failed: {e}"),
        }
    }
}
