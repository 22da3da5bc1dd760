//! Drift repair: every interval, each agent's GetGuardState is compared with
//! what should be enforced. An agent that restarted empty, a controller that
//! restarted (and has pushed nothing yet), or a missed event all show up here
//! and are fixed: missing guards are re-pushed (by reconciling their guard),
//! guards an agent enforces that no guard wants any more are destroyed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use janus_proto::v1;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc::UnboundedSender;

use crate::crd::JanusGuard;
use crate::desired;
use crate::reconcile::Context;

/// Runs forever: one pass every `interval`.
pub async fn run(
    ctx: Arc<Context>,
    guards: Store<JanusGuard>,
    trigger: UnboundedSender<ObjectRef<JanusGuard>>,
    interval: Duration,
) {
    // Never compare before both caches are filled: an empty pod cache
    // would make every guard on every agent look unwanted.
    if !filled(&guards).await || !filled(&ctx.pods).await {
        tracing::error!("a cache writer was dropped; drift repair disabled");
        return;
    }
    tracing::info!(?interval, "drift repair running");
    loop {
        tokio::time::sleep(interval).await;
        pass(&ctx, &guards, &trigger).await;
    }
}

/// Waits until `store` holds its initial list; false if it never will.
/// Polled with a short timeout: the readiness future was seen to miss its
/// wake-up and resolve only when polled again.
pub(crate) async fn filled<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
            return r.is_ok();
        }
    }
}

/// One comparison of every agent against the desired state.
pub async fn pass(ctx: &Context, guards: &Store<JanusGuard>, trigger: &UnboundedSender<ObjectRef<JanusGuard>>) {
    let addrs = ctx.agent_addresses();
    let states = join_all(
        addrs
            .iter()
            .map(|(node, addr)| async move { (node.clone(), addr.clone(), ctx.agents.state(node, addr).await) }),
    )
    .await;
    let pods = ctx.pods.state();
    let all_guards = guards.state();
    // Desired (guard key, pod uid) per node.
    let mut desired_on: std::collections::HashMap<String, HashSet<(String, String)>> = Default::default();
    for g in &all_guards {
        if g.metadata.deletion_timestamp.is_some() {
            continue;
        }
        for (uid, t) in desired::targets(g, pods.iter().map(|p| p.as_ref())) {
            desired_on.entry(t.node).or_default().insert((desired::guard_key(g), uid));
        }
    }
    let mut retrigger: HashSet<String> = HashSet::new();
    for (node, addr, state) in states {
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%node, error = %e, "drift check: agent unreachable");
                continue;
            }
        };
        let want = desired_on.remove(&node).unwrap_or_default();
        let mut have: HashSet<(String, String)> = HashSet::new();
        for gs in &state.guards {
            let (Some(g), Some(p)) = (&gs.guard, &gs.pod) else { continue };
            let key = (format!("{}/{}", g.namespace, g.name), p.uid.clone());
            if want.contains(&key) {
                // Known and wanted: refresh what the agent reports.
                let mut pushed = ctx.pushed.lock().unwrap_or_else(|p| p.into_inner());
                match pushed.get_mut(&key) {
                    Some(entry) if entry.error.is_none() => {
                        let before = entry.guarded();
                        entry.status = Some(gs.clone());
                        if entry.guarded() != before {
                            retrigger.insert(key.0.clone());
                        }
                    }
                    _ => {
                        retrigger.insert(key.0.clone());
                    }
                }
                have.insert(key);
            } else {
                // Enforced but not wanted: withdraw.
                tracing::info!(%node, guard = %key.0, pod = %key.1, "drift: agent enforces a guard nothing wants; destroying");
                metrics::counter!("janus_controller_drift_total", "kind" => "extra").increment(1);
                let req = v1::DestroyGuardRequest { guard: gs.guard.clone(), pod: gs.pod.clone() };
                if let Err(e) = ctx.agents.destroy(&node, &addr, req).await {
                    tracing::warn!(error = %e, "drift: destroy failed");
                }
                ctx.pushed.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            }
        }
        for missing in want.difference(&have) {
            tracing::info!(%node, guard = %missing.0, pod = %missing.1, "drift: agent lacks a wanted guard; re-pushing");
            metrics::counter!("janus_controller_drift_total", "kind" => "missing").increment(1);
            ctx.pushed.lock().unwrap_or_else(|p| p.into_inner()).remove(missing);
            retrigger.insert(missing.0.clone());
        }
    }
    for key in retrigger {
        if let Some(g) = all_guards.iter().find(|g| desired::guard_key(g) == key)
            && trigger.send(ObjectRef::from_obj(g.as_ref()).within(&g.namespace().unwrap_or_default())).is_ok()
        {
            ctx.backlog_add(1);
        }
    }
}
