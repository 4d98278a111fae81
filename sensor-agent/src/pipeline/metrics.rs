//! The agent's Prometheus metrics (docs/configuration.md, `agent.metrics_listen`): the same
//! figures `status.json` carries, set from it by the status stage, so the two never differ
//! and the hot path takes no lock for them. One exception: the forward stage records
//! `sensor_forward_exposure_seconds` itself at each acknowledgement (a distribution, which
//! `status.json` does not carry).

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;
use sensor_store::AgentStatus;

/// Serves `/metrics` on `listen`. A failure is reported and the agent goes on: metrics are a
/// view, never a reason to stop recording.
pub fn install(listen: SocketAddr) {
    match PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()
    {
        Ok(()) => tracing::info!("metrics on http://{listen}/metrics"),
        Err(e) => tracing::warn!("no metrics endpoint on {listen}: {e}"),
    }
}

pub fn export(status: &AgentStatus) {
    for (kind, n) in &status.events {
        metrics::counter!("sensor_events_total", "kind" => kind.clone()).absolute(*n);
    }
    for (source, n) in &status.losses {
        metrics::counter!("sensor_losses_total", "source" => source.clone()).absolute(*n);
    }
    if let Some(a) = &status.anchor {
        metrics::gauge!("sensor_anchored").set(f64::from(u8::from(a.state == "anchored")));
        metrics::counter!("sensor_anchor_gaps_total").absolute(a.gaps);
    }
    if let Some(f) = &status.forward {
        metrics::gauge!("sensor_forward_connected").set(f64::from(u8::from(f.connected)));
        metrics::gauge!("sensor_forward_lag_batches").set(f.batches_behind as f64);
        metrics::gauge!("sensor_forward_lag_records").set(f.records_behind as f64);
        metrics::gauge!("sensor_forward_oldest_unacked_seconds")
            .set(f.oldest_unacked_age_s.unwrap_or(0) as f64);
    }
}
