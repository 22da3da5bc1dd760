//! Conversions between the wire types (`janus.v1`) and the engine's guard
//! spec, with validation that names the offending field.

use std::collections::BTreeMap;

use janus_engine::spec::{EventName, GuardSpec, Mode, SpecError, Subject};
use janus_proto::v1;

/// A request field that cannot be accepted: which, and why.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// Dotted field path, e.g. `spec.subjects[0].events[1]`.
    pub field: String,
    /// Why.
    pub reason: String,
}

impl InvalidField {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidField { field: field.into(), reason: reason.into() }
    }
}

impl From<SpecError> for InvalidField {
    fn from(e: SpecError) -> Self {
        InvalidField { field: e.field, reason: e.reason }
    }
}

/// Wire spec -> engine spec, validated.
pub fn spec_from_wire(spec: Option<&v1::GuardSpec>) -> Result<GuardSpec, InvalidField> {
    let spec = spec.ok_or_else(|| InvalidField::new("spec", "is required"))?;
    let mode = match spec.mode.as_str() {
        "" | "Enforce" => Mode::Enforce,
        "Audit" => Mode::Audit,
        other => return Err(InvalidField::new("spec.mode", format!("must be Enforce or Audit, got {other:?}"))),
    };
    let mut subjects = Vec::with_capacity(spec.subjects.len());
    for (i, s) in spec.subjects.iter().enumerate() {
        let mut events = Vec::with_capacity(s.events.len());
        for (j, e) in s.events.iter().enumerate() {
            events.push(match e.as_str() {
                "all" => EventName::All,
                "open" => EventName::Open,
                "access" => EventName::Access,
                "exec" => EventName::Exec,
                other => {
                    return Err(InvalidField::new(
                        format!("spec.subjects[{i}].events[{j}]"),
                        format!("unknown event {other:?}; expected one of all, open, access, exec"),
                    ));
                }
            });
        }
        subjects.push(Subject {
            allow: s.allow.clone(),
            deny: s.deny.clone(),
            events,
            only_dir: s.only_dir,
            auto_allow_owner: s.auto_allow_owner,
            audit: s.audit,
            tags: s.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>(),
            mountpoint: s.mountpoint,
        });
    }
    let out = GuardSpec {
        selector: None,
        subjects,
        mode,
        log_format: (!spec.log_format.is_empty()).then(|| spec.log_format.clone()),
    };
    out.validate("spec")?;
    Ok(out)
}

/// Engine spec -> wire spec.
pub fn spec_to_wire(spec: &GuardSpec) -> v1::GuardSpec {
    v1::GuardSpec {
        subjects: spec
            .subjects
            .iter()
            .map(|s| v1::Subject {
                allow: s.allow.clone(),
                deny: s.deny.clone(),
                events: s
                    .events
                    .iter()
                    .map(|e| {
                        match e {
                            EventName::All => "all",
                            EventName::Open => "open",
                            EventName::Access => "access",
                            EventName::Exec => "exec",
                        }
                        .to_string()
                    })
                    .collect(),
                only_dir: s.only_dir,
                auto_allow_owner: s.auto_allow_owner,
                audit: s.audit,
                tags: s.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                mountpoint: s.mountpoint,
            })
            .collect(),
        mode: match spec.mode {
            Mode::Enforce => "Enforce",
            Mode::Audit => "Audit",
        }
        .to_string(),
        log_format: spec.log_format.clone().unwrap_or_default(),
    }
}

/// Audit record -> wire event.
pub fn event_to_wire(r: &janus_engine::audit::AuditRecord) -> v1::AuditEvent {
    v1::AuditEvent {
        time: r.time.clone(),
        guard: r.guard.clone(),
        namespace: r.namespace.clone(),
        pod: r.pod.clone(),
        container: r.container.clone(),
        node: r.node.clone(),
        pid: r.pid,
        process: r.process.clone().unwrap_or_default(),
        executable: r.executable.clone().unwrap_or_default(),
        uid: r.uid,
        path: r.path.clone(),
        event: r.event.clone(),
        decision: r.decision.clone(),
        mode: r.mode.clone(),
        rule: r.rule.clone().unwrap_or_default(),
        tags: r.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> v1::GuardSpec {
        v1::GuardSpec {
            subjects: vec![v1::Subject {
                deny: vec!["/etc/shadow".into()],
                events: vec!["open".into(), "exec".into()],
                tags: [("a".to_string(), "b".to_string())].into(),
                ..Default::default()
            }],
            mode: "Audit".into(),
            log_format: String::new(),
        }
    }

    #[test]
    fn round_trip() {
        let spec = spec_from_wire(Some(&wire())).unwrap();
        assert_eq!(spec.mode, Mode::Audit);
        assert_eq!(spec_to_wire(&spec), wire());
    }

    #[test]
    fn errors_name_fields() {
        let mut w = wire();
        w.subjects[0].events.push("write".into());
        assert_eq!(spec_from_wire(Some(&w)).unwrap_err().field, "spec.subjects[0].events[2]");
        let mut w = wire();
        w.subjects[0].deny.push("rel".into());
        assert_eq!(spec_from_wire(Some(&w)).unwrap_err().field, "spec.subjects[0].deny[1]");
        let mut w = wire();
        w.mode = "Block".into();
        assert_eq!(spec_from_wire(Some(&w)).unwrap_err().field, "spec.mode");
        assert_eq!(spec_from_wire(None).unwrap_err().field, "spec");
    }
}
