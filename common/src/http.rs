//! Logging, and the HTTP endpoint serving `/metrics`, `/healthz` and
//! `/readyz`, shared by janusd and the controller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

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

/// A liveness check for `/healthz`: `Err` says what is stuck.
pub type LivenessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Readiness flag for `/readyz`, and the liveness check for `/healthz`
/// (always alive until one is set).
#[derive(Clone, Default)]
pub struct Ready {
    ready: Arc<AtomicBool>,
    live: Arc<std::sync::OnceLock<LivenessCheck>>,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready").field("ready", &self.get()).finish_non_exhaustive()
    }
}

impl Ready {
    /// Marks the process ready.
    pub fn set(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    fn get(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Makes `/healthz` answer 503 with the reason while `check` fails
    /// (e.g. the engine's heartbeat is stale). Set once.
    pub fn set_liveness(&self, check: LivenessCheck) {
        let _ = self.live.set(check);
    }

    fn alive(&self) -> Result<(), String> {
        self.live.get().map_or(Ok(()), |c| c())
    }
}

/// Binds the HTTP port now, so that a taken port is an error at start.
pub fn bind_http(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).with_context(|| format!("bind HTTP {addr}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process exits.
pub async fn serve_http(
    listener: std::net::TcpListener,
    metrics: PrometheusHandle,
    ready: Ready,
) -> anyhow::Result<()> {
    let live = ready.clone();
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(metrics.render())))
        .route(
            "/healthz",
            get(move || {
                let r = live.alive();
                async move {
                    match r {
                        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not alive: {why}\n")),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let ok = ready.get();
                async move {
                    if ok { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
                }
            }),
        );
    let listener = tokio::net::TcpListener::from_std(listener).context("HTTP listener")?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app).await.context("HTTP server")
}

/// Runs [`serve_http`] on its own thread with a small runtime (for modes
/// that have no async runtime of their own).
pub fn spawn_http(listener: std::net::TcpListener, metrics: PrometheusHandle, ready: Ready) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("HTTP runtime")?;
    std::thread::Builder::new().name("janus-http".into()).spawn(move || {
        if let Err(e) = rt.block_on(serve_http(listener, metrics, ready)) {
            tracing::error!("{e:#}");
        }
    })?;
    Ok(())
}
