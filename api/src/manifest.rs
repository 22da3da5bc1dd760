//! A whole `JanusGuard` YAML document, as `janusd standalone`, `janusctl
//! explain` and the benchmarks read it from a file.

use serde::{Deserialize, Serialize};

use crate::{API_VERSION, FieldError, GuardSpec, KIND};

/// A `JanusGuard` manifest as found in a YAML file.
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

impl GuardManifest {
    /// Parses every YAML document in `text` as a `JanusGuard` and validates it.
    /// Errors name the document (when there are several) and the field.
    pub fn parse_all(text: &str) -> Result<Vec<GuardManifest>, FieldError> {
        let mut out = Vec::new();
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let value =
                serde_norway::Value::deserialize(doc).map_err(|e| FieldError::new(format!("document {}", i + 1), e))?;
            if value.is_null() {
                continue; // empty document, e.g. a trailing `---`
            }
            let prefix = |field: &str| {
                if i == 0 { field.to_string() } else { format!("document {}: {field}", i + 1) }
            };
            let manifest: GuardManifest = serde_path_to_error::deserialize(value).map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." { "(document)".to_string() } else { path };
                FieldError::new(prefix(&field), e.into_inner())
            })?;
            manifest.validate().map_err(|e| FieldError { field: prefix(&e.field), reason: e.reason })?;
            out.push(manifest);
        }
        if out.is_empty() {
            return Err(FieldError::new("(file)", "no JanusGuard document found"));
        }
        Ok(out)
    }

    /// Checks everything serde cannot: kind, names, and the spec.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.api_version != API_VERSION {
            return Err(FieldError::new("apiVersion", format!("must be {API_VERSION:?}, got {:?}", self.api_version)));
        }
        if self.kind != KIND {
            return Err(FieldError::new("kind", format!("must be {KIND:?}, got {:?}", self.kind)));
        }
        if self.metadata.name.is_empty() {
            return Err(FieldError::new("metadata.name", "is required"));
        }
        self.spec.validate().map_err(|e| e.within("spec"))
    }

    /// `namespace/name`, the guard's identity in records and metrics.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.metadata.namespace.as_deref().unwrap_or("default"), self.metadata.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventName, Mode};

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
        assert_eq!(guards[0].spec.subjects[0].events, [EventName::All]);
        assert_eq!(guards[0].spec.selector.match_labels["run"], "nginx");
    }

    #[test]
    fn the_shipped_original_example_parses() {
        let yaml = include_str!("../../deploy/examples/original-nginx-janus-guard.yaml");
        let g = &GuardManifest::parse_all(yaml).unwrap()[0];
        assert_eq!(g.spec.subjects[0].deny, ["/etc/init.d/nginx"]);
    }

    fn err_of(yaml: &str) -> FieldError {
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
        let e = err_of(
            "apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata: {name: x}\nspec: {subjects: [{events: [open]}]}\n",
        );
        assert_eq!(e.field, "spec.subjects[0]");
    }
}
