//! Logging and metrics setup shared by every janusd mode.

use std::net::SocketAddr;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Logs go to stderr (stdout carries audit records); `RUST_LOG` filters,
/// default `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Serves Prometheus metrics on `addr` (`/metrics`), with real histogram
/// buckets so that latencies aggregate across nodes. Must run before the
/// engine starts: metric handles taken earlier record nowhere.
pub fn install_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    use janus_engine::metrics as m;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full(m::DECISION_SECONDS.into()), m::BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(m::BATCH_SIZE.into()), m::BATCH_BUCKETS))
        .context("configure metrics buckets")?
        .install()
        .with_context(|| format!("serve metrics on {addr}"))?;
    m::describe();
    Ok(())
}
