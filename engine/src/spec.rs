//! The `JanusGuard` format: serde types for the CRD's YAML and their validation.
//!
//! The same types are read by `janusd standalone` (from a manifest file) and,
//! later, sent by the controller. Validation names the offending field
//! (`spec.subjects[0].deny[2]`) and the reason, so a bad guard never reaches
//! the kernel. See `docs/guard-format.md` for the semantics.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::pattern::{Pattern, PatternError};

/// API group and version of the original Janus CRD, kept for compatibility.
pub const API_VERSION: &str = "januscontroller.clustergarage.io/v1alpha1";
/// Kind of the custom resource.
pub const KIND: &str = "JanusGuard";
/// The original project's default `logFormat`.
pub const DEFAULT_LOG_FORMAT: &str = "<{response}> {event} {ftype} '{path}' ({pod}:{node}) {tags}";

/// A whole `JanusGuard` manifest as found in a YAML file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardManifest {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be [`KIND`].
    pub kind: String,
    /// Name and namespace; other metadata is accepted and ignored.
    pub metadata: Metadata,
    /// What to guard.
    pub spec: GuardSpec,
    /// Written by the controller; ignored on input.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_norway::Value>,
}

/// The part of Kubernetes object metadata Janus uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Guard name (required).
    #[serde(default)]
    pub name: String,
    /// Namespace; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `spec` of a `JanusGuard`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardSpec {
    /// Label selector for pods. Kept as raw YAML: the engine does not select
    /// pods (the controller does; `janusd standalone` ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<serde_norway::Value>,
    /// Rule groups.
    #[serde(default)]
    pub subjects: Vec<Subject>,
    /// `Enforce` (default) denies; `Audit` only logs what it would deny.
    #[serde(default)]
    pub mode: Mode,
    /// Text template for audit lines; JSON lines when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
}

/// One group of rules sharing events and options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    /// Absolute paths or patterns to allow.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Absolute paths or patterns to deny.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Which accesses the rules apply to; all of them when empty.
    #[serde(default)]
    pub events: Vec<EventName>,
    /// The rules apply to directories only (listing/opening a directory),
    /// not to the files inside them.
    #[serde(default)]
    pub only_dir: bool,
    /// The container's main process and its descendants are always allowed.
    #[serde(default)]
    pub auto_allow_owner: bool,
    /// Also log allowed events.
    #[serde(default)]
    pub audit: bool,
    /// Copied into every audit record of this subject.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Guard the whole mount the paths live on (complete, but every open on
    /// that mount is decided in user space).
    #[serde(default)]
    pub mountpoint: bool,
}

/// Event names accepted in `events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventName {
    /// open, access and exec.
    All,
    /// Reading file contents (FAN_ACCESS_PERM).
    Access,
    /// open(2) (FAN_OPEN_PERM).
    Open,
    /// Executing a file (FAN_OPEN_EXEC_PERM).
    Exec,
}

/// Enforcement mode of a guard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Deny what the rules deny.
    #[default]
    Enforce,
    /// Allow everything, log what would have been denied.
    Audit,
}

impl Mode {
    /// Lowercase name used in audit records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// A guard input that cannot be enforced: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// Dotted path to the field, e.g. `spec.subjects[0].deny[1]`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl SpecError {
    fn new(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        SpecError { field: field.into(), reason: reason.to_string() }
    }
}

/// Longest path or pattern accepted (PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;

impl GuardManifest {
    /// Parses every YAML document in `text` as a `JanusGuard` and validates it.
    /// Errors name the document (when there are several) and the field.
    pub fn parse_all(text: &str) -> Result<Vec<GuardManifest>, SpecError> {
        let mut out = Vec::new();
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let value =
                serde_norway::Value::deserialize(doc).map_err(|e| SpecError::new(format!("document {}", i + 1), e))?;
            if value.is_null() {
                continue; // empty document, e.g. a trailing `---`
            }
            let prefix = |field: &str| {
                if i == 0 { field.to_string() } else { format!("document {}: {field}", i + 1) }
            };
            let manifest: GuardManifest = serde_path_to_error::deserialize(value).map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." { "(document)".to_string() } else { path };
                SpecError::new(prefix(&field), e.into_inner())
            })?;
            manifest.validate().map_err(|e| SpecError { field: prefix(&e.field), reason: e.reason })?;
            out.push(manifest);
        }
        if out.is_empty() {
            return Err(SpecError::new("(file)", "no JanusGuard document found"));
        }
        Ok(out)
    }

    /// Checks everything serde cannot: kind, names, paths, patterns.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.api_version != API_VERSION {
            return Err(SpecError::new("apiVersion", format!("must be {API_VERSION:?}, got {:?}", self.api_version)));
        }
        if self.kind != KIND {
            return Err(SpecError::new("kind", format!("must be {KIND:?}, got {:?}", self.kind)));
        }
        if self.metadata.name.is_empty() {
            return Err(SpecError::new("metadata.name", "is required"));
        }
        self.spec.validate("spec")
    }

    /// `namespace/name`, the guard's identity in records and metrics.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.metadata.namespace.as_deref().unwrap_or("default"), self.metadata.name)
    }
}

