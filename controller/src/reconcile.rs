//! The reconciler: for each JanusGuard, the pods it selects are pushed to
//! the agents on their nodes (CreateGuard), pods that left are withdrawn
//! (DestroyGuard), and the guard's status says how far that got.
//!
//! Work is keyed per guard (kube-runtime deduplicates and batches events for
//! the same guard), a pod event only triggers the guards that select it or
//! did, and only the differences against what was already pushed are sent:
//! no full resync per pod event. Calls to different nodes run concurrently
//! with a timeout each, so one dead agent does not stall the others.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use janus_proto::v1;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};

use crate::agents::{self, AgentError, Agents};
use crate::crd::{JanusGuard, JanusGuardStatus};
use crate::desired::{self, Target};

/// Finalizer that makes sure every agent is told when a guard goes away.
pub const FINALIZER: &str = "januscontroller.clustergarage.io/cleanup";

/// What was last pushed for one (guard, pod).
#[derive(Clone, Debug)]
pub struct Pushed {
    /// Node (agent) it went to.
    pub node: String,
    /// Fingerprint of the request; a different one must be re-sent.
    pub fingerprint: u64,
    /// The agent's last reply (or report), if any.
    pub status: Option<v1::GuardStatus>,
    /// The last error pushing it, if the last push failed.
    pub error: Option<String>,
}

impl Pushed {
    /// Every container guarded.
    pub fn guarded(&self) -> bool {
        self.error.is_none()
            && self
                .status
                .as_ref()
                .is_some_and(|s| !s.containers.is_empty() && s.containers.iter().all(|c| c.state == "Guarded"))
    }
}

/// Key of a (guard, pod): (`namespace/name`, pod uid).
pub type PushKey = (String, String);

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
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    fn pushed(&self) -> std::sync::MutexGuard<'_, HashMap<PushKey, Pushed>> {
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
    /// Some agents could not be told to stop enforcing a deleted guard.
    #[error("cleanup incomplete: {0}")]
    Cleanup(String),
}

/// A CreateGuard to send: pod uid, target, fingerprint.
type Create = (String, Target, u64);

fn fingerprint(t: &Target) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.node.hash(&mut h);
    format!("{:?}", t.request).hash(&mut h);
    h.finish()
}

fn destroy_request(guard_key: &str, uid: &str) -> v1::DestroyGuardRequest {
    let (ns, name) = guard_key.split_once('/').unwrap_or(("", guard_key));
    v1::DestroyGuardRequest {
        guard: Some(v1::GuardRef { namespace: ns.into(), name: name.into(), ..Default::default() }),
        pod: Some(v1::PodRef { uid: uid.into(), ..Default::default() }),
    }
}

/// DestroyGuard for (guard `key`, pod `uid`) on `node`'s agent. An agent
/// that is not published any more went away with its node: nothing to do.
async fn withdraw(
    ctx: &Context,
    addrs: &BTreeMap<String, String>,
    key: &str,
    uid: String,
    node: String,
) -> (String, Result<(), AgentError>) {
    let r = match addrs.get(&node) {
        Some(a) => ctx.agents.destroy(&node, a, destroy_request(key, &uid)).await.map(|_| ()),
        None => Ok(()),
    };
    (uid, r)
}

