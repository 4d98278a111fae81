//! The collector's Prometheus metrics (docs/collector.md, "Metrics"): one function per event
//! counted, so each name is written once.

use std::{net::SocketAddr, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

const ACK_LATENCY: &str = "collector_ack_latency_seconds";

/// Serves `/metrics` on `listen`.
pub fn install(listen: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(
            Matcher::Full(ACK_LATENCY.into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )
        .and_then(|b| b.install())
        .map_err(|e| format!("metrics on {listen}: {e}"))
}

/// A batch stored (or acknowledged again as a resend), from its arrival to its answer.
pub fn accepted(records: u64, latency: Duration) {
    metrics::counter!("collector_batches_accepted_total").increment(1);
    metrics::counter!("collector_records_accepted_total").increment(records);
    metrics::histogram!(ACK_LATENCY).record(latency.as_secs_f64());
}

/// A message refused, or a session ended, for `reason` (a refusal or error code's name).
pub fn rejected(reason: &'static str) {
    metrics::counter!("collector_rejected_total", "reason" => reason).increment(1);
}

pub fn handshake_failed() {
    metrics::counter!("collector_handshake_failures_total").increment(1);
}

pub fn alarm(kind: &str) {
    metrics::counter!("collector_alarms_total", "kind" => kind.to_owned()).increment(1);
}

pub fn sessions(open: usize) {
    metrics::gauge!("collector_sessions").set(open as f64);
}

pub fn hosts(enrolled: usize, silent: usize) {
    metrics::gauge!("collector_hosts", "state" => "silent").set(silent as f64);
    metrics::gauge!("collector_hosts", "state" => "heard")
        .set(enrolled.saturating_sub(silent) as f64);
}
