//! Wiring: reflectors for pods and agent EndpointSlices, the kube-runtime
//! Controller for JanusGuards, drift repair, leader election, HTTP endpoints.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use janus_common::http::{self, Ready};
use janus_common::tls::TlsArgs;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, Predicate, WatchStreamExt, controller, predicates, watcher};
use kube::{Client, ResourceExt};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::agents::{self, Agents};
use crate::crd::JanusGuard;
use crate::reconcile::{self, Context};
use crate::{desired, drift, leader, selector};

/// Options of `janus-controller`.
#[derive(Debug, clap::Parser)]
#[command(name = "janus-controller", version, about = "Pushes JanusGuards to the janusd agent on every node")]
pub struct Args {
    /// Namespace of the agent Service.
    #[arg(long, env = "JANUS_AGENT_NAMESPACE", default_value = "janus-system")]
    pub agent_namespace: String,
    /// Name of the agent Service (its EndpointSlices give node -> agent).
    #[arg(long, default_value = "janusd")]
    pub agent_service: String,
    /// Name the agents' certificates are issued for.
    #[arg(long, default_value = "janusd")]
    pub agent_server_name: String,
    /// HTTP address for /metrics, /healthz, /readyz.
    #[arg(long, default_value = "0.0.0.0:9442")]
    pub http_addr: SocketAddr,
    /// How often a fully guarded guard is checked again.
    #[arg(long, default_value = "30", value_parser = secs)]
    pub resync: Duration,
    /// How often each agent's state is compared with the desired state.
    #[arg(long, default_value = "10", value_parser = secs)]
    pub drift_interval: Duration,
    /// Timeout of one call to an agent.
    #[arg(long, default_value = "5", value_parser = secs)]
    pub push_timeout: Duration,
    /// Elect a leader with a Lease (run with 2 replicas).
    #[arg(long)]
    pub leader_elect: bool,
    /// Lease name.
    #[arg(long, default_value = "janus-controller")]
    pub lease_name: String,
    /// Lease namespace (default: the agent namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: host name and pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration.
    #[arg(long, default_value = "15", value_parser = secs)]
    pub lease_duration: Duration,
    /// Guards reconciled at the same time, at most.
    #[arg(long, default_value_t = 16)]
    pub reconcile_concurrency: u16,
    /// A guard's reconcile waits this long for more events about it, so a
    /// burst is one reconcile. Off by default: the wait adds to the time a
    /// new container runs unguarded (measured on the real node: 50 ms here
    /// made guard-to-denial 115 -> 266 ms), and events that arrive while a
    /// reconcile of the guard is queued or running are merged anyway.
    #[arg(long, default_value = "0", value_parser = secs)]
    pub debounce: Duration,
    #[command(flatten)]
    pub tls: TlsArgs,
}

fn secs(s: &str) -> Result<Duration, String> {
    let s = s.strip_suffix('s').unwrap_or(s);
    s.parse::<f64>().map(Duration::from_secs_f64).map_err(|_| format!("bad duration {s:?} (seconds, e.g. 10 or 0.5s)"))
}

fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("janus_controller_reconciles_total", "Guard reconciles, by result.");
    describe_counter!("janus_controller_reconcile_errors_total", "Failed guard reconciles.");
    describe_histogram!("janus_controller_reconcile_seconds", "Duration of one guard reconcile.");
    describe_histogram!("janus_controller_push_seconds", "Duration of calls to agents, by method.");
    describe_counter!("janus_controller_push_errors_total", "Failed calls to agents, by method.");
    describe_counter!("janus_controller_drift_total", "Differences found between agents and the desired state.");
    describe_counter!(
        "janus_controller_push_skipped_total",
        "Calls to agents not made because the agent is marked unreachable (until a drift check reaches it)."
    );
    describe_counter!(
        "janus_controller_cleanup_deferred_total",
        "Withdrawals of deleted guards an agent could not be told (left to drift repair)."
    );
    describe_gauge!("janus_controller_guards", "JanusGuards known.");
    describe_gauge!("janus_controller_pods", "Selected pods, by state (guarded, not_guarded).");
    describe_gauge!("janus_controller_leader", "1 while this replica holds the lease.");
    describe_gauge!("janus_controller_queue_depth", "Guard reconciles running plus drift triggers waiting.");
}

