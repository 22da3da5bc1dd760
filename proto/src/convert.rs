//! The one conversion between the guard model (`janus-api`) and the wire
//! (`janus.v1`), both ways. Reading from the wire validates: a message that
//! converts is a guard the engine can enforce. Errors name the field as the
//! wire spells it (`spec.subjects[0].eventKinds[1]`).
//!
//! Writers fill both the enum fields and the legacy (0.1) strings, so a
//! 0.1 peer understands a 0.2 one; readers take the enum and fall back to
//! the string only when the enum is unset (see janus.proto).

use janus_api::{
    Assignment, Container, ContainerState, EventName, FieldError, GuardRef, GuardSpec, Mode, PodRef, Release, Subject,
};

use crate::v1;

impl From<EventName> for v1::Event {
    fn from(e: EventName) -> Self {
        match e {
            EventName::All => v1::Event::All,
            EventName::Access => v1::Event::Access,
            EventName::Open => v1::Event::Open,
            EventName::Exec => v1::Event::Exec,
        }
    }
}

impl From<Mode> for v1::Mode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Enforce => v1::Mode::Enforce,
            Mode::Audit => v1::Mode::Audit,
        }
    }
}

impl From<ContainerState> for v1::ContainerState {
    fn from(s: ContainerState) -> Self {
        match s {
            ContainerState::Pending => v1::ContainerState::Pending,
            ContainerState::Guarded => v1::ContainerState::Guarded,
            ContainerState::Failed => v1::ContainerState::Failed,
            ContainerState::Gone => v1::ContainerState::Gone,
        }
    }
}

fn event_from_wire(value: i32, field: String) -> Result<EventName, FieldError> {
    match v1::Event::try_from(value) {
        Ok(v1::Event::All) => Ok(EventName::All),
        Ok(v1::Event::Access) => Ok(EventName::Access),
        Ok(v1::Event::Open) => Ok(EventName::Open),
        Ok(v1::Event::Exec) => Ok(EventName::Exec),
        Ok(v1::Event::Unspecified) => Err(FieldError::new(field, "EVENT_UNSPECIFIED is not an event")),
        Err(_) => Err(FieldError::new(field, format!("unknown event value {value}; expected 1 to 4"))),
    }
}

impl From<&Subject> for v1::Subject {
    fn from(s: &Subject) -> Self {
        v1::Subject {
            allow: s.allow.clone(),
            deny: s.deny.clone(),
            events: s.events.iter().map(|e| e.as_str().to_string()).collect(),
            event_kinds: s.events.iter().map(|e| v1::Event::from(*e) as i32).collect(),
            only_dir: s.only_dir,
            auto_allow_owner: s.auto_allow_owner,
            allow_processes: s.allow_processes.clone(),
            audit: s.audit,
            tags: s.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            mountpoint: s.mountpoint,
        }
    }
}

fn subject_from_wire(s: &v1::Subject) -> Result<Subject, FieldError> {
    let events: Vec<EventName> = if !s.event_kinds.is_empty() {
        s.event_kinds
            .iter()
            .enumerate()
            .map(|(j, e)| event_from_wire(*e, format!("eventKinds[{j}]")))
            .collect::<Result<_, _>>()
    } else {
        s.events
            .iter()
            .enumerate()
            .map(|(j, e)| {
                EventName::from_name(e).ok_or_else(|| {
                    FieldError::new(
                        format!("events[{j}]"),
                        format!("unknown event {e:?}; expected one of all, open, access, exec"),
                    )
                })
            })
            .collect::<Result<_, _>>()
    }?;
    Ok(Subject {
        allow: s.allow.clone(),
        deny: s.deny.clone(),
        events,
        only_dir: s.only_dir,
        auto_allow_owner: s.auto_allow_owner,
        allow_processes: s.allow_processes.clone(),
        audit: s.audit,
        tags: s.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        mountpoint: s.mountpoint,
    })
}

impl From<&GuardSpec> for v1::GuardSpec {
    fn from(spec: &GuardSpec) -> Self {
        v1::GuardSpec {
            subjects: spec.subjects.iter().map(v1::Subject::from).collect(),
            mode: spec.mode.name().to_string(),
            mode_kind: v1::Mode::from(spec.mode) as i32,
            log_format: spec.log_format.clone().unwrap_or_default(),
        }
    }
}

/// Wire spec -> model spec, validated; fields relative to the spec.
impl TryFrom<&v1::GuardSpec> for GuardSpec {
    type Error = FieldError;

