//! What a reconcile sends and what the guard's status says, computed from
//! the desired targets and what was pushed before. Pure functions: no I/O,
//! no locks, no API server; [`crate::fanout`] sends the calls and
//! [`crate::status`] writes the result.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use janus_api::ContainerState;
use janus_proto::{convert, v1};

use crate::desired::Target;

/// At most this many problems are named in the Ready condition's message.
pub const MAX_PROBLEMS_SHOWN: usize = 5;

/// What was last pushed for one (guard, pod).
#[derive(Clone, Debug, PartialEq)]
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
    /// The last push succeeded and the agent reports every container (at
    /// least one) guarded.
    pub fn guarded(&self) -> bool {
        self.error.is_none()
            && self
                .status
                .as_ref()
                .is_some_and(|s| !s.containers.is_empty() && s.containers.iter().all(container_guarded))
    }
}

/// Key of a (guard, pod): (`namespace/name`, pod uid).
pub type PushKey = (String, String);

/// Whether the agent reports container `c` guarded. The only place the
/// controller looks at the wire's container state.
/// A state the controller cannot read (an agent newer than it) is not
/// guarded.
pub fn container_guarded(c: &v1::ContainerStatus) -> bool {
    convert::container_state(c) == Ok(ContainerState::Guarded)
}

/// The container's state as the status message shows it.
fn state_name(c: &v1::ContainerStatus) -> String {
    match convert::container_state(c) {
        Ok(s) => s.to_string(),
        Err(e) => format!("in an unknown state ({e})"),
    }
}

/// Fingerprint of what `t` sends; a target whose fingerprint differs from
/// the last push's is sent again.
pub fn fingerprint(t: &Target) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.node.hash(&mut h);
    format!("{:?}", t.request).hash(&mut h);
    h.finish()
}

/// A CreateGuard to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Create {
    /// Pod uid.
    pub uid: String,
    /// Where and what.
    pub target: Target,
    /// [`fingerprint`] of `target`.
    pub fingerprint: u64,
}

/// A DestroyGuard to send.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Destroy {
    /// Pod uid.
    pub uid: String,
    /// Node whose agent has it.
    pub node: String,
}

/// The agent calls one reconcile of a guard makes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// In pod uid order.
    pub creates: Vec<Create>,
    /// In (pod uid, node) order.
    pub destroys: Vec<Destroy>,
}

/// Pod uid and entry of everything pushed for guard `key`.
fn pushed_for<'a>(
    key: &'a str,
    pushed: &'a HashMap<PushKey, Pushed>,
) -> impl Iterator<Item = (&'a String, &'a Pushed)> {
    pushed.iter().filter(move |((gk, _), _)| gk == key).map(|((_, uid), p)| (uid, p))
}

/// The calls for guard `key` (`namespace/name`) whose desired targets are
/// `targets` (pod uid -> target): CreateGuard for every target that was not
/// pushed, or changed (fingerprint), or whose last push failed, or that the
/// agent does not report fully guarded yet; DestroyGuard for every pod
/// pushed before that is no longer a target.
pub fn plan(key: &str, targets: &BTreeMap<String, Target>, pushed: &HashMap<PushKey, Pushed>) -> Plan {
    let creates = targets
        .iter()
        .filter_map(|(uid, t)| {
            let fp = fingerprint(t);
            let p = pushed.get(&(key.to_string(), uid.clone()));
            let stale = p.is_none_or(|p| p.fingerprint != fp || p.error.is_some() || !p.guarded());
            stale.then(|| Create { uid: uid.clone(), target: t.clone(), fingerprint: fp })
        })
        .collect();
    let destroys: BTreeSet<Destroy> = pushed_for(key, pushed)
        .filter(|(uid, _)| !targets.contains_key(*uid))
        .map(|(uid, p)| Destroy { uid: uid.clone(), node: p.node.clone() })
        .collect();
    Plan { creates, destroys: destroys.into_iter().collect() }
}

