//! The reconciler: for each JanusGuard, the pods it selects are pushed to
//! the agents on their nodes (CreateGuard), pods that left are withdrawn
//! (DestroyGuard), and the guard's status says how far that got.
//!
//! Work is keyed per guard (kube-runtime deduplicates and batches events for
//! the same guard), a pod event only triggers the guards that select it or
//! did, and only the differences against what was already pushed are sent:
//! no full resync per pod event. Calls to different nodes run concurrently
//! with a timeout each, so one dead agent does not stall the others.
//!
//! This module is the glue: [`crate::diff`] computes what to send and what
//! the status says (pure), [`crate::fanout`] sends it to the agents, and
//! [`crate::status`] writes the guard's status and Events.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};

use crate::agents::{self, Agents};
use crate::crd::JanusGuard;
use crate::diff::{PushKey, Pushed};
use crate::{desired, diff, fanout, selector, status};

/// Finalizer that makes sure every agent is told when a guard goes away.
pub const FINALIZER: &str = "januscontroller.clustergarage.io/cleanup";

/// Shared state of the controller.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Pods (reflector).
    pub pods: Store<Pod>,
    /// The agent Service's EndpointSlices (reflector).
    pub slices: Store<EndpointSlice>,
    /// gRPC clients.
    pub agents: Agents,
    /// What each agent was sent.
    pub pushed: Mutex<HashMap<PushKey, Pushed>>,
    /// Kubernetes Events on guards.
    pub recorder: Recorder,
    /// How often a fully guarded guard is re-checked.
    pub resync: Duration,
    /// Reconciles running now plus drift triggers not yet picked up: the
    /// controller's backlog (`janus_controller_queue_depth`).
    pub backlog: std::sync::atomic::AtomicI64,
    /// Failed reconciles in a row, per guard (for the error backoff).
    pub failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// What each agent was sent, locked (a poisoned lock is taken over).
    pub fn pushed(&self) -> std::sync::MutexGuard<'_, HashMap<PushKey, Pushed>> {
        self.pushed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the backlog gauge by `n`.
    pub fn backlog_add(&self, n: i64) {
        let now = self.backlog.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        metrics::gauge!("janus_controller_queue_depth").set(now.max(0) as f64);
    }

    /// node -> agent address.
    pub fn agent_addresses(&self) -> BTreeMap<String, String> {
        agents::addresses(&self.slices.state(), self.agents.tls())
    }

    /// Guards that selected pod `uid` when last pushed.
    pub fn guards_with_pod(&self, uid: &str) -> Vec<String> {
        self.pushed().keys().filter(|(_, p)| p == uid).map(|(g, _)| g.clone()).collect()
    }
}

/// Reconcile failures (retried with backoff by the error policy).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// API server call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer helper failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A cache's writer is gone: the controller is shutting down.
    #[error("the pod or EndpointSlice cache is gone")]
    CachesGone,
}

