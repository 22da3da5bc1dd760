//! What the controller asks a node's agent to enforce: one guard on one
//! pod's containers (an [`Assignment`]), and where each container stands
//! ([`ContainerState`]). The agent keeps assignments in its state file; the
//! wire form is `janus.v1.CreateGuardRequest`. Validation lives here so both
//! ends, and every road into the agent, apply the same rules.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{ContainerId, FieldError, GuardSpec};

/// Identifies a JanusGuard object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GuardRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Kubernetes uid.
    #[serde(default)]
    pub uid: String,
    /// `metadata.generation` the spec came from.
    #[serde(default)]
    pub generation: i64,
}

impl GuardRef {
    /// `namespace/name`, the guard's identity in records and metrics.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Identifies a pod and the node it runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Kubernetes uid (the key, together with the guard).
    pub uid: String,
    /// Node it runs on.
    #[serde(default)]
    pub node: String,
}

/// A container of the pod: its name and the runtime ID from the pod status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Container {
    /// Container name.
    pub name: String,
    /// `containerd://<id>` and the like (see [`ContainerId`]).
    pub runtime_id: String,
}

/// One guard to enforce on one pod's containers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The guard.
    pub guard: GuardRef,
    /// The pod.
    pub pod: PodRef,
    /// Its containers to guard.
    pub containers: Vec<Container>,
    /// The guard's spec.
    pub spec: GuardSpec,
}

impl Assignment {
    /// Checks every field; names are the wire's (`containers[1].runtimeId`,
    /// `spec.subjects[0].deny[2]`).
    pub fn validate(&self) -> Result<(), FieldError> {
        check_guard(&self.guard)?;
        check(&self.pod.namespace, "pod.namespace", Kind::Label)?;
        check(&self.pod.name, "pod.name", Kind::Subdomain)?;
        check(&self.pod.uid, "pod.uid", Kind::Uid)?;
        if !self.pod.node.is_empty() {
            check(&self.pod.node, "pod.node", Kind::Subdomain)?;
        }
        if self.containers.is_empty() {
            return Err(FieldError::new("containers", "at least one container is required"));
        }
        if self.containers.len() > MAX_CONTAINERS {
            return Err(FieldError::new(
                "containers",
                format!("at most {MAX_CONTAINERS} containers per pod (got {})", self.containers.len()),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, c) in self.containers.iter().enumerate() {
            check(&c.name, &format!("containers[{i}].name"), Kind::Label)?;
            if !names.insert(c.name.as_str()) {
                return Err(FieldError::new(format!("containers[{i}].name"), format!("{:?} appears twice", c.name)));
            }
            ContainerId::parse(&c.runtime_id).map_err(|e| FieldError::new(format!("containers[{i}].runtimeId"), e))?;
        }
        self.spec.validate().map_err(|e| e.within("spec"))
    }

    /// Checks that the assignment is for `node` (an empty `pod.node` is
    /// taken to mean "this node").
    pub fn check_node(&self, node: &str) -> Result<(), FieldError> {
        if !self.pod.node.is_empty() && self.pod.node != node {
            return Err(FieldError::new(
                "pod.node",
                format!("is {:?} but this agent runs on node {node:?}", self.pod.node),
            ));
        }
        Ok(())
    }
}

/// A request to stop enforcing one guard on one pod (the wire's
/// DestroyGuard). Releasing what is not enforced is not an error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Release {
    /// The guard (namespace and name are what count).
    pub guard: GuardRef,
    /// The pod's uid.
    pub pod_uid: String,
}

impl Release {
    /// Checks the fields that identify what to release.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_guard(&self.guard)?;
        check(&self.pod_uid, "pod.uid", Kind::Uid)
    }
}

/// Most containers one assignment may name (app, init and ephemeral
/// containers of one pod; Kubernetes sets no limit, real pods have a few).
pub const MAX_CONTAINERS: usize = 256;

/// The shapes of names the API server gives out.
#[derive(Clone, Copy)]
enum Kind {
    /// RFC 1123 label: namespaces, container names (at most 63).
    Label,
    /// RFC 1123 subdomain: object and node names (at most 253).
    Subdomain,
    /// An object's uid: a UUID from the API server (kubelet's static pods
    /// use a 32-digit hash); letters, digits and `-`, at most 128.
    Uid,
}

fn check_guard(g: &GuardRef) -> Result<(), FieldError> {
    check(&g.namespace, "guard.namespace", Kind::Label)?;
    check(&g.name, "guard.name", Kind::Subdomain)?;
    if !g.uid.is_empty() {
        check(&g.uid, "guard.uid", Kind::Uid)?;
    }
    Ok(())
}

/// Checks that `value` is a well-formed name of `kind`: these values name
/// state-file keys, guard instances, audit records and metrics, so nothing
/// else gets in (a megabyte, a `/`, a NUL). The error never repeats a long
/// value whole.
fn check(value: &str, field: &str, kind: Kind) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    let (max, what) = match kind {
        Kind::Label => (63, "a lowercase RFC 1123 label (a-z, 0-9, '-'; starts and ends alphanumeric)"),
        Kind::Subdomain => (253, "a lowercase RFC 1123 subdomain (a-z, 0-9, '-', '.')"),
        Kind::Uid => (128, "a uid (letters, digits, '-')"),
    };
    if value.len() > max {
        return Err(FieldError::new(field, format!("is {} bytes long, at most {max} allowed", value.len())));
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = match kind {
        Kind::Label => {
            value.chars().all(|c| alnum(c) || c == '-') && value.starts_with(alnum) && value.ends_with(alnum)
        }
        Kind::Subdomain => value.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| alnum(c) || c == '-')
                && l.starts_with(alnum)
                && l.ends_with(alnum)
        }),
        Kind::Uid => value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
    };
    if !ok {
        return Err(FieldError::new(field, format!("{value:?} is not {what}")));
    }
    Ok(())
}