/// The calls when guard `key` is deleted: DestroyGuard for everything pushed
/// for it, and for every pod it selects now (`targets`: a restarted
/// controller has pushed nothing yet, but the agents may have it).
pub fn plan_withdrawal(key: &str, targets: &BTreeMap<String, Target>, pushed: &HashMap<PushKey, Pushed>) -> Plan {
    let mut destroys: BTreeSet<Destroy> =
        pushed_for(key, pushed).map(|(uid, p)| Destroy { uid: uid.clone(), node: p.node.clone() }).collect();
    destroys.extend(targets.iter().map(|(uid, t)| Destroy { uid: uid.clone(), node: t.node.clone() }));
    Plan { creates: Vec::new(), destroys: destroys.into_iter().collect() }
}

/// Why a pushed pod is not guarded: the push's error, else the containers
/// the agent does not report guarded (`container app Pending: no pid`).
pub fn why_not_guarded(p: &Pushed) -> String {
    p.error.clone().unwrap_or_else(|| {
        p.status
            .iter()
            .flat_map(|s| &s.containers)
            .filter(|c| !container_guarded(c))
            .map(|c| {
                let e = if c.last_error.is_empty() { String::new() } else { format!(": {}", c.last_error) };
                format!("container {} {}{e}", c.name, state_name(c))
            })
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// What a guard's status says after a reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Selected pods that are running with containers (`observablePods`).
    pub observable: i32,
    /// Of those, pods whose agent reports every container guarded
    /// (`guardedPods`).
    pub guarded: i32,
    /// The Ready condition: every observable pod guarded, nothing failed,
    /// the selector is valid.
    pub ready: bool,
    /// The Ready condition's reason: `AllPodsGuarded`, `PodsNotGuarded` or
    /// `InvalidSelector`.
    pub reason: &'static str,
    /// The Ready condition's message.
    pub message: String,
    /// Some pod is not guarded yet or a call failed: reconcile again soon.
    pub retry_soon: bool,
}

/// The status of guard `key` with desired `targets`, from what the agents
/// said (`pushed`), the calls that failed (`failures`, already worded) and
/// why its selector cannot be used (`selector_error`, from
/// [`crate::selector::parse`]). The message names the first
/// [`MAX_PROBLEMS_SHOWN`] problems and counts the rest.
pub fn summarize(
    key: &str,
    targets: &BTreeMap<String, Target>,
    pushed: &HashMap<PushKey, Pushed>,
    failures: &[String],
    selector_error: Option<&str>,
) -> Summary {
    let mut guarded = 0;
    let mut not_guarded = Vec::new();
    for (uid, t) in targets {
        let pod = t.request.pod.as_ref().map(|p| p.name.clone()).unwrap_or_else(|| uid.clone());
        match pushed.get(&(key.to_string(), uid.clone())) {
            Some(p) if p.guarded() => guarded += 1,
            Some(p) => not_guarded.push(format!("{pod} on {} ({})", t.node, why_not_guarded(p))),
            None => not_guarded.push(format!("{pod} on {} (not pushed)", t.node)),
        }
    }
    let observable = targets.len() as i32;
    let retry_soon = !not_guarded.is_empty() || !failures.is_empty();
    let problems: Vec<String> = selector_error
        .map(|e| format!("spec.selector: {e}"))
        .into_iter()
        .chain(not_guarded)
        .chain(failures.iter().cloned())
        .collect();
    let ready = problems.is_empty();
    let (reason, message) = if ready {
        ("AllPodsGuarded", format!("{guarded} of {observable} selected running pods guarded"))
    } else {
        let shown = problems[..problems.len().min(MAX_PROBLEMS_SHOWN)].join("; ");
        let more = match problems.len().checked_sub(MAX_PROBLEMS_SHOWN) {
            Some(n) if n > 0 => format!(" and {n} more"),
            _ => String::new(),
        };
        if selector_error.is_some() {
            ("InvalidSelector", format!("{shown}{more}"))
        } else {
            ("PodsNotGuarded", format!("{guarded} of {observable} guarded; not guarded: {shown}{more}"))
        }
    };
    Summary { observable, guarded, ready, reason, message, retry_soon }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "web/g";

    fn target(name: &str, node: &str, generation: i64) -> Target {
        Target {
            node: node.into(),
            request: v1::CreateGuardRequest {
                guard: Some(v1::GuardRef { namespace: "web".into(), name: "g".into(), uid: "gu".into(), generation }),
                pod: Some(v1::PodRef {
                    namespace: "web".into(),
                    name: name.into(),
                    uid: format!("uid-{name}"),
                    node: node.into(),
                }),
                containers: vec![v1::Container { name: "app".into(), runtime_id: "containerd://0123".into() }],
                spec: Some(v1::GuardSpec::default()),
            },
        }
    }

    fn targets(ts: &[(&str, &str)]) -> BTreeMap<String, Target> {
        ts.iter().map(|(name, node)| (format!("uid-{name}"), target(name, node, 1))).collect()
    }

    fn container(name: &str, state: &str, last_error: &str) -> v1::ContainerStatus {
        let mut c = v1::ContainerStatus { name: name.into(), last_error: last_error.into(), ..Default::default() };
        convert::set_container_state(&mut c, ContainerState::from_name(state).unwrap());
        c
    }

    /// What a successful push of `t` left, with the agent reporting
    /// `containers`.
    fn pushed_ok(t: &Target, containers: Vec<v1::ContainerStatus>) -> Pushed {
        Pushed {
            node: t.node.clone(),
            fingerprint: fingerprint(t),
            status: Some(v1::GuardStatus { containers, ..Default::default() }),
            error: None,
        }
    }

    fn guarded(t: &Target) -> Pushed {
        pushed_ok(t, vec![container("app", "Guarded", "")])
    }

    fn key(uid: &str) -> PushKey {
        (KEY.to_string(), uid.to_string())
    }

    fn create_uids(p: &Plan) -> Vec<&str> {
        p.creates.iter().map(|c| c.uid.as_str()).collect()
    }

    #[test]
    fn only_guarded_counts_as_guarded() {
        assert!(container_guarded(&container("app", "Guarded", "")));
        for state in ["Pending", "Failed", "Gone"] {
            assert!(!container_guarded(&container("app", state, "")), "{state}");
        }
        for legacy in ["", "guarded"] {
            let c = v1::ContainerStatus { state: legacy.into(), ..Default::default() };
            assert!(!container_guarded(&c), "{legacy:?}");
        }
        let t = target("a", "node-a", 1);
        assert!(guarded(&t).guarded());
        assert!(!pushed_ok(&t, vec![]).guarded(), "no container reported");
        assert!(!pushed_ok(&t, vec![container("app", "Guarded", ""), container("side", "Pending", "")]).guarded());
        assert!(!Pushed { status: None, ..guarded(&t) }.guarded(), "no reply");
        assert!(!Pushed { error: Some("timeout".into()), ..guarded(&t) }.guarded(), "last push failed");
    }

    #[test]
    fn new_target_is_created() {
        let ts = targets(&[("a", "node-a")]);
        let p = plan(KEY, &ts, &HashMap::new());
        assert_eq!(
            p,
            Plan {
                creates: vec![Create {
                    uid: "uid-a".into(),
                    target: ts["uid-a"].clone(),
                    fingerprint: fingerprint(&ts["uid-a"])
                }],
                destroys: vec![],
            }
        );
    }

    #[test]
    fn guarded_target_is_not_resent() {
        let ts = targets(&[("a", "node-a"), ("b", "node-b")]);
        let pushed: HashMap<_, _> = ts.iter().map(|(uid, t)| (key(uid), guarded(t))).collect();
        assert_eq!(plan(KEY, &ts, &pushed), Plan::default());
    }

    #[test]
    fn changed_fingerprint_is_resent() {
        let ts = targets(&[("a", "node-a"), ("b", "node-b")]);
        let mut pushed: HashMap<_, _> = ts.iter().map(|(uid, t)| (key(uid), guarded(t))).collect();
        // The guard's generation changed: every request differs.
        let mut newer = ts.clone();
        newer.insert("uid-a".into(), target("a", "node-a", 2));
        assert_ne!(fingerprint(&newer["uid-a"]), fingerprint(&ts["uid-a"]));
        let p = plan(KEY, &newer, &pushed);
        assert_eq!(create_uids(&p), ["uid-a"]);
        assert_eq!(p.creates[0].target, newer["uid-a"]);
        assert_eq!(p.creates[0].fingerprint, fingerprint(&newer["uid-a"]));
        assert!(p.destroys.is_empty());
        // So does a container restart (new runtime id).
        let mut restarted = ts["uid-b"].clone();
        restarted.request.containers[0].runtime_id = "containerd://4567".into();
        assert_ne!(fingerprint(&restarted), fingerprint(&ts["uid-b"]));
        pushed.clear();
        pushed.insert(key("uid-b"), guarded(&ts["uid-b"]));
        let p = plan(KEY, &BTreeMap::from([("uid-b".to_string(), restarted)]), &pushed);
        assert_eq!(create_uids(&p), ["uid-b"]);
    }

    #[test]
    fn failed_or_not_fully_guarded_push_is_retried() {
        let ts = targets(&[("a", "node-a"), ("b", "node-b"), ("c", "node-c"), ("d", "node-d")]);
        let pushed = HashMap::from([
            (
                key("uid-a"),
                Pushed { status: None, error: Some("agent on node node-a: timeout".into()), ..guarded(&ts["uid-a"]) },
            ),
            (key("uid-b"), pushed_ok(&ts["uid-b"], vec![container("app", "Pending", "no pid")])),
            (key("uid-c"), pushed_ok(&ts["uid-c"], vec![])),
            (key("uid-d"), guarded(&ts["uid-d"])),
        ]);
        let p = plan(KEY, &ts, &pushed);
        assert_eq!(create_uids(&p), ["uid-a", "uid-b", "uid-c"]);
        assert!(p.destroys.is_empty());
    }

    #[test]
    fn pod_gone_is_destroyed() {
        let ts = targets(&[("a", "node-a"), ("b", "node-b")]);
        let mut pushed: HashMap<_, _> = ts.iter().map(|(uid, t)| (key(uid), guarded(t))).collect();
        // Another guard's pods are not this guard's business.
        pushed.insert(("web/other".into(), "uid-x".into()), guarded(&target("x", "node-x", 1)));
        let now = targets(&[("a", "node-a")]);
        let p = plan(KEY, &now, &pushed);
        assert!(p.creates.is_empty());
        assert_eq!(p.destroys, [Destroy { uid: "uid-b".into(), node: "node-b".into() }]);
        // Nothing selected any more: everything this guard pushed goes.
        let p = plan(KEY, &BTreeMap::new(), &pushed);
        assert_eq!(
            p.destroys,
            [
                Destroy { uid: "uid-a".into(), node: "node-a".into() },
                Destroy { uid: "uid-b".into(), node: "node-b".into() }
            ]
        );
    }

    #[test]
    fn deleted_guard_withdraws_pushed_and_selected() {
        let pushed = HashMap::from([
            (key("uid-a"), guarded(&target("a", "node-a", 1))),
            (key("uid-b"), Pushed { error: Some("x".into()), ..guarded(&target("b", "node-b", 1)) }),
            (("web/other".into(), "uid-x".into()), guarded(&target("x", "node-x", 1))),
        ]);
        // uid-c: selected but never pushed (restarted controller).
        let p = plan_withdrawal(KEY, &targets(&[("a", "node-a"), ("c", "node-c")]), &pushed);
        assert!(p.creates.is_empty());
        let d = |uid: &str, node: &str| Destroy { uid: uid.into(), node: node.into() };
        assert_eq!(p.destroys, [d("uid-a", "node-a"), d("uid-b", "node-b"), d("uid-c", "node-c")]);
    }

    #[test]
    fn all_guarded_is_ready() {
        let ts = targets(&[("a", "node-a"), ("b", "node-b")]);
        let pushed: HashMap<_, _> = ts.iter().map(|(uid, t)| (key(uid), guarded(t))).collect();
        let s = summarize(KEY, &ts, &pushed, &[], None);
        assert_eq!(
            s,
            Summary {
                observable: 2,
                guarded: 2,
                ready: true,
                reason: "AllPodsGuarded",
                message: "2 of 2 selected running pods guarded".into(),
                retry_soon: false,
            }
        );
        let s = summarize(KEY, &BTreeMap::new(), &HashMap::new(), &[], None);
        assert_eq!((s.ready, s.message.as_str()), (true, "0 of 0 selected running pods guarded"));
    }

    #[test]
    fn not_guarded_pods_are_named_with_the_reason() {
        let ts = targets(&[("a", "node-a"), ("b", "node-b"), ("c", "node-c"), ("d", "node-d")]);
        let pushed = HashMap::from([
            (key("uid-a"), guarded(&ts["uid-a"])),
            (
                key("uid-b"),
                Pushed {
                    status: None,
                    error: Some("no janusd agent is known on node node-b".into()),
                    ..guarded(&ts["uid-b"])
                },
            ),
            (
                key("uid-c"),
                pushed_ok(
                    &ts["uid-c"],
                    vec![
                        container("app", "Pending", "no pid"),
                        container("log", "Guarded", ""),
                        container("side", "Failed", ""),
                    ],
                ),
            ),
        ]);
        let s = summarize(KEY, &ts, &pushed, &[], None);
        assert_eq!((s.observable, s.guarded, s.ready, s.reason, s.retry_soon), (4, 1, false, "PodsNotGuarded", true));
        assert_eq!(
            s.message,
            "1 of 4 guarded; not guarded: b on node-b (no janusd agent is known on node node-b); \
             c on node-c (container app Pending: no pid, container side Failed); d on node-d (not pushed)"
        );
    }

    #[test]
    fn more_than_five_problems_are_counted() {
        let names = ["a", "b", "c", "d", "e", "f", "g"];
        let ts: BTreeMap<_, _> = names.iter().map(|n| (format!("uid-{n}"), target(n, "node-a", 1))).collect();
        let failures = ["withdraw from pod uid-z: agent on node node-z (x): timeout".to_string()];
        let s = summarize(KEY, &ts, &HashMap::new(), &failures, None);
        assert_eq!((s.observable, s.guarded, s.ready, s.retry_soon), (7, 0, false, true));
        assert_eq!(
            s.message,
            "0 of 7 guarded; not guarded: a on node-a (not pushed); b on node-a (not pushed); c on node-a (not pushed); \
             d on node-a (not pushed); e on node-a (not pushed) and 3 more"
        );
        // Exactly five: no "more".
        let five: BTreeMap<_, _> = ts.iter().take(4).map(|(k, v)| (k.clone(), v.clone())).collect();
        let s = summarize(KEY, &five, &HashMap::new(), &failures, None);
        assert!(
            s.message.ends_with("d on node-a (not pushed); withdraw from pod uid-z: agent on node node-z (x): timeout"),
            "{}",
            s.message
        );
        // Failures alone make it not ready.
        let s = summarize(KEY, &BTreeMap::new(), &HashMap::new(), &failures, None);
        assert_eq!((s.ready, s.reason, s.retry_soon), (false, "PodsNotGuarded", true));
        assert_eq!(s.message, format!("0 of 0 guarded; not guarded: {}", failures[0]));
    }

    #[test]
    fn invalid_selector_is_reported() {
        let why = r#"matchExpressions[0] (key "x", operator "Near"): Invalid expression operator"#;
        let s = summarize(KEY, &BTreeMap::new(), &HashMap::new(), &[], Some(why));
        assert_eq!(
            s,
            Summary {
                observable: 0,
                guarded: 0,
                ready: false,
                reason: "InvalidSelector",
                message: format!("spec.selector: {why}"),
                retry_soon: false,
            }
        );
        // Pods it selected before are withdrawn; a failure to is named too.
        let s = summarize(KEY, &BTreeMap::new(), &HashMap::new(), &["withdraw from pod uid-a: boom".into()], Some(why));
        assert_eq!(s.message, format!("spec.selector: {why}; withdraw from pod uid-a: boom"));
        assert!(s.retry_soon);
    }

    /// A 0.1 agent sends the state as a string only; an agent newer than
    /// this controller may send a value it does not know.
    #[test]
    fn legacy_and_unknown_states() {
        let legacy = v1::ContainerStatus { state: "Guarded".into(), ..Default::default() };
        assert!(container_guarded(&legacy));
        let unknown = v1::ContainerStatus { state_kind: 42, ..Default::default() };
        assert!(!container_guarded(&unknown));
        assert!(state_name(&unknown).contains("unknown"));
    }
}