/// Entry point for kube-runtime.
pub async fn reconcile(guard: Arc<JanusGuard>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Decide from full caches only: right after a start the pods and the
    // agents' EndpointSlices are still being listed, and a guard reconciled
    // then would report "0 of 0 guarded", or finish a deletion's cleanup
    // having withdrawn nothing.
    if !(crate::drift::filled(&ctx.pods).await && crate::drift::filled(&ctx.slices).await) {
        return Err(Error::CachesGone);
    }
    let started = std::time::Instant::now();
    ctx.backlog_add(1);
    let ns = guard.namespace().unwrap_or_default();
    let api: Api<JanusGuard> = Api::namespaced(ctx.client.clone(), &ns);
    let guard_ref = guard.clone();
    let result = finalizer(&api, FINALIZER, guard, |event| async {
        match event {
            Finalizer::Apply(g) => apply(&g, &ctx).await,
            Finalizer::Cleanup(g) => cleanup(&g, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.backlog_add(-1);
    if result.is_ok() {
        ctx.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&desired::guard_key(&guard_ref));
    }
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("janus_controller_reconciles_total", "result" => label).increment(1);
    metrics::histogram!("janus_controller_reconcile_seconds").record(started.elapsed().as_secs_f64());
    result
}

/// Pushes differences for one guard, then writes its status.
async fn apply(g: &JanusGuard, ctx: &Context) -> Result<Action, Error> {
    let key = desired::guard_key(g);
    let pods = ctx.pods.state();
    let targets = desired::targets(g, pods.iter().map(|p| p.as_ref()));
    let addrs = ctx.agent_addresses();

    let plan = diff::plan(&key, &targets, &ctx.pushed());
    let failures: Vec<String> = fanout::send(ctx, &addrs, &key, plan)
        .await
        .into_iter()
        .map(|(uid, e)| format!("withdraw from pod {uid}: {e}"))
        .collect();
    for f in &failures {
        tracing::warn!(guard = %key, "{f}");
    }

    let selector_error = selector::parse(&g.spec.selector).err();
    let summary = diff::summarize(&key, &targets, &ctx.pushed(), &failures, selector_error.as_deref());
    status::write_status(&ctx.client, g, &summary).await?;
    if !summary.ready {
        status::publish(&ctx.recorder, g, EventType::Warning, "NotGuarded", &summary.message).await;
    }
    Ok(Action::requeue(if summary.retry_soon { Duration::from_secs(2) } else { ctx.resync }))
}

/// The guard is being deleted: tell every agent that has it. Deletion never
/// waits for an agent that does not answer (a node that is down, an agent
/// restarting): what it could not be told is left to drift repair, which
/// withdraws every guard an agent enforces that no JanusGuard wants, as soon
/// as that agent answers again (and an agent that comes back from its state
/// file with the deleted guard is exactly that case).
async fn cleanup(g: &JanusGuard, ctx: &Context) -> Result<Action, Error> {
    let key = desired::guard_key(g);
    let addrs = ctx.agent_addresses();
    let pods = ctx.pods.state();
    let targets = desired::targets(g, pods.iter().map(|p| p.as_ref()));
    let plan = diff::plan_withdrawal(&key, &targets, &ctx.pushed());
    let errors: Vec<String> =
        fanout::send(ctx, &addrs, &key, plan).await.into_iter().map(|(_, e)| e.to_string()).collect();
    if !errors.is_empty() {
        let why = errors.join("; ");
        tracing::warn!(guard = %key, errors = %why, "deleted guard: some agents could not be told; drift repair withdraws it when they answer");
        metrics::counter!("janus_controller_cleanup_deferred_total").increment(errors.len() as u64);
    }
    // The guard is gone: forget what was pushed for it (drift repair works
    // from the agents' own state, not from this).
    ctx.pushed().retain(|(g, _), _| g != &key);
    Ok(Action::await_change())
}

/// Retry a failed reconcile, backing off per guard: 0.5 s after the first
/// failure, doubling up to a minute, back to the start after a success.
pub fn error_policy(g: Arc<JanusGuard>, e: &Error, ctx: Arc<Context>) -> Action {
    let key = desired::guard_key(&g);
    let n = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let wait = error_backoff(n);
    tracing::warn!(guard = %key, error = %e, failures = n, retry_in = ?wait, "reconcile failed");
    metrics::counter!("janus_controller_reconcile_errors_total").increment(1);
    Action::requeue(wait)
}

/// The wait before retry number `failures` (1 = the first failure).
pub fn error_backoff(failures: u32) -> Duration {
    let half_secs = 1u64 << failures.saturating_sub(1).min(10);
    Duration::from_millis(500 * half_secs).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::events::Reporter;
    use kube::runtime::{reflector, watcher};

    #[test]
    fn errors_back_off_exponentially_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| error_backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
        assert_eq!(error_backoff(u32::MAX), Duration::from_secs(60));
    }

    /// A reconcile waits for the pod and EndpointSlice caches' initial lists;
    /// before, it went ahead on empty caches ("0 of 0 guarded").
    #[tokio::test]
    async fn reconciles_wait_until_the_caches_are_filled() {
        // A client to nowhere: past the wait, the reconcile's first API call
        // fails at once, which is how the test sees that it went on.
        let client = Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
        let (pods, mut pod_writer) = reflector::store::<Pod>();
        let (slices, mut slice_writer) = reflector::store::<EndpointSlice>();
        let ctx = Arc::new(Context {
            client: client.clone(),
            pods,
            slices,
            agents: Agents::new(None, Duration::from_secs(1)),
            pushed: Default::default(),
            recorder: Recorder::new(client, Reporter { controller: "test".into(), instance: None }),
            resync: Duration::from_secs(30),
            backlog: Default::default(),
            failures: Default::default(),
        });
        let guard: JanusGuard = serde_json::from_value(serde_json::json!({
            "apiVersion": "januscontroller.clustergarage.io/v1alpha1", "kind": "JanusGuard",
            "metadata": {"name": "g", "namespace": "ns", "uid": "u1"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "subjects": [{"deny": ["/data"]}]}
        }))
        .unwrap();
        let mut run = tokio::spawn(reconcile(Arc::new(guard), ctx));
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut run).await.is_err(),
            "reconciled before the caches were filled"
        );
        pod_writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut run).await.is_err(),
            "reconciled before the EndpointSlice cache was filled"
        );
        slice_writer.apply_watcher_event(&watcher::Event::InitDone);
        let done = tokio::time::timeout(Duration::from_secs(30), run).await;
        assert!(matches!(done, Ok(Ok(Err(Error::Finalizer(_))))), "went on once filled: {done:?}");
    }
}