impl GuardSpec {
    /// Validates the spec; `at` is the field path of the spec itself.
    pub fn validate(&self, at: &str) -> Result<(), SpecError> {
        if self.subjects.is_empty() {
            return Err(SpecError::new(format!("{at}.subjects"), "at least one subject is required"));
        }
        for (i, subject) in self.subjects.iter().enumerate() {
            let at = format!("{at}.subjects[{i}]");
            if subject.allow.is_empty() && subject.deny.is_empty() {
                return Err(SpecError::new(at, "needs at least one path in allow or deny"));
            }
            for (list, paths) in [("allow", &subject.allow), ("deny", &subject.deny)] {
                for (j, path) in paths.iter().enumerate() {
                    validate_path(path).map_err(|reason| SpecError::new(format!("{at}.{list}[{j}]"), reason))?;
                }
            }
            for (key, _) in subject.tags.iter() {
                if key.is_empty() {
                    return Err(SpecError::new(format!("{at}.tags"), "tag names must not be empty"));
                }
            }
        }
        if let Some(format) = &self.log_format {
            crate::audit::validate_log_format(format)
                .map_err(|reason| SpecError::new(format!("{at}.logFormat"), reason))?;
        }
        Ok(())
    }
}

/// Why a rule path is rejected, or `Ok` if it can be compiled.
fn validate_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH_LEN {
        return Err(format!("longer than {MAX_PATH_LEN} bytes"));
    }
    match Pattern::parse(path) {
        Ok(_) => Ok(()),
        Err(PatternError(reason)) => Err(format!("{path:?}: {reason}")),
    }
}

impl Subject {
    /// The event kinds this subject's rules apply to.
    pub fn kinds(&self) -> crate::KindSet {
        if self.events.is_empty() {
            return crate::KindSet::ALL;
        }
        self.events.iter().fold(crate::KindSet::EMPTY, |set, e| {
            set.union(match e {
                EventName::All => crate::KindSet::ALL,
                EventName::Access => crate::KindSet::ACCESS,
                EventName::Open => crate::KindSet::OPEN,
                EventName::Exec => crate::KindSet::EXEC,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: januscontroller.clustergarage.io/v1alpha1
kind: JanusGuard
metadata:
  name: nginx-janus-guard
spec:
  selector:
    matchLabels:
      run: nginx
  subjects:
  - allow:
    - /etc/nginx
    deny:
    - /etc/init.d/nginx
    events:
    - all
"#;

    #[test]
    fn original_example_parses() {
        let guards = GuardManifest::parse_all(GOOD).unwrap();
        assert_eq!(guards.len(), 1);
        assert_eq!(guards[0].metadata.name, "nginx-janus-guard");
        assert_eq!(guards[0].spec.mode, Mode::Enforce);
        assert_eq!(guards[0].spec.subjects[0].kinds(), crate::KindSet::ALL);
    }

    fn err_of(yaml: &str) -> SpecError {
        GuardManifest::parse_all(yaml).unwrap_err()
    }

    #[test]
    fn unknown_field_is_named() {
        let e = err_of(&GOOD.replace("    events:", "    evnts:"));
        assert_eq!(e.field, "spec.subjects[0].evnts");
        assert!(e.reason.contains("unknown field `evnts`"), "{e}");
    }

    #[test]
    fn unknown_event_is_an_error() {
        let e = err_of(&GOOD.replace("    - all", "    - write"));
        assert_eq!(e.field, "spec.subjects[0].events[0]");
        assert!(e.reason.contains("unknown variant `write`"), "{e}");
    }

    #[test]
    fn relative_path_is_named() {
        let e = err_of(&GOOD.replace("- /etc/init.d/nginx", "- etc/init.d/nginx"));
        assert_eq!(e.field, "spec.subjects[0].deny[0]");
        assert!(e.reason.contains("absolute"), "{e}");
    }

    #[test]
    fn bad_pattern_is_named() {
        let e = err_of(&GOOD.replace("- /etc/nginx", "- /etc/**x"));
        assert_eq!(e.field, "spec.subjects[0].allow[0]");
        assert!(e.reason.contains("**"), "{e}");
    }

    #[test]
    fn second_document_is_numbered() {
        let two = format!("{GOOD}---{}", GOOD.replace("kind: JanusGuard", "kind: Pod"));
        let e = err_of(&two);
        assert_eq!(e.field, "document 2: kind");
    }

    #[test]
    fn mode_and_log_format() {
        let y = GOOD.replace("  subjects:", "  mode: Audit\n  logFormat: \"{response} {path}\"\n  subjects:");
        let g = &GuardManifest::parse_all(&y).unwrap()[0];
        assert_eq!(g.spec.mode, Mode::Audit);
        let bad = GOOD.replace("  subjects:", "  mode: Block\n  subjects:");
        assert_eq!(err_of(&bad).field, "spec.mode");
        let bad = GOOD.replace("  subjects:", "  logFormat: \"{nope}\"\n  subjects:");
        assert_eq!(err_of(&bad).field, "spec.logFormat");
    }

    #[test]
    fn empty_subjects_rejected() {
        let e = err_of(
            "apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata: {name: x}\nspec: {subjects: []}\n",
        );
        assert_eq!(e.field, "spec.subjects");
    }
}