/// Where one container of an assignment stands, as the agent reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContainerState {
    /// Not running yet (or not found): retried with backoff.
    Pending,
    /// Enforced.
    Guarded,
    /// Applying failed: retried with backoff; see the container's last error.
    Failed,
    /// Its process is gone; enforcement removed, waiting for a new one.
    Gone,
}

impl ContainerState {
    /// Every state, in metric order.
    pub const ALL: [ContainerState; 4] =
        [ContainerState::Pending, ContainerState::Guarded, ContainerState::Failed, ContainerState::Gone];

    /// The state's name (`Guarded`).
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Pending => "Pending",
            ContainerState::Guarded => "Guarded",
            ContainerState::Failed => "Failed",
            ContainerState::Gone => "Gone",
        }
    }

    /// The state named `s`.
    pub fn from_name(s: &str) -> Option<ContainerState> {
        ContainerState::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Subject;

    fn good() -> Assignment {
        Assignment {
            guard: GuardRef { namespace: "ns".into(), name: "g".into(), uid: "u".into(), generation: 3 },
            pod: PodRef { namespace: "ns".into(), name: "p".into(), uid: "pu".into(), node: "n".into() },
            containers: vec![Container { name: "c".into(), runtime_id: "containerd://0123456789abcdef".into() }],
            spec: GuardSpec {
                subjects: vec![Subject { deny: vec!["/x".into()], ..Default::default() }],
                ..Default::default()
            },
        }
    }

    #[test]
    fn good_is_good() {
        good().validate().unwrap();
        good().check_node("n").unwrap();
        assert_eq!(good().check_node("m").unwrap_err().field, "pod.node");
    }

    #[test]
    fn errors_name_the_field() {
        let field = |f: fn(&mut Assignment)| {
            let mut a = good();
            f(&mut a);
            a.validate().unwrap_err().field
        };
        assert_eq!(field(|a| a.guard.name.clear()), "guard.name");
        assert_eq!(field(|a| a.pod.uid.clear()), "pod.uid");
        assert_eq!(field(|a| a.containers.clear()), "containers");
        assert_eq!(field(|a| a.containers[0].runtime_id = "containerd://xyz".into()), "containers[0].runtimeId");
        assert_eq!(field(|a| a.containers.push(a.containers[0].clone())), "containers[1].name");
        assert_eq!(field(|a| a.spec.subjects[0].deny[0] = "x/..".into()), "spec.subjects[0].deny[0]");
        assert_eq!(field(|a| a.guard.name = "n".repeat(254)), "guard.name");
        assert_eq!(field(|a| a.guard.name = "Web".into()), "guard.name");
        assert_eq!(field(|a| a.guard.namespace = "a.b".into()), "guard.namespace");
        assert_eq!(field(|a| a.guard.uid = "../x".into()), "guard.uid");
        assert_eq!(field(|a| a.pod.namespace = "a/b".into()), "pod.namespace");
        assert_eq!(field(|a| a.pod.name = "p..q".into()), "pod.name");
        assert_eq!(field(|a| a.pod.name = "-p".into()), "pod.name");
        assert_eq!(field(|a| a.pod.uid = "u\0".into()), "pod.uid");
        assert_eq!(field(|a| a.pod.node = "n/".into()), "pod.node");
        assert_eq!(field(|a| a.containers[0].name = "x\0y".into()), "containers[0].name");
        assert_eq!(field(|a| a.containers = vec![a.containers[0].clone(); 257]), "containers");
        // Names the API server gives out pass.
        let mut a = good();
        a.guard.name = "web.guard-1".into();
        a.pod.name = "web-7f9c-abcde".into();
        a.pod.uid = "524adb1a-e723-4e22-8391-9c6d711f3164".into();
        a.pod.node = "ip-10-0-0-1.ec2.internal".into();
        a.containers[0].name = "istio-proxy".into();
        a.validate().unwrap();
        // A long value is not repeated whole in the message.
        let mut a = good();
        a.guard.name = "n".repeat(1_000_000);
        assert!(a.validate().unwrap_err().to_string().len() < 200);
    }

    /// The agent's state file of the previous release must still load.
    #[test]
    fn previous_release_state_entry_loads() {
        let old = r#"{"guard":{"namespace":"ns","name":"g","uid":"u","generation":3},
            "pod":{"namespace":"ns","name":"p","uid":"pu","node":"n"},
            "containers":[{"name":"c","runtime_id":"containerd://0123456789abcdef"}],
            "spec":{"subjects":[{"allow":[],"deny":["/x"],"events":[],"onlyDir":false,
              "autoAllowOwner":false,"audit":false,"tags":{},"mountpoint":false}],"mode":"Enforce"}}"#;
        let a: Assignment = serde_json::from_str(old).unwrap();
        assert_eq!(a, good());
    }

    #[test]
    fn state_names() {
        for s in ContainerState::ALL {
            assert_eq!(ContainerState::from_name(s.as_str()), Some(s));
        }
    }
}
