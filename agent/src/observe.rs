//! janusd's metrics recorder (engine metric names and buckets); the HTTP
//! endpoint itself is `janus_common::http`.

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use janus_common::http::{Ready, bind_http, init_logging, serve_http, spawn_http};

/// Installs the Prometheus recorder with real histogram buckets (so that
/// latencies aggregate across nodes). Must run before the engine starts:
/// metric handles taken earlier record nowhere.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    use janus_engine::metrics as m;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(m::DECISION_SECONDS.into()), m::BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(m::BATCH_SIZE.into()), m::BATCH_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), m::BUCKETS))
        .context("configure metrics buckets")?
        .install_recorder()
        .context("install metrics recorder")?;
    m::describe();
    Ok(handle)
}
