//! `janusd standalone`: enforce guard manifests on this host.
//!
//! Paths in the manifests are host paths; `spec.selector` is ignored. Audit
//! records go to stdout, logs to stderr. SIGHUP reloads the file (a bad file
//! keeps the previous policy); SIGINT/SIGTERM release every mark and exit 0.

use std::collections::BTreeSet;
use std::io::LineWriter;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use janus_agent::observe::{self, Ready};
use janus_api::GuardManifest;
use janus_engine::policy::Policy;
use janus_engine::{Backend, Engine, EngineConfig, GuardTarget, TargetInfo};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Options of `janusd standalone`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JanusGuard manifest file (one or more YAML documents).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Serve /metrics, /healthz and /readyz over HTTP on ADDR.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Event loop: auto (io_uring if available), io-uring, or plain.
    #[arg(long, default_value = "auto", value_parser = ["auto", "io-uring", "plain"])]
    backend: String,
    /// Process whose tree `autoAllowOwner` subjects allow (repeatable).
    #[arg(long = "owner-pid")]
    owner_pids: Vec<u32>,
    /// Raise fs.fanotify.max_user_groups to at least this (each guard
    /// instance uses two groups); 0 leaves the kernel setting alone.
    #[arg(long, default_value_t = 8192)]
    max_fanotify_groups: u64,
    /// Node name written into audit records (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
}

/// Reads, validates and compiles every guard in `file`.
fn load(file: &Path, node: &str, owners: &[u32]) -> anyhow::Result<Vec<GuardTarget>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let manifests = GuardManifest::parse_all(&text).with_context(|| format!("{}", file.display()))?;
    let mut seen = BTreeSet::new();
    let mut targets = Vec::new();
    for m in manifests {
        let name = m.qualified_name();
        if !seen.insert(name.clone()) {
            bail!("{}: metadata.name: guard {name} appears twice", file.display());
        }
        let policy = Policy::compile(&m.spec).with_context(|| format!("{}: guard {name}", file.display()))?;
        targets.push(GuardTarget {
            id: name.clone(),
            info: TargetInfo {
                guard: name,
                namespace: m.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                node: node.to_string(),
                ..Default::default()
            },
            policy: Arc::new(policy),
            root: PathBuf::from("/"),
            owner_pids: owners.to_vec(),
        });
    }
    Ok(targets)
}

/// Applies `targets`, removing instances that are no longer listed.
fn apply_all(engine: &Engine, targets: Vec<GuardTarget>) -> anyhow::Result<()> {
    let wanted: BTreeSet<String> = targets.iter().map(|t| t.id.clone()).collect();
    for target in targets {
        let id = target.id.clone();
        let uses_owner = target.policy.subjects.iter().any(|s| s.auto_allow_owner);
        if uses_owner && target.owner_pids.is_empty() {
            tracing::warn!(guard = %id, "autoAllowOwner is set but no --owner-pid was given; it allows nothing here");
        }
        let report = engine.apply(target).with_context(|| format!("guard {id}"))?;
        tracing::info!(
            guard = %id,
            marks = report.marks,
            watched_dirs = report.watched_dirs,
            "guard enforced"
        );
        for m in &report.mounts {
            tracing::info!(
                guard = %id,
                mount_of = %m,
                "mount marked for file opens: each file opened there is decided once, then cached in the kernel"
            );
        }
        for p in &report.pending {
            tracing::info!(guard = %id, rule = %p, "path does not exist yet; guarded when it appears");
        }
        for w in &report.warnings {
            tracing::warn!(guard = %id, "{w}");
        }
    }
    for id in engine.guard_ids() {
        if !wanted.contains(&id) {
            engine.remove(&id)?;
            tracing::info!(guard = %id, "guard removed");
        }
    }
    Ok(())
}

/// Runs until SIGINT/SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let node = args.node_name.clone().unwrap_or_else(hostname);
    // Validate before touching the kernel: bad input exits non-zero here.
    let targets = load(&args.file, &node, &args.owner_pids)?;
    let ready = Ready::default();
    if let Some(addr) = args.metrics_addr {
        let listener = observe::bind_http(addr)?;
        observe::spawn_http(listener, observe::install_metrics()?, ready.clone())?;
    }
    let backend = match args.backend.as_str() {
        "io-uring" => Some(Backend::IoUring),
        "plain" => Some(Backend::Plain),
        _ => None,
    };
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).context("install signal handlers")?;
    let engine = Engine::start(EngineConfig {
        backend,
        audit_out: Some(Box::new(LineWriter::new(std::io::stdout()))),
        ..Default::default()
    })
    .context("start enforcement (needs root: CAP_SYS_ADMIN for fanotify)")?;
    tracing::info!(backend = engine.backend().as_str(), "enforcement started");
    // /healthz fails once an engine thread stops beating (each beats at
    // least once a second): the liveness probe then restarts janusd.
    let heartbeat = engine.heartbeat();
    ready.set_liveness(std::sync::Arc::new(move || heartbeat.check(std::time::Duration::from_secs(10))));
    apply_all(&engine, targets)?;
    ready.set();
    tracing::info!(guards = engine.guard_ids().len(), file = %args.file.display(), "janusd standalone ready; SIGHUP reloads, SIGINT/SIGTERM stops");
    for signal in signals.forever() {
        match signal {
            SIGHUP => match load(&args.file, &node, &args.owner_pids).and_then(|t| apply_all(&engine, t)) {
                Ok(()) => tracing::info!(file = %args.file.display(), "reloaded"),
                Err(e) => tracing::error!("reload failed, keeping the previous policy: {e:#}"),
            },
            _ => break,
        }
    }
    tracing::info!("stopping: releasing every mark");
    engine.stop();
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
