//! Sending a guard's CreateGuard and DestroyGuard calls to the node agents
//! and recording what they answered in [`Context::pushed`]. All calls of a
//! [`Plan`] run concurrently, each with the agents' timeout: a dead agent
//! only delays its own pods.

use std::collections::{BTreeMap, HashMap};

use futures::future::join_all;
use janus_proto::v1;

use crate::agents::AgentError;
use crate::diff::{Create, Destroy, Plan, PushKey, Pushed};
use crate::reconcile::Context;

/// Sends `plan` for guard `key` (`namespace/name`) to the agents at `addrs`
/// (node -> address). Records every CreateGuard's answer or error (a node
/// without a known agent is an error), and forgets every pod withdrawn.
/// Returns the withdrawals that failed: (pod uid, error).
pub async fn send(ctx: &Context, addrs: &BTreeMap<String, String>, key: &str, plan: Plan) -> Vec<(String, AgentError)> {
    let create_calls = plan.creates.into_iter().map(|c| create(ctx, addrs, c));
    let destroy_calls = plan.destroys.into_iter().map(|d| withdraw(ctx, addrs, key, d));
    let (created, destroyed) = futures::join!(join_all(create_calls), join_all(destroy_calls));
    let mut pushed = ctx.pushed();
    for (uid, entry) in created {
        pushed.insert((key.to_string(), uid), entry);
    }
    forget_withdrawn(&mut pushed, key, destroyed)
}

/// CreateGuard for `c`: the pod uid and what to remember of it.
async fn create(ctx: &Context, addrs: &BTreeMap<String, String>, c: Create) -> (String, Pushed) {
    let Create { uid, target, fingerprint } = c;
    let r = match addrs.get(&target.node) {
        Some(a) => ctx.agents.create(&target.node, a, target.request).await,
        None => Err(AgentError::NoAgent(target.node.clone())),
    };
    let (status, error) = match r {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e.to_string())),
    };
    (uid, Pushed { node: target.node, fingerprint, status, error })
}

/// DestroyGuard for (guard `key`, pod `d.uid`) on `d.node`'s agent. An
/// agent that is not published any more went away with its node: nothing to
/// do.
async fn withdraw(
    ctx: &Context,
    addrs: &BTreeMap<String, String>,
    key: &str,
    d: Destroy,
) -> (String, Result<(), AgentError>) {
    let r = match addrs.get(&d.node) {
        Some(a) => ctx.agents.destroy(&d.node, a, destroy_request(key, &d.uid)).await.map(|_| ()),
        None => Ok(()),
    };
    (d.uid, r)
}

/// Forgets the (guard `key`, pod) entries withdrawn; returns the failures.
fn forget_withdrawn(
    pushed: &mut HashMap<PushKey, Pushed>,
    key: &str,
    results: Vec<(String, Result<(), AgentError>)>,
) -> Vec<(String, AgentError)> {
    let mut failed = Vec::new();
    for (uid, r) in results {
        match r {
            Ok(()) => {
                pushed.remove(&(key.to_string(), uid));
            }
            Err(e) => failed.push((uid, e)),
        }
    }
    failed
}

fn destroy_request(guard_key: &str, uid: &str) -> v1::DestroyGuardRequest {
    let (ns, name) = guard_key.split_once('/').unwrap_or(("", guard_key));
    v1::DestroyGuardRequest {
        guard: Some(v1::GuardRef { namespace: ns.into(), name: name.into(), ..Default::default() }),
        pod: Some(v1::PodRef { uid: uid.into(), ..Default::default() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destroy_request_names_guard_and_pod() {
        let r = destroy_request("web/g", "uid-a");
        let g = r.guard.unwrap();
        assert_eq!((g.namespace.as_str(), g.name.as_str()), ("web", "g"));
        assert_eq!(r.pod.unwrap().uid, "uid-a");
    }

    #[test]
    fn only_successful_withdrawals_are_forgotten() {
        let entry = Pushed { node: "n".into(), fingerprint: 1, status: None, error: None };
        let mut pushed: HashMap<PushKey, Pushed> = ["a", "b"]
            .iter()
            .map(|u| (("web/g".to_string(), u.to_string()), entry.clone()))
            .chain([(("web/other".to_string(), "a".to_string()), entry.clone())])
            .collect();
        let failed = forget_withdrawn(
            &mut pushed,
            "web/g",
            vec![("a".into(), Ok(())), ("b".into(), Err(AgentError::NoAgent("n".into())))],
        );
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, "b");
        let mut left: Vec<_> = pushed.into_keys().collect();
        left.sort();
        assert_eq!(left, [("web/g".to_string(), "b".to_string()), ("web/other".to_string(), "a".to_string())]);
    }
}
