//! What should be enforced: for a guard, the running pods it selects and the
//! CreateGuard request each needs. Pure functions of API objects.

use std::collections::{BTreeMap, BTreeSet};

use janus_proto::v1;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::core::SelectorExt;

use janus_api::{Assignment, Container, GuardRef, PodRef};

use crate::crd::JanusGuard;

/// A pod the guard should be enforced on.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Node the pod runs on (which agent to call).
    pub node: String,
    /// The request to send.
    pub request: v1::CreateGuardRequest,
}

/// `namespace/name` of a guard.
pub fn guard_key(g: &JanusGuard) -> String {
    format!("{}/{}", g.namespace().unwrap_or_default(), g.name_any())
}

/// Running containers of a pod with their runtime IDs, if the pod can be
/// guarded now: scheduled, Running (or Pending while an init container
/// runs), not being deleted, at least one running container with an ID.
/// Every kind of container counts: app containers, init containers (native
/// sidecars, `restartPolicy: Always`, run beside the app; classic ones run
/// before it, while the pod is Pending) and ephemeral ones (`kubectl
/// debug`). Names are unique across the three lists in a pod.
pub fn guardable_containers(pod: &Pod) -> Option<(String, Vec<Container>)> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let status = pod.status.as_ref()?;
    if !matches!(status.phase.as_deref(), Some("Running" | "Pending")) {
        return None;
    }
    let containers: Vec<Container> =
        [&status.container_statuses, &status.init_container_statuses, &status.ephemeral_container_statuses]
            .into_iter()
            .flatten()
            .flatten()
            .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
            .filter_map(|c| {
                let id = c.container_id.clone().filter(|id| !id.is_empty())?;
                Some(Container { name: c.name.clone(), runtime_id: id })
            })
            .collect();
    (!containers.is_empty()).then_some((node, containers))
}

/// Drops from a pod everything the controller never reads, before it goes
/// into the pod cache: managed fields, annotations, owner references, the
/// spec but for the node name, and the container statuses but for name, ID
/// and running state. What is kept is exactly what [`guardable_containers`],
/// [`targets`] and the selectors read (docs/controller.md: memory per 1,000
/// pods).
pub fn strip(pod: &mut Pod) {
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, PodSpec, PodStatus};
    let m = &mut pod.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.owner_references = None;
    m.finalizers = None;
    m.generate_name = None;
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec { node_name: spec.node_name, ..Default::default() });
    }
    if let Some(status) = pod.status.take() {
        let keep = |list: Option<Vec<ContainerStatus>>| {
            list.map(|l| {
                l.into_iter()
                    .map(|c| ContainerStatus {
                        name: c.name,
                        container_id: c.container_id,
                        state: c.state.map(|s| ContainerState { running: s.running, ..Default::default() }),
                        ..Default::default()
                    })
                    .collect()
            })
        };
        pod.status = Some(PodStatus {
            phase: status.phase,
            container_statuses: keep(status.container_statuses),
            init_container_statuses: keep(status.init_container_statuses),
            ephemeral_container_statuses: keep(status.ephemeral_container_statuses),
            ..Default::default()
        });
    }
}

/// Every pod in `pods` the guard selects and can guard now, keyed by pod uid.
/// Empty if the guard's selector is empty or cannot be parsed
/// ([`crate::selector::parse`] says why).
pub fn targets<'a>(g: &JanusGuard, pods: impl IntoIterator<Item = &'a Pod>) -> BTreeMap<String, Target> {
    let Ok(Some(selector)) = crate::selector::parse(&g.spec.selector) else { return BTreeMap::new() };
    let ns = g.namespace().unwrap_or_default();
    let guard = GuardRef {
        namespace: ns.clone(),
        name: g.name_any(),
        uid: g.uid().unwrap_or_default(),
        generation: g.metadata.generation.unwrap_or(0),
    };
    let mut out = BTreeMap::new();
    for pod in pods {
        if pod.namespace().as_deref() != Some(ns.as_str()) || !selector.matches(pod.labels()) {
            continue;
        }
        let (Some(uid), Some((node, containers))) = (pod.uid(), guardable_containers(pod)) else { continue };
        let assignment = Assignment {
            guard: guard.clone(),
            pod: PodRef { namespace: ns.clone(), name: pod.name_any(), uid: uid.clone(), node: node.clone() },
            containers,
            spec: g.spec.clone(),
        };
        let request = v1::CreateGuardRequest::from(&assignment);
        out.insert(uid, Target { node, request });
    }
    out
}