    fn try_from(spec: &v1::GuardSpec) -> Result<Self, FieldError> {
        let mode = match v1::Mode::try_from(spec.mode_kind) {
            Ok(v1::Mode::Enforce) => Mode::Enforce,
            Ok(v1::Mode::Audit) => Mode::Audit,
            Ok(v1::Mode::Unspecified) if spec.mode.is_empty() => Mode::Enforce,
            Ok(v1::Mode::Unspecified) => Mode::from_name(&spec.mode)
                .ok_or_else(|| FieldError::new("mode", format!("must be Enforce or Audit, got {:?}", spec.mode)))?,
            Err(_) => {
                return Err(FieldError::new(
                    "modeKind",
                    format!("unknown mode value {}; expected 1 (ENFORCE) or 2 (AUDIT)", spec.mode_kind),
                ));
            }
        };
        let subjects = spec
            .subjects
            .iter()
            .enumerate()
            .map(|(i, s)| subject_from_wire(s).map_err(|e| e.within(&format!("subjects[{i}]"))))
            .collect::<Result<_, _>>()?;
        let out = GuardSpec {
            selector: Default::default(),
            subjects,
            mode,
            log_format: (!spec.log_format.is_empty()).then(|| spec.log_format.clone()),
        };
        out.validate()?;
        Ok(out)
    }
}

impl From<&GuardRef> for v1::GuardRef {
    fn from(g: &GuardRef) -> Self {
        v1::GuardRef {
            namespace: g.namespace.clone(),
            name: g.name.clone(),
            uid: g.uid.clone(),
            generation: g.generation,
        }
    }
}

impl From<&v1::GuardRef> for GuardRef {
    fn from(g: &v1::GuardRef) -> Self {
        GuardRef { namespace: g.namespace.clone(), name: g.name.clone(), uid: g.uid.clone(), generation: g.generation }
    }
}

impl From<&PodRef> for v1::PodRef {
    fn from(p: &PodRef) -> Self {
        v1::PodRef { namespace: p.namespace.clone(), name: p.name.clone(), uid: p.uid.clone(), node: p.node.clone() }
    }
}

impl From<&v1::PodRef> for PodRef {
    fn from(p: &v1::PodRef) -> Self {
        PodRef { namespace: p.namespace.clone(), name: p.name.clone(), uid: p.uid.clone(), node: p.node.clone() }
    }
}

impl From<&Container> for v1::Container {
    fn from(c: &Container) -> Self {
        v1::Container { name: c.name.clone(), runtime_id: c.runtime_id.clone() }
    }
}

impl From<&Assignment> for v1::CreateGuardRequest {
    fn from(a: &Assignment) -> Self {
        v1::CreateGuardRequest {
            guard: Some((&a.guard).into()),
            pod: Some((&a.pod).into()),
            containers: a.containers.iter().map(v1::Container::from).collect(),
            spec: Some((&a.spec).into()),
        }
    }
}

/// A CreateGuard request -> a validated assignment (field names as on the
/// wire: `containers[0].runtimeId`, `spec.subjects[1].deny[0]`).
impl TryFrom<&v1::CreateGuardRequest> for Assignment {
    type Error = FieldError;

    fn try_from(req: &v1::CreateGuardRequest) -> Result<Self, FieldError> {
        let guard = req.guard.as_ref().ok_or_else(|| FieldError::new("guard", "is required"))?;
        let pod = req.pod.as_ref().ok_or_else(|| FieldError::new("pod", "is required"))?;
        let spec = req.spec.as_ref().ok_or_else(|| FieldError::new("spec", "is required"))?;
        let a = Assignment {
            guard: guard.into(),
            pod: pod.into(),
            containers: req
                .containers
                .iter()
                .map(|c| Container { name: c.name.clone(), runtime_id: c.runtime_id.clone() })
                .collect(),
            spec: GuardSpec::try_from(spec).map_err(|e| e.within("spec"))?,
        };
        a.validate()?;
        Ok(a)
    }
}

impl From<&Release> for v1::DestroyGuardRequest {
    fn from(r: &Release) -> Self {
        v1::DestroyGuardRequest {
            guard: Some((&r.guard).into()),
            pod: Some(v1::PodRef { uid: r.pod_uid.clone(), ..Default::default() }),
        }
    }
}

/// A DestroyGuard request -> a validated release.
impl TryFrom<&v1::DestroyGuardRequest> for Release {
    type Error = FieldError;

    fn try_from(req: &v1::DestroyGuardRequest) -> Result<Self, FieldError> {
        let guard = req.guard.as_ref().ok_or_else(|| FieldError::new("guard", "is required"))?;
        let pod = req.pod.as_ref().ok_or_else(|| FieldError::new("pod", "is required"))?;
        let r = Release { guard: guard.into(), pod_uid: pod.uid.clone() };
        r.validate()?;
        Ok(r)
    }
}

