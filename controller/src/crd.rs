//! The `JanusGuard` custom resource, generated from these types
//! (`deploy/crd.yaml` is `janus-crdgen` output; a test keeps them equal).
//!
//! Group `januscontroller.clustergarage.io`, version `v1alpha1`, namespaced,
//! plural `janusguards`, short name `jg` — the original Janus CRD, so its
//! manifests apply unchanged — plus `mode`, `mountpoint`, path patterns and
//! the `exec` event. The schema rejects bad guards at `kubectl apply` time:
//! enums, absolute paths, pattern syntax, limits, and CEL rules for bad
//! combinations.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Most subjects in one guard.
pub const MAX_SUBJECTS: usize = 64;
/// Most paths in one allow or deny list.
pub const MAX_PATHS: usize = 256;
/// Longest path or pattern.
pub const MAX_PATH_LEN: usize = 4096;

/// Which pods to guard and what to allow or deny inside them.
// The repeated `printcolumn(name = .., type_ = ..)` arguments are distinct
// columns, not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "januscontroller.clustergarage.io",
    version = "v1alpha1",
    kind = "JanusGuard",
    plural = "janusguards",
    shortname = "jg",
    namespaced,
    status = "JanusGuardStatus",
    doc = "Guards files inside the pods it selects: which paths may or may not be opened, read or executed.",
    printcolumn(
        name = "Observable",
        type_ = "integer",
        json_path = ".status.observablePods",
        description = "Pods selected and running"
    ),
    printcolumn(
        name = "Guarded",
        type_ = "integer",
        json_path = ".status.guardedPods",
        description = "Pods whose agents enforce the guard"
    ),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct JanusGuardSpec {
    /// Pods to guard, by label. An empty selector matches nothing.
    pub selector: LabelSelector,
    /// Rule groups; see docs/guard-format.md.
    #[schemars(length(min = 1, max = 64))]
    pub subjects: Vec<Subject>,
    /// Enforce (default) denies; Audit only logs what it would deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Text template for audit lines instead of JSON, with fields {pod} {node}
    /// {response} {event} {path} {ftype} {tags} (and more, see the docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub log_format: Option<String>,
}

/// One group of rules sharing events and options.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.allow) && size(self.allow) > 0) || (has(self.deny) && size(self.deny) > 0)").message("a subject needs at least one path in allow or deny"))]
#[x_kube(validation = Rule::new("!has(self.autoAllowOwner) || !self.autoAllowOwner || (has(self.deny) && size(self.deny) > 0)").message("autoAllowOwner only changes deny rules; this subject has none"))]
pub struct Subject {
    /// Absolute paths or patterns to allow (`*` within a component, `**` across).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 4096), regex(pattern = PATH_PATTERN)))]
    pub allow: Vec<String>,
    /// Absolute paths or patterns to deny.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 4096), regex(pattern = PATH_PATTERN)))]
    pub deny: Vec<String>,
    /// Accesses the rules apply to; all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub events: Vec<EventName>,
    /// The rules apply to directories only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_dir: Option<bool>,
    /// The container's main process and its descendants are always allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_allow_owner: Option<bool>,
    /// Also log allowed events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<bool>,
    /// Copied into every audit record of this subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub tags: Option<BTreeMap<String, String>>,
    /// Guard the whole mount the paths live on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<bool>,
}

/// The path syntax the engine accepts (`janus_engine::pattern::Pattern`),
/// as a regular expression the API server checks at no CEL cost: absolute;
/// no `.` or `..` components; `**` only as a whole component. Components:
/// `*`, `**`, or names where every `*` is followed by another character
/// (a single trailing `*` allowed), excluding `.` and `..`. (A CEL rule over
/// every path of every subject exceeds the API server's cost budget.)
pub const PATH_PATTERN: &str = concat!(
    r"^/+(?:(?:\*\*?|(?:[^/.*]|\*[^/*])(?:[^/*]|\*[^/*])*\*?|\.(?:[^/.*]|\*[^/*])(?:[^/*]|\*[^/*])*\*?|\.\*|\.\.(?:(?:[^/*]|\*[^/*])+\*?|\*))/+)*",
    r"(?:\*\*?|(?:[^/.*]|\*[^/*])(?:[^/*]|\*[^/*])*\*?|\.(?:[^/.*]|\*[^/*])(?:[^/*]|\*[^/*])*\*?|\.\*|\.\.(?:(?:[^/*]|\*[^/*])+\*?|\*))?$"
);

/// Event names.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventName {
    /// open, access and exec.
    All,
    /// Reading file contents.
    Access,
    /// open(2).
    Open,
    /// Executing a file.
    Exec,
}

/// Enforcement mode.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Deny what the rules deny.
    #[default]
    Enforce,
    /// Allow everything, log what would have been denied.
    Audit,
}

/// What the controller observed and achieved.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JanusGuardStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods the selector matches that are running with containers.
    #[serde(default)]
    pub observable_pods: i32,
    /// Of those, pods whose agent reports every container guarded.
    #[serde(default)]
    pub guarded_pods: i32,
    /// `Ready`: every observable pod is guarded; the reason names the pods
    /// or nodes that are not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_names_match_the_original() {
        let crd = JanusGuard::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("janusguards.januscontroller.clustergarage.io"));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["jg".to_string()]));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        let cols: Vec<_> = v.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert_eq!(cols, ["Observable", "Guarded", "Mode", "Age"]);
    }

    #[test]
    fn original_example_deserializes() {
        let yaml = include_str!("../../deploy/examples/original-nginx-janus-guard.yaml");
        let g: JanusGuard = serde_norway::from_str(yaml).unwrap();
        assert_eq!(g.spec.subjects[0].events, vec![EventName::All]);
        assert_eq!(g.spec.subjects[0].deny, vec!["/etc/init.d/nginx".to_string()]);
    }
}

/// The CRD as YAML, with a header saying it is generated.
pub fn render() -> Result<String, serde_norway::Error> {
    use kube::CustomResourceExt;
    let body = serde_norway::to_string(&JanusGuard::crd())?;
    Ok(format!("# Generated by `cargo run -p janus-controller --bin janus-crdgen`; do not edit.\n{body}"))
}

#[cfg(test)]
mod path_pattern {
    /// The schema's regular expression accepts exactly what the engine's
    /// parser accepts, on every string of up to 7 characters over an
    /// alphabet that exercises every case.
    #[test]
    fn pattern_agrees_with_the_engine_parser() {
        let rx = regex::Regex::new(super::PATH_PATTERN).unwrap();
        let alphabet = ['/', '.', '*', 'a'];
        let mut checked = 0;
        for len in 1..=7u32 {
            for n in 0..alphabet.len().pow(len) {
                let mut s = String::new();
                let mut k = n;
                for _ in 0..len {
                    s.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                let engine = janus_engine::pattern::Pattern::parse(&s).is_ok();
                assert_eq!(rx.is_match(&s), engine, "{s:?}");
                checked += 1;
            }
        }
        assert!(checked > 20_000);
    }
}

#[cfg(test)]
mod generated {
    /// deploy/crd.yaml must be exactly what the types generate.
    #[test]
    fn deploy_crd_yaml_is_up_to_date() {
        let want = super::render().unwrap();
        let have = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crd.yaml")).unwrap();
        assert!(
            have == want,
            "deploy/crd.yaml differs from the types; regenerate it with\n  cargo run -p janus-controller --bin janus-crdgen > deploy/crd.yaml"
        );
    }
}