/// (namespace, name) of every guard that selects a pod scheduled on one of
/// `nodes`: the guards a change of those nodes' agents (their entries in the
/// agent Service's EndpointSlices) concerns. Running or not: a pod that has
/// started by the time the reconcile runs needs the new agent too.
pub fn guards_on_nodes<'a>(
    guards: impl IntoIterator<Item = &'a JanusGuard>,
    pods: impl IntoIterator<Item = &'a Pod>,
    nodes: &BTreeSet<String>,
) -> Vec<(String, String)> {
    let on_nodes: Vec<&Pod> = pods
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| nodes.contains(n)))
        .collect();
    if on_nodes.is_empty() {
        return Vec::new();
    }
    guards
        .into_iter()
        .filter(|g| {
            let Ok(Some(selector)) = crate::selector::parse(&g.spec.selector) else { return false };
            let ns = g.namespace();
            on_nodes.iter().any(|p| p.namespace() == ns && selector.matches(p.labels()))
        })
        .map(|g| (g.namespace().unwrap_or_default(), g.name_any()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stripped_pod_is_guarded_the_same_and_is_much_smaller() {
        let mut full = pod("a", &[("run", "nginx")], "Running", true);
        // What real pods carry and the controller never reads.
        let big = "x".repeat(4000);
        full.metadata.annotations =
            Some([("kubectl.kubernetes.io/last-applied-configuration".to_string(), big.clone())].into());
        full.metadata.managed_fields = Some(vec![serde_json::from_value(serde_json::json!({
            "manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:x": big}}
        })).unwrap()]);
        let spec = full.spec.as_mut().unwrap();
        spec.containers[0].env =
            Some(vec![serde_json::from_value(serde_json::json!({"name": "E", "value": big})).unwrap()]);
        spec.containers[0].image = Some("registry.example/app:1".into());
        let mut side = spec.containers[0].clone();
        side.name = "side".into();
        side.restart_policy = Some("Always".into());
        spec.init_containers = Some(vec![side]);
        let st = full.status.as_mut().unwrap();
        let mut side_status = st.container_statuses.as_ref().unwrap()[0].clone();
        side_status.name = "side".into();
        side_status.container_id = Some("containerd://fedcba9876543210".into());
        st.init_container_statuses = Some(vec![side_status]);
        st.ephemeral_container_statuses = Some(vec![]);
        let mut stripped = full.clone();
        strip(&mut stripped);
        assert_eq!(guardable_containers(&stripped), guardable_containers(&full));
        assert_eq!(guardable_containers(&stripped).unwrap().1.len(), 2, "app and native sidecar");
        let (t_full, t_stripped) = (targets(&guard(), [&full]), targets(&guard(), [&stripped]));
        assert_eq!(t_full.len(), 1);
        assert_eq!(
            t_full.values().map(|t| (&t.node, &t.request)).collect::<Vec<_>>(),
            t_stripped.values().map(|t| (&t.node, &t.request)).collect::<Vec<_>>()
        );
        let size = |p: &Pod| serde_json::to_string(p).unwrap().len();
        assert!(size(&stripped) * 10 < size(&full), "{} vs {} bytes", size(&stripped), size(&full));
        // Deletion (it stops guarding) survives.
        let mut deleting = full.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        strip(&mut deleting);
        assert!(guardable_containers(&deleting).is_none());
    }

    #[test]
    fn an_agent_change_concerns_the_guards_with_pods_on_its_node_only() {
        let mut elsewhere = pod("b", &[("run", "apache")], "Running", true);
        elsewhere.spec.as_mut().unwrap().node_name = Some("node-b".into());
        let pods = [pod("a", &[("run", "nginx")], "Running", true), elsewhere];
        let nginx = guard();
        let mut apache = guard();
        apache.metadata.name = Some("apache".into());
        apache.spec.selector = serde_json::from_value(serde_json::json!({"matchLabels": {"run": "apache"}})).unwrap();
        let mut none = guard();
        none.metadata.name = Some("none".into());
        none.spec.selector = serde_json::from_value(serde_json::json!({"matchLabels": {"run": "x"}})).unwrap();
        let guards = [nginx, apache, none];
        let on = |n: &[&str]| {
            let nodes = n.iter().map(|s| s.to_string()).collect();
            guards_on_nodes(guards.iter(), pods.iter(), &nodes)
        };
        assert_eq!(on(&["node-a"]), [("web".to_string(), "g".to_string())]);
        assert_eq!(on(&["node-b"]), [("web".to_string(), "apache".to_string())]);
        assert_eq!(on(&["node-a", "node-b"]).len(), 2);
        assert!(on(&["node-c"]).is_empty());
    }

    fn pod(name: &str, labels: &[(&str, &str)], phase: &str, running: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "web", "uid": format!("uid-{name}"),
                         "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app"}]},
            "status": {"phase": phase, "containerStatuses": [{
                "name": "app", "image": "x", "imageID": "", "ready": running, "restartCount": 0,
                "containerID": "containerd://0123456789abcdef",
                "state": if running { serde_json::json!({"running": {}}) } else { serde_json::json!({"waiting": {}}) }
            }]}
        }))
        .unwrap()
    }

    fn guard() -> JanusGuard {
        serde_norway::from_str(
            "apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata: {name: g, namespace: web, uid: gu, generation: 4}\nspec:\n  selector: {matchLabels: {run: nginx}}\n  mode: Audit\n  subjects:\n  - deny: [/etc/x]\n    events: [open, exec]\n    autoAllowOwner: true\n",
        )
        .unwrap()
    }

    #[test]
    fn selects_running_matching_pods_only() {
        let pods = [
            pod("a", &[("run", "nginx")], "Running", true),
            pod("b", &[("run", "nginx")], "Pending", false),
            pod("c", &[("run", "apache")], "Running", true),
            pod("d", &[("run", "nginx")], "Running", false),
        ];
        let t = targets(&guard(), pods.iter());
        assert_eq!(t.keys().collect::<Vec<_>>(), ["uid-a"]);
        let req = &t["uid-a"].request;
        assert_eq!(req.containers[0].runtime_id, "containerd://0123456789abcdef");
        assert_eq!(req.guard.as_ref().unwrap().generation, 4);
        let spec = req.spec.as_ref().unwrap();
        assert_eq!((spec.mode.as_str(), spec.mode_kind), ("Audit", v1::Mode::Audit as i32));
        assert_eq!(spec.subjects[0].events, ["open", "exec"]);
        assert_eq!(spec.subjects[0].event_kinds, [v1::Event::Open as i32, v1::Event::Exec as i32]);
        assert!(spec.subjects[0].auto_allow_owner);
        assert_eq!(t["uid-a"].node, "node-a");
    }

    #[test]
    fn init_sidecar_and_ephemeral_containers_count() {
        let status = |name: &str, id: &str, running: bool| {
            serde_json::json!({"name": name, "image": "x", "imageID": "", "ready": running, "restartCount": 0,
                               "containerID": id,
                               "state": if running { serde_json::json!({"running": {}}) } else { serde_json::json!({"terminated": {"exitCode": 0}}) }})
        };
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "web", "uid": "u", "labels": {"run": "nginx"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app"}]},
            "status": {"phase": "Running",
                "containerStatuses": [status("app", "containerd://a", true)],
                "initContainerStatuses": [status("setup", "containerd://s", false), status("sidecar", "containerd://c", true)],
                "ephemeralContainerStatuses": [status("debugger", "containerd://d", true)]}
        }))
        .unwrap();
        let (_, containers) = guardable_containers(&pod).unwrap();
        let names: Vec<_> = containers.iter().map(|c| (c.name.as_str(), c.runtime_id.as_str())).collect();
        assert_eq!(names, [("app", "containerd://a"), ("sidecar", "containerd://c"), ("debugger", "containerd://d")]);
        // A classic init container runs while the pod is Pending: guarded.
        let init: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "q", "namespace": "web", "uid": "v"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app"}]},
            "status": {"phase": "Pending",
                "containerStatuses": [{"name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {}}}],
                "initContainerStatuses": [status("setup", "containerd://s", true)]}
        }))
        .unwrap();
        assert_eq!(guardable_containers(&init).unwrap().1[0].name, "setup");
    }
}