/// Runs the controller until SIGTERM/SIGINT (or, with leader election, until
/// the lease is lost).
pub async fn run(args: Args) -> anyhow::Result<()> {
    let tls = args.tls.client(&args.agent_server_name)?;
    if tls.is_none() {
        tracing::warn!("--insecure: talking to agents over plaintext gRPC");
    }
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        )
        .context("metrics buckets")?
        .install_recorder()
        .context("metrics recorder")?;
    describe_metrics();
    let ready = Ready::default();
    http::spawn_http(http::bind_http(args.http_addr)?, metrics, ready.clone())?;

    let client = Client::try_default().await.context("connect to the Kubernetes API (KUBECONFIG or in-cluster)")?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let mut leadership = None;
    if args.leader_elect {
        let ns = args.lease_namespace.clone().unwrap_or_else(|| args.agent_namespace.clone());
        let election = leader::Election::new(client.clone(), &ns, &args.lease_name, &identity, args.lease_duration);
        ready.set(); // a waiting follower is healthy
        tracing::info!(%identity, lease = %args.lease_name, "waiting to become leader");
        let won = election.acquire().await;
        metrics::gauge!("janus_controller_leader").set(1.0);
        tracing::info!(%identity, "became leader");
        let keeper = election.clone();
        let renewing = tokio::spawn(async move {
            keeper.keep(won).await;
            tracing::error!("lost the leader lease; exiting so that another replica takes over");
            std::process::exit(1);
        });
        leadership = Some((election, renewing));
    }

    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let pods = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(desired::strip)
        .reflect(pod_writer)
        .touched_objects()
        .boxed();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let slice_cfg = watcher::Config::default().labels(&format!("{}={}", agents::SERVICE_LABEL, args.agent_service));
    let slices = watcher(Api::<EndpointSlice>::namespaced(client.clone(), &args.agent_namespace), slice_cfg)
        .default_backoff()
        .reflect(slice_writer)
        .touched_objects()
        .boxed();

    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pod_store,
        slices: slice_store,
        agents: Agents::new(tls, args.push_timeout),
        pushed: Default::default(),
        recorder: Recorder::new(
            client.clone(),
            Reporter { controller: "janus-controller".into(), instance: Some(identity) },
        ),
        resync: args.resync,
        backlog: Default::default(),
        failures: Default::default(),
    });
    let (drift_tx, drift_rx) = tokio::sync::mpsc::unbounded_channel::<ObjectRef<JanusGuard>>();
    // Guards trigger a reconcile when their spec (generation: also bumped
    // when deletion starts) or finalizers change, never for the status this
    // controller writes itself.
    let (guards, guard_writer) = reflector::store::<JanusGuard>();
    let guard_events = watcher(Api::<JanusGuard>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(guard_writer)
        .applied_objects()
        .predicate_filter(predicates::generation.combine(predicates::finalizers), Default::default());
    let controller = Controller::for_stream(guard_events, guards.clone())
        .with_config(controller::Config::default().concurrency(args.reconcile_concurrency).debounce(args.debounce));
    let map_ctx = ctx.clone();
    let map_guards = guards.clone();
    let controller = controller
        .watches_stream(pods, move |pod: Pod| {
            // Guards that select the pod now, and guards that had it.
            let ns = pod.namespace().unwrap_or_default();
            let mut refs: Vec<ObjectRef<JanusGuard>> = map_guards
                .state()
                .iter()
                .filter(|g| {
                    g.namespace().as_deref() == Some(ns.as_str()) && selector::matches(&g.spec.selector, pod.labels())
                })
                .map(|g| ObjectRef::from_obj(g.as_ref()))
                .collect();
            if let Some(uid) = pod.uid() {
                for key in map_ctx.guards_with_pod(&uid) {
                    if let Some((gns, name)) = key.split_once('/') {
                        refs.push(ObjectRef::new(name).within(gns));
                    }
                }
            }
            refs
        })
        .watches_stream(slices, {
            // An agent appearing, moving or going concerns the guards with
            // pods on its node only (not every guard: a DaemonSet rollout
            // changes the slices once per node). The nodes a slice had
            // before count too: an endpoint removed is gone from the object.
            let guards = guards.clone();
            let pods = ctx.pods.clone();
            let seen: Mutex<HashMap<String, BTreeSet<String>>> = Default::default();
            move |slice: EndpointSlice| {
                let now: BTreeSet<String> =
                    slice.endpoints.iter().flatten().filter_map(|e| e.node_name.clone()).collect();
                let before = seen.lock().unwrap_or_else(|p| p.into_inner()).insert(slice.name_any(), now.clone());
                let nodes: BTreeSet<String> = now.into_iter().chain(before.unwrap_or_default()).collect();
                let (guards, pods) = (guards.state(), pods.state());
                desired::guards_on_nodes(guards.iter().map(|g| g.as_ref()), pods.iter().map(|p| p.as_ref()), &nodes)
                    .into_iter()
                    .map(|(ns, name)| ObjectRef::new(&name).within(&ns))
                    .collect::<Vec<_>>()
            }
        })
        .reconcile_on({
            let ctx = ctx.clone();
            tokio_stream::wrappers::UnboundedReceiverStream::new(drift_rx).map(move |r| {
                ctx.backlog_add(-1);
                r
            })
        })
        .shutdown_on_signal();
    let drift = tokio::spawn(drift::run(ctx.clone(), guards.clone(), drift_tx, args.drift_interval));
    // On SIGTERM/SIGINT the Controller finishes the reconciles it runs and
    // starts none; drift repair stops at once (a pass that went on while the
    // lease is released below could withdraw what the next leader pushed).
    tokio::spawn(async move {
        stop_signal().await;
        drift.abort();
    });
    let gauge_ctx = ctx.clone();
    let gauge_guards = guards.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            metrics::gauge!("janus_controller_guards").set(gauge_guards.state().len() as f64);
            let pushed = gauge_ctx.pushed.lock().unwrap_or_else(|p| p.into_inner());
            let guarded = pushed.values().filter(|p| p.guarded()).count();
            metrics::gauge!("janus_controller_pods", "state" => "guarded").set(guarded as f64);
            metrics::gauge!("janus_controller_pods", "state" => "not_guarded").set((pushed.len() - guarded) as f64);
        }
    });
    ready.set();
    tracing::info!("janus-controller running");
    controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
    if let Some((election, renewing)) = leadership {
        // Stopped by a signal: hand the lease over now rather than let the
        // followers wait out its duration. Bounded: the API may not answer.
        renewing.abort();
        match tokio::time::timeout(Duration::from_secs(5), election.release()).await {
            Ok(Ok(true)) => tracing::info!("released the leader lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the leader lease"),
            Err(_) => tracing::warn!("releasing the leader lease: no answer within 5 s"),
        }
        metrics::gauge!("janus_controller_leader").set(0.0);
    }
    tracing::info!("janus-controller stopped");
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT (never, if they cannot be caught).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
