//! `janusd serve`: the DaemonSet mode. Restores the saved state and enforces
//! it *before* accepting the first request, then serves the `janus.v1.Janusd`
//! gRPC service (with health and reflection) and HTTP `/metrics`, `/healthz`,
//! `/readyz` on its own port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use janus_agent::observe::{self, Ready};
use janus_agent::service::Service;
use janus_agent::supervisor::Supervisor;
use janus_common::tls::TlsArgs;
use janus_engine::{Backend, Engine, EngineConfig};
use janus_proto::v1::janusd_server::JanusdServer;

/// Options of `janusd serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of this node (from the downward API in the DaemonSet).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// gRPC listen address.
    #[arg(long, default_value = "0.0.0.0:9440")]
    listen: SocketAddr,
    /// HTTP address for /metrics, /healthz, /readyz.
    #[arg(long, default_value = "0.0.0.0:9441")]
    http_addr: SocketAddr,
    /// Where the desired state is kept across restarts.
    #[arg(long, default_value = "/var/lib/janus/state.json")]
    state_file: PathBuf,
    /// The host's /proc (as mounted in the agent's container).
    #[arg(long, default_value = "/proc")]
    proc_root: PathBuf,
    /// Event loop: auto (io_uring if available), io-uring, or plain.
    #[arg(long, default_value = "auto", value_parser = ["auto", "io-uring", "plain"])]
    backend: String,
    /// How often containers are checked (restarts, retries).
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    resync: Duration,
    /// Raise fs.fanotify.max_user_groups to at least this (each guard
    /// instance uses two groups); 0 leaves the kernel setting alone.
    #[arg(long, default_value_t = 8192)]
    max_fanotify_groups: u64,
    /// WatchEvents streams open at once, at most (more are refused with
    /// RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 16)]
    max_watch_streams: usize,
    #[command(flatten)]
    tls: TlsArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?} (e.g. 250ms, 2s)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        _ => Err(format!("bad duration unit in {s:?} (ms or s)")),
    }
}

/// Runs until SIGINT/SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let tls = args.tls.server()?;
    if tls.is_none() {
        tracing::warn!("--insecure: serving plaintext gRPC without client authentication");
    }
    let http = observe::bind_http(args.http_addr)?;
    let grpc = std::net::TcpListener::bind(args.listen).with_context(|| format!("bind gRPC {}", args.listen))?;
    grpc.set_nonblocking(true)?;
    let metrics = observe::install_metrics()?;
    janus_agent::limits::raise_fanotify_group_limit(args.max_fanotify_groups);
    let ready = Ready::default();
    let backend = match args.backend.as_str() {
        "io-uring" => Some(Backend::IoUring),
        "plain" => Some(Backend::Plain),
        _ => None,
    };
    let engine = Engine::start(EngineConfig {
        backend,
        audit_out: Some(Box::new(std::io::LineWriter::new(std::io::stdout()))),
        ..Default::default()
    })
    .context("start enforcement (needs CAP_SYS_ADMIN for fanotify)")?;
    tracing::info!(backend = engine.backend().as_str(), node = %args.node_name, "enforcement started");
    // /healthz fails once an engine thread stops beating (each beats at
    // least once a second): the liveness probe then restarts janusd.
    let heartbeat = engine.heartbeat();
    ready.set_liveness(std::sync::Arc::new(move || heartbeat.check(std::time::Duration::from_secs(10))));
    let sup =
        Arc::new(Supervisor::new(engine, args.node_name.clone(), args.state_file.clone(), args.proc_root.clone()));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        tokio::spawn(observe::serve_http(http, metrics, ready.clone()));
        // Re-enforce the saved state before the first request.
        let s = sup.clone();
        let restored = tokio::task::spawn_blocking(move || s.restore()).await??;
        tracing::info!(guards = restored, state_file = %args.state_file.display(), "state restored");
        let s = sup.clone();
        let resync = args.resync;
        std::thread::Builder::new().name("janus-reconcile".into()).spawn(move || {
            loop {
                std::thread::sleep(resync);
                s.reconcile();
            }
        })?;

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<JanusdServer<Service>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(janus_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("reflection service")?;
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).context("TLS config")?;
        }
        let listener = tokio::net::TcpListener::from_std(grpc)?;
        let addr = listener.local_addr()?;
        // No Nagle: small replies must not wait for a delayed ACK (40 ms).
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        ready.set();
        tracing::info!(%addr, "janusd serve ready");
        builder
            .add_service(health_service)
            .add_service(reflection)
            .add_service(
                JanusdServer::new(Service::new(sup.clone(), args.max_watch_streams))
                    .max_decoding_message_size(janus_agent::service::MAX_MESSAGE)
                    .max_encoding_message_size(janus_agent::service::MAX_MESSAGE),
            )
            .serve_with_incoming_shutdown(incoming, shutdown())
            .await
            .context("gRPC server")?;
        tracing::info!("stopping");
        anyhow::Ok(())
    })?;
    // The supervisor (and its engine) drop here: every group closes, every
    // waiting opener is released by the kernel.
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