/// The state an agent reports for a container: the enum, or the legacy
/// string from a 0.1 agent.
pub fn container_state(c: &v1::ContainerStatus) -> Result<ContainerState, FieldError> {
    match v1::ContainerState::try_from(c.state_kind) {
        Ok(v1::ContainerState::Pending) => Ok(ContainerState::Pending),
        Ok(v1::ContainerState::Guarded) => Ok(ContainerState::Guarded),
        Ok(v1::ContainerState::Failed) => Ok(ContainerState::Failed),
        Ok(v1::ContainerState::Gone) => Ok(ContainerState::Gone),
        Ok(v1::ContainerState::Unspecified) => ContainerState::from_name(&c.state).ok_or_else(|| {
            FieldError::new(
                "state",
                format!("unknown container state {:?}; expected Pending, Guarded, Failed or Gone", c.state),
            )
        }),
        Err(_) => Err(FieldError::new("stateKind", format!("unknown container state value {}", c.state_kind))),
    }
}

/// Sets both the enum and the legacy string of a container status.
pub fn set_container_state(c: &mut v1::ContainerStatus, state: ContainerState) {
    c.state_kind = v1::ContainerState::from(state) as i32;
    c.state = state.as_str().to_string();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> GuardSpec {
        GuardSpec {
            subjects: vec![Subject {
                deny: vec!["/etc/shadow".into()],
                events: vec![EventName::Open, EventName::Exec],
                tags: [("a".to_string(), "b".to_string())].into(),
                auto_allow_owner: true,
                allow_processes: vec!["/usr/sbin/nginx".into()],
                ..Default::default()
            }],
            mode: Mode::Audit,
            ..Default::default()
        }
    }

    #[test]
    fn round_trip() {
        let wire = v1::GuardSpec::from(&model());
        assert_eq!(wire.mode, "Audit");
        assert_eq!(wire.mode_kind, v1::Mode::Audit as i32);
        assert_eq!(wire.subjects[0].events, ["open", "exec"]);
        assert_eq!(GuardSpec::try_from(&wire).unwrap(), model());
    }

    /// What a 0.1 controller sends: strings only.
    #[test]
    fn legacy_strings_are_read() {
        let mut wire = v1::GuardSpec::from(&model());
        wire.mode_kind = 0;
        wire.subjects[0].event_kinds.clear();
        assert_eq!(GuardSpec::try_from(&wire).unwrap(), model());
        wire.mode.clear();
        assert_eq!(GuardSpec::try_from(&wire).unwrap().mode, Mode::Enforce);
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = |f: fn(&mut v1::GuardSpec)| {
            let mut w = v1::GuardSpec::from(&model());
            f(&mut w);
            GuardSpec::try_from(&w).unwrap_err().field
        };
        assert_eq!(err(|w| w.subjects[0].event_kinds.push(9)), "subjects[0].eventKinds[2]");
        assert_eq!(err(|w| w.subjects[0].event_kinds.push(0)), "subjects[0].eventKinds[2]");
        assert_eq!(err(|w| w.mode_kind = 7), "modeKind");
        assert_eq!(
            err(|w| {
                w.mode_kind = 0;
                w.mode = "Block".into()
            }),
            "mode"
        );
        assert_eq!(
            err(|w| {
                w.subjects[0].event_kinds.clear();
                w.subjects[0].events.push("write".into())
            }),
            "subjects[0].events[2]"
        );
        assert_eq!(err(|w| w.subjects[0].deny.push("rel".into())), "subjects[0].deny[1]");
    }

    #[test]
    fn requests_validate() {
        let a = Assignment {
            guard: GuardRef { namespace: "ns".into(), name: "g".into(), uid: "u".into(), generation: 2 },
            pod: PodRef { namespace: "ns".into(), name: "p".into(), uid: "pu".into(), node: "n".into() },
            containers: vec![Container { name: "c".into(), runtime_id: "containerd://0123456789abcdef".into() }],
            spec: model(),
        };
        let req = v1::CreateGuardRequest::from(&a);
        assert_eq!(Assignment::try_from(&req).unwrap(), a);
        let mut bad = req.clone();
        bad.spec.as_mut().unwrap().subjects[0].event_kinds[0] = 42;
        assert_eq!(Assignment::try_from(&bad).unwrap_err().field, "spec.subjects[0].eventKinds[0]");
        let mut bad = req.clone();
        bad.containers[0].runtime_id = "containerd://nothex!".into();
        assert_eq!(Assignment::try_from(&bad).unwrap_err().field, "containers[0].runtimeId");
        let mut bad = req;
        bad.spec = None;
        assert_eq!(Assignment::try_from(&bad).unwrap_err().field, "spec");
    }

    #[test]
    fn container_states() {
        for s in ContainerState::ALL {
            let mut c = v1::ContainerStatus::default();
            set_container_state(&mut c, s);
            assert_eq!(container_state(&c).unwrap(), s);
            c.state_kind = 0; // a 0.1 agent
            assert_eq!(container_state(&c).unwrap(), s);
        }
        let c = v1::ContainerStatus { state_kind: 9, ..Default::default() };
        assert_eq!(container_state(&c).unwrap_err().field, "stateKind");
        let c = v1::ContainerStatus { state: "Sleeping".into(), ..Default::default() };
        assert_eq!(container_state(&c).unwrap_err().field, "state");
    }
}