/// Entry point for kube-runtime.
pub async fn reconcile(guard: Arc<JanusGuard>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    ctx.backlog_add(1);
    let ns = guard.namespace().unwrap_or_default();
    let api: Api<JanusGuard> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, guard, |event| async {
        match event {
            Finalizer::Apply(g) => apply(&g, &ctx).await,
            Finalizer::Cleanup(g) => cleanup(&g, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.backlog_add(-1);
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

    // What to send: new or changed targets, failed ones again, and
    // withdrawals of pods that are no longer targets.
    let (creates, destroys): (Vec<Create>, Vec<(String, String)>) = {
        let pushed = ctx.pushed();
        let creates = targets
            .iter()
            .filter_map(|(uid, t)| {
                let fp = fingerprint(t);
                let p = pushed.get(&(key.clone(), uid.clone()));
                let stale = p.is_none_or(|p| p.fingerprint != fp || p.error.is_some() || !p.guarded());
                stale.then(|| (uid.clone(), t.clone(), fp))
            })
            .collect();
        let destroys = pushed
            .iter()
            .filter(|((gk, uid), _)| gk == &key && !targets.contains_key(uid))
            .map(|((_, uid), p)| (uid.clone(), p.node.clone()))
            .collect();
        (creates, destroys)
    };

    let create_calls = creates.into_iter().map(|(uid, t, fp)| {
        let addr = addrs.get(&t.node).cloned();
        async move {
            let r = match addr {
                Some(a) => ctx.agents.create(&t.node, &a, t.request.clone()).await,
                None => Err(AgentError::NoAgent(t.node.clone())),
            };
            (uid, t.node, fp, r)
        }
    });
    let destroy_calls = destroys.into_iter().map(|(uid, node)| withdraw(ctx, &addrs, &key, uid, node));
    let (created, destroyed) = futures::join!(join_all(create_calls), join_all(destroy_calls));

    let mut failures: Vec<String> = Vec::new();
    {
        let mut pushed = ctx.pushed();
        for (uid, node, fp, r) in created {
            let entry = Pushed {
                node: node.clone(),
                fingerprint: fp,
                status: r.as_ref().ok().cloned(),
                error: r.as_ref().err().map(|e| e.to_string()),
            };
            pushed.insert((key.clone(), uid), entry);
        }
        for (uid, r) in destroyed {
            match r {
                Ok(()) => {
                    pushed.remove(&(key.clone(), uid));
                }
                Err(e) => failures.push(format!("withdraw from pod {uid}: {e}")),
            }
        }
    }

    // Status from what the agents said.
    let (guarded, not_guarded) = {
        let pushed = ctx.pushed();
        let mut guarded = 0;
        let mut not = Vec::new();
        for (uid, t) in &targets {
            let pod = t.request.pod.as_ref().map(|p| p.name.clone()).unwrap_or_else(|| uid.clone());
            match pushed.get(&(key.clone(), uid.clone())) {
                Some(p) if p.guarded() => guarded += 1,
                Some(p) => {
                    let why = p.error.clone().unwrap_or_else(|| {
                        p.status
                            .iter()
                            .flat_map(|s| &s.containers)
                            .filter(|c| c.state != "Guarded")
                            .map(|c| {
                                let e =
                                    if c.last_error.is_empty() { String::new() } else { format!(": {}", c.last_error) };
                                format!("container {} {}{e}", c.name, c.state)
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    });
                    not.push(format!("{pod} on {} ({why})", t.node));
                }
                None => not.push(format!("{pod} on {} (not pushed)", t.node)),
            }
        }
        (guarded, not)
    };
    for f in &failures {
        tracing::warn!(guard = %key, "{f}");
    }
    let observable = targets.len() as i32;
    let ready = not_guarded.is_empty() && failures.is_empty();
    let (reason, message) = if ready {
        ("AllPodsGuarded", format!("{guarded} of {observable} selected running pods guarded"))
    } else {
        let mut problems = not_guarded.clone();
        problems.extend(failures.iter().cloned());
        let shown: Vec<_> = problems.iter().take(5).cloned().collect();
        let more = if problems.len() > 5 { format!(" and {} more", problems.len() - 5) } else { String::new() };
        ("PodsNotGuarded", format!("{guarded} of {observable} guarded; not guarded: {}{more}", shown.join("; ")))
    };
    write_status(g, ctx, observable, guarded, ready, reason, &message).await?;
    if !ready {
        publish(ctx, g, EventType::Warning, "NotGuarded", &message).await;
    }
    Ok(if ready { Action::requeue(ctx.resync) } else { Action::requeue(Duration::from_secs(2)) })
}

async fn write_status(
    g: &JanusGuard,
    ctx: &Context,
    observable: i32,
    guarded: i32,
    ready: bool,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let old = g.status.clone().unwrap_or_default();
    let old_ready = old.conditions.iter().find(|c| c.type_ == "Ready");
    let status = if ready { "True" } else { "False" };
    let unchanged = old.observed_generation == g.metadata.generation
        && old.observable_pods == observable
        && old.guarded_pods == guarded
        && old_ready.is_some_and(|c| c.status == status && c.reason == reason && c.message == message);
    if unchanged {
        return Ok(());
    }
    let transition = match old_ready {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    let new = JanusGuardStatus {
        observed_generation: g.metadata.generation,
        observable_pods: observable,
        guarded_pods: guarded,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: transition,
            observed_generation: g.metadata.generation,
        }],
    };
    let api: Api<JanusGuard> = Api::namespaced(ctx.client.clone(), &g.namespace().unwrap_or_default());
    api.patch_status(&g.name_any(), &PatchParams::default(), &Patch::Merge(serde_json::json!({ "status": new })))
        .await?;
    Ok(())
}

async fn publish(ctx: &Context, g: &JanusGuard, type_: EventType, reason: &str, note: &str) {
    let ev = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Push".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &g.object_ref(&())).await {
        tracing::debug!(error = %e, "cannot publish event");
    }
}

/// The guard is being deleted: tell every agent that has it.
async fn cleanup(g: &JanusGuard, ctx: &Context) -> Result<Action, Error> {
    let key = desired::guard_key(g);
    let addrs = ctx.agent_addresses();
    let pods = ctx.pods.state();
    // Everything pushed, plus everything currently selected (a restarted
    // controller has not pushed anything yet but agents may have it).
    let mut targets: HashSet<(String, String)> = ctx
        .pushed()
        .iter()
        .filter(|((gk, _), _)| gk == &key)
        .map(|((_, uid), p)| (uid.clone(), p.node.clone()))
        .collect();
    for (uid, t) in desired::targets(g, pods.iter().map(|p| p.as_ref())) {
        targets.insert((uid, t.node));
    }
    let calls = targets.into_iter().map(|(uid, node)| withdraw(ctx, &addrs, &key, uid, node));
    let mut errors = Vec::new();
    for (uid, r) in join_all(calls).await {
        match r {
            Ok(()) => {
                ctx.pushed().remove(&(key.clone(), uid));
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(Error::Cleanup(errors.join("; ")));
    }
    Ok(Action::await_change())
}

/// Retry a failed reconcile after a short pause.
pub fn error_policy(g: Arc<JanusGuard>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(guard = %desired::guard_key(&g), error = %e, "reconcile failed");
    metrics::counter!("janus_controller_reconcile_errors_total").increment(1);
    Action::requeue(Duration::from_secs(2))
}
