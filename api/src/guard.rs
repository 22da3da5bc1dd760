//! The guard spec: which pods (`selector`) and which paths, for which
//! accesses (`subjects`), enforced or only logged (`mode`), logged how
//! (`logFormat`). See `docs/guard-format.md` for the semantics.
//!
//! These types are the `JanusGuard` CRD's spec (with feature `kube` they
//! derive the schema, `deploy/crd.yaml`), what `janusd standalone` reads
//! from YAML, what the agent keeps in its state file, and what the engine
//! compiles. [`GuardSpec::validate`] checks everything the schema checks
//! (and what it cannot), so a guard that reaches an agent by another road
//! (an old controller, `grpcurl`, a state file) is held to the same rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::FieldError;
use crate::pattern::{Pattern, PatternError};

/// Most subjects in one guard.
pub const MAX_SUBJECTS: usize = 64;
/// Most paths in one allow or deny list.
pub const MAX_PATHS: usize = 256;
/// Longest path or pattern accepted (PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;
/// Most tags on one subject.
pub const MAX_TAGS: usize = 32;
/// Most executables in one subject's `allowProcesses`.
pub const MAX_PROCESSES: usize = 32;
/// Longest `logFormat`.
pub const MAX_LOG_FORMAT_LEN: usize = 1024;

/// The original project's default `logFormat`.
pub const DEFAULT_LOG_FORMAT: &str = "<{response}> {event} {ftype} '{path}' ({pod}:{node}) {tags}";

/// Which pods to guard and what to allow or deny inside them (the `spec`
/// of a `JanusGuard`).
// The repeated `printcolumn(name = .., type_ = ..)` arguments are distinct
// columns, not duplicates.
#[cfg_attr(feature = "kube", allow(clippy::duplicated_attributes))]
#[cfg_attr(feature = "kube", derive(kube::CustomResource, kube::KubeSchema))]
#[cfg_attr(
    feature = "kube",
    kube(
        group = "januscontroller.clustergarage.io",
        version = "v1alpha1",
        kind = "JanusGuard",
        plural = "janusguards",
        shortname = "jg",
        namespaced,
        status = "crate::crd::JanusGuardStatus",
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
    )
)]
#[cfg_attr(feature = "kube", schemars(transform = crd_requires_selector_and_subjects))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardSpec {
    /// Pods to guard, by label. An empty selector matches nothing.
    /// (`janusd standalone` guards host paths and ignores it.)
    #[serde(default)]
    #[cfg_attr(feature = "kube", schemars(with = "k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector"))]
    pub selector: LabelSelector,
    /// Rule groups; see docs/guard-format.md.
    #[serde(default)]
    #[cfg_attr(feature = "kube", schemars(length(min = 1, max = 64)))]
    pub subjects: Vec<Subject>,
    /// Enforce (default) denies; Audit only logs what it would deny.
    #[serde(default, skip_serializing_if = "Mode::is_default")]
    pub mode: Mode,
    /// Text template for audit lines instead of JSON, with fields {pod} {node}
    /// {response} {event} {path} {ftype} {tags} (and more, see the docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "kube", schemars(length(max = 1024)))]
    pub log_format: Option<String>,
}

/// One group of rules sharing events and options.
#[cfg_attr(feature = "kube", derive(kube::KubeSchema))]
#[cfg_attr(
    feature = "kube",
    x_kube(
        validation = Rule::new("(has(self.allow) && size(self.allow) > 0) || (has(self.deny) && size(self.deny) > 0)")
            .message("a subject needs at least one path in allow or deny")
    )
)]
#[cfg_attr(
    feature = "kube",
    x_kube(
        validation = Rule::new("!has(self.autoAllowOwner) || !self.autoAllowOwner || (has(self.deny) && size(self.deny) > 0)")
            .message("autoAllowOwner only changes deny rules; this subject has none")
    )
)]
#[cfg_attr(
    feature = "kube",
    x_kube(
        validation = Rule::new("!has(self.allowProcesses) || size(self.allowProcesses) == 0 || (has(self.deny) && size(self.deny) > 0)")
            .message("allowProcesses only changes deny rules; this subject has none")
    )
)]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    /// Absolute paths or patterns to allow (`*` within a component, `**` across).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "kube",
        schemars(length(max = 256), inner(length(min = 1, max = 4096), regex(pattern = PATH_PATTERN)))
    )]
    pub allow: Vec<String>,
    /// Absolute paths or patterns to deny.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "kube",
        schemars(length(max = 256), inner(length(min = 1, max = 4096), regex(pattern = PATH_PATTERN)))
    )]
    pub deny: Vec<String>,
    /// Accesses the rules apply to; all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "kube", schemars(length(max = 4)))]
    pub events: Vec<EventName>,
    /// The rules apply to directories only (listing/opening a directory),
    /// not to the files inside them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub only_dir: bool,
    /// The container's main process and its descendants are always allowed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_allow_owner: bool,
    /// Executables (absolute paths inside the container, no patterns) whose
    /// processes the deny rules do not apply to. A process counts by the
    /// file it runs (its inode, found at apply time), not by its name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "kube",
        schemars(length(max = 32), inner(length(min = 1, max = 4096), regex(pattern = EXECUTABLE_PATTERN)))
    )]
    pub allow_processes: Vec<String>,
    /// Also log allowed events.
    #[serde(default, skip_serializing_if = "is_false")]
    pub audit: bool,
    /// Copied into every audit record of this subject.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "kube", schemars(length(max = 32)))]
    pub tags: BTreeMap<String, String>,
    /// Guard the whole mount the paths live on (complete, but every open on
    /// that mount is decided in user space).
    #[serde(default, skip_serializing_if = "is_false")]
    pub mountpoint: bool,
}

/// In a file for `janusd standalone` the selector may be left out (and a
/// missing `subjects` is reported by validation, naming the field); in the
/// CRD both are required, as in the original Janus, and have no default.
#[cfg(feature = "kube")]
fn crd_requires_selector_and_subjects(schema: &mut schemars::Schema) {
    if let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        for field in ["selector", "subjects"] {
            if let Some(p) = props.get_mut(field).and_then(|p| p.as_object_mut()) {
                p.remove("default");
            }
        }
    }
    schema.insert("required".into(), serde_json::json!(["selector", "subjects"]));
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Event names accepted in `events`.
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

impl EventName {
    /// Every name, in the order the docs list them.
    pub const ALL: [EventName; 4] = [EventName::All, EventName::Open, EventName::Access, EventName::Exec];

    /// The name as written in a guard (`open`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::All => "all",
            EventName::Access => "access",
            EventName::Open => "open",
            EventName::Exec => "exec",
        }
    }

    /// The event named `s`, as written in a guard.
    pub fn from_name(s: &str) -> Option<EventName> {
        EventName::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// Enforcement mode of a guard.
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
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

    /// The name as written in a guard (`Enforce`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "Enforce",
            Mode::Audit => "Audit",
        }
    }

    /// The mode named `s` as written in a guard.
    pub fn from_name(s: &str) -> Option<Mode> {
        [Mode::Enforce, Mode::Audit].into_iter().find(|m| m.name() == s)
    }

    fn is_default(&self) -> bool {
        *self == Mode::default()
    }
}

/// A Kubernetes label selector (`matchLabels`, `matchExpressions`), the
/// same JSON as `metav1.LabelSelector`. Its own type so the model needs no
/// Kubernetes crates; with feature `kube` it converts to k8s-openapi's, and
/// the CRD schema is k8s-openapi's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// No labels and no expressions: Janus selects nothing with it (the
    /// original Janus's rule: a guard must say what it selects).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// What an `allowProcesses` entry looks like: an absolute path without
/// patterns, `.` or `..` components (the API server's check; [`Subject::validate`] says
/// why, and a test checks that both accept the same strings).
pub const EXECUTABLE_PATTERN: &str = r"^(?:/+(?:[^/*.]|\.[^/*.]|\.\.[^/*])[^/*]*)+$";

/// The path syntax [`Pattern::parse`] accepts, as a regular expression the
/// API server checks at no CEL cost: absolute; no `.` or `..` components;
/// `**` only as a whole component. Components: `*`, `**`, or names where
/// every `*` is followed by another character (a single trailing `*`
/// allowed), excluding `.` and `..`. (A CEL rule over every path of every
/// subject exceeds the API server's cost budget.) A test checks that both
/// accept exactly the same strings.
pub const PATH_PATTERN: &str = concat!(
    r"^/+(?:(?:\*\*?|(?:[^/.*]|\*[^/*])(?:[^/*]|\*[^/*])*\*?|\.(?:[^/.*]|\*[^/*])(?:[^/*]|\*[^/*])*\*?|\.\*|\.\.(?:(?:[^/*]|\*[^/*])+\*?|\*))/+)*",
    r"(?:\*\*?|(?:[^/.*]|\*[^/*])(?:[^/*]|\*[^/*])*\*?|\.(?:[^/.*]|\*[^/*])(?:[^/*]|\*[^/*])*\*?|\.\*|\.\.(?:(?:[^/*]|\*[^/*])+\*?|\*))?$"
);

impl GuardSpec {
    /// Checks what serde cannot: paths, patterns, limits, combinations, the
    /// log format. Fields are named relative to the spec
    /// (`subjects[0].deny[1]`); callers add their prefix with
    /// [`FieldError::within`].
    pub fn validate(&self) -> Result<(), FieldError> {
        self.check(true)
    }

    /// [`validate`](Self::validate) without the size limits (subjects,
    /// paths, tags per object). The limits are what one API object may
    /// carry; the engine compiles specs of any size (the decision-scale
    /// benchmark compiles 100,000 rules), so it checks with this. Every
    /// input boundary (CRD, gRPC, files, state) uses `validate`.
    pub fn validate_without_limits(&self) -> Result<(), FieldError> {
        self.check(false)
    }

    fn check(&self, limits: bool) -> Result<(), FieldError> {
        if self.subjects.is_empty() {
            return Err(FieldError::new("subjects", "at least one subject is required"));
        }
        if limits && self.subjects.len() > MAX_SUBJECTS {
            return Err(FieldError::new(
                "subjects",
                format!("{} subjects; at most {MAX_SUBJECTS} are allowed", self.subjects.len()),
            ));
        }
        for (i, subject) in self.subjects.iter().enumerate() {
            subject.check(limits).map_err(|e| e.within(&format!("subjects[{i}]")))?;
        }
        if let Some(format) = &self.log_format {
            if format.len() > MAX_LOG_FORMAT_LEN {
                return Err(FieldError::new("logFormat", format!("longer than {MAX_LOG_FORMAT_LEN} bytes")));
            }
            crate::log_format::validate(format).map_err(|reason| FieldError::new("logFormat", reason))?;
        }
        for (i, e) in self.selector.match_expressions.iter().enumerate() {
            let at = format!("selector.matchExpressions[{i}]");
            match e.operator.as_str() {
                "In" | "NotIn" if e.values.is_empty() => {
                    return Err(FieldError::new(format!("{at}.values"), format!("{} needs values", e.operator)));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(FieldError::new(
                        format!("{at}.operator"),
                        format!("unknown operator {other:?}; expected In, NotIn, Exists or DoesNotExist"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Subject {
    /// Validates one subject; fields relative to it (`deny[1]`).
    pub fn validate(&self) -> Result<(), FieldError> {
        self.check(true)
    }

    fn check(&self, limits: bool) -> Result<(), FieldError> {
        if self.allow.is_empty() && self.deny.is_empty() {
            return Err(FieldError::new("", "needs at least one path in allow or deny"));
        }
        if self.auto_allow_owner && self.deny.is_empty() {
            return Err(FieldError::new("autoAllowOwner", "only changes deny rules; this subject has none"));
        }
        for (list, paths) in [("allow", &self.allow), ("deny", &self.deny)] {
            if limits && paths.len() > MAX_PATHS {
                return Err(FieldError::new(list, format!("{} paths; at most {MAX_PATHS} are allowed", paths.len())));
            }
            for (j, path) in paths.iter().enumerate() {
                validate_path(path).map_err(|reason| FieldError::new(format!("{list}[{j}]"), reason))?;
            }
        }
        if !self.allow_processes.is_empty() && self.deny.is_empty() {
            return Err(FieldError::new("allowProcesses", "only changes deny rules; this subject has none"));
        }
        if limits && self.allow_processes.len() > MAX_PROCESSES {
            return Err(FieldError::new(
                "allowProcesses",
                format!("{} executables; at most {MAX_PROCESSES} are allowed", self.allow_processes.len()),
            ));
        }
        for (j, exe) in self.allow_processes.iter().enumerate() {
            validate_executable(exe).map_err(|reason| FieldError::new(format!("allowProcesses[{j}]"), reason))?;
        }
        if limits && self.events.len() > EventName::ALL.len() {
            return Err(FieldError::new("events", format!("{} events; at most 4 are allowed", self.events.len())));
        }
        if limits && self.tags.len() > MAX_TAGS {
            return Err(FieldError::new("tags", format!("{} tags; at most {MAX_TAGS} are allowed", self.tags.len())));
        }
        if self.tags.keys().any(|k| k.is_empty()) {
            return Err(FieldError::new("tags", "tag names must not be empty"));
        }
        Ok(())
    }
}

/// What every path in a guard must be: at most PATH_MAX bytes, no NUL.
fn check_length_and_nul(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH_LEN {
        return Err(format!("longer than {MAX_PATH_LEN} bytes"));
    }
    if path.contains('\0') {
        return Err(format!("{path:?}: contains a NUL byte"));
    }
    Ok(())
}

/// Why a rule path is rejected, or `Ok` if it can be compiled.
fn validate_path(path: &str) -> Result<(), String> {
    check_length_and_nul(path)?;
    match Pattern::parse(path) {
        Ok(_) => Ok(()),
        Err(PatternError(reason)) => Err(format!("{path:?}: {reason}")),
    }
}

/// Why an `allowProcesses` entry is rejected: it must name one file.
fn validate_executable(path: &str) -> Result<(), String> {
    check_length_and_nul(path)?;
    if !path.starts_with('/') {
        return Err(format!("{path:?}: must be an absolute path"));
    }
    if path.contains('*') {
        return Err(format!("{path:?}: patterns are not allowed here; name the executable's path"));
    }
    if path.ends_with('/') {
        return Err(format!("{path:?}: names a directory; name the executable's file"));
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return Err(format!("{path:?}: must not contain . or .. components"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(deny: &[&str]) -> Subject {
        Subject { deny: deny.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    fn spec(subjects: Vec<Subject>) -> GuardSpec {
        GuardSpec { subjects, ..Default::default() }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(spec(vec![]).validate().unwrap_err().field, "subjects");
        assert_eq!(spec(vec![subject(&["/a", "rel"])]).validate().unwrap_err().field, "subjects[0].deny[1]");
        let mut s = subject(&[]);
        s.allow = vec!["/x".into()];
        s.auto_allow_owner = true;
        assert_eq!(spec(vec![subject(&["/a"]), s]).validate().unwrap_err().field, "subjects[1].autoAllowOwner");
        let mut s = subject(&["/a"]);
        s.tags.insert(String::new(), "v".into());
        assert_eq!(spec(vec![s]).validate().unwrap_err().field, "subjects[0].tags");
        let mut g = spec(vec![subject(&["/a"])]);
        g.log_format = Some("{nope}".into());
        assert_eq!(g.validate().unwrap_err().field, "logFormat");
        let mut g = spec(vec![subject(&["/a"])]);
        g.selector.match_expressions.push(LabelSelectorRequirement {
            key: "k".into(),
            operator: "Near".into(),
            values: vec![],
        });
        assert_eq!(g.validate().unwrap_err().field, "selector.matchExpressions[0].operator");
        assert_eq!(spec(vec![subject(&["/a\0b"])]).validate().unwrap_err().field, "subjects[0].deny[0]");
    }

    #[test]
    fn limits_match_the_schema() {
        assert!(spec(vec![subject(&["/a"]); MAX_SUBJECTS]).validate().is_ok());
        assert_eq!(spec(vec![subject(&["/a"]); MAX_SUBJECTS + 1]).validate().unwrap_err().field, "subjects");
        let many: Vec<String> = (0..=MAX_PATHS).map(|i| format!("/p{i}")).collect();
        let s = Subject { deny: many, ..Default::default() };
        assert_eq!(spec(vec![s]).validate().unwrap_err().field, "subjects[0].deny");
        let big = GuardSpec {
            subjects: vec![Subject { deny: (0..100_000).map(|i| format!("/p{i}")).collect(), ..Default::default() }],
            ..Default::default()
        };
        assert_eq!(big.validate().unwrap_err().field, "subjects[0].deny");
        big.validate_without_limits().unwrap();
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert!(spec(vec![subject(&[&long])]).validate().unwrap_err().reason.contains("longer than"));
    }

    #[test]
    fn names_round_trip() {
        for e in EventName::ALL {
            assert_eq!(EventName::from_name(e.as_str()), Some(e));
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.as_str()));
        }
        for m in [Mode::Enforce, Mode::Audit] {
            assert_eq!(Mode::from_name(m.name()), Some(m));
        }
        assert_eq!(EventName::from_name("write"), None);
    }

    #[test]
    fn defaults_are_not_serialized() {
        let g = spec(vec![subject(&["/a"])]);
        let json = serde_json::to_value(&g).unwrap();
        assert_eq!(json, serde_json::json!({"selector": {}, "subjects": [{"deny": ["/a"]}]}));
    }

    /// The state file of the previous release serialized every field; it
    /// must still load.
    #[test]
    fn previous_release_state_spec_loads() {
        let old = r#"{"subjects":[{"allow":[],"deny":["/x"],"events":["open"],"onlyDir":false,
            "autoAllowOwner":true,"audit":false,"tags":{},"mountpoint":false}],"mode":"Audit"}"#;
        let g: GuardSpec = serde_json::from_str(old).unwrap();
        assert_eq!(g.mode, Mode::Audit);
        assert!(g.subjects[0].auto_allow_owner);
        assert!(g.validate().is_ok());
    }

    /// Every string of 1 to 7 characters over an alphabet that exercises
    /// every case of the path syntax.
    fn short_strings() -> impl Iterator<Item = String> {
        const ALPHABET: [char; 4] = ['/', '.', '*', 'a'];
        (1..=7u32).flat_map(|len| {
            (0..ALPHABET.len().pow(len)).map(move |n| {
                let mut k = n;
                (0..len)
                    .map(|_| {
                        let c = ALPHABET[k % ALPHABET.len()];
                        k /= ALPHABET.len();
                        c
                    })
                    .collect()
            })
        })
    }

    /// The schema's regular expression accepts exactly what the pattern
    /// parser accepts, on every short string.
    #[test]
    fn path_pattern_agrees_with_the_parser() {
        let rx = regex::Regex::new(PATH_PATTERN).unwrap();
        let mut checked = 0;
        for s in short_strings() {
            assert_eq!(rx.is_match(&s), Pattern::parse(&s).is_ok(), "{s:?}");
            checked += 1;
        }
        assert!(checked > 20_000);
    }

    /// The same for `allowProcesses` entries and [`validate_executable`].
    #[test]
    fn executable_pattern_agrees_with_the_validator() {
        let rx = regex::Regex::new(EXECUTABLE_PATTERN).unwrap();
        let mut accepted = 0;
        for s in short_strings() {
            let ok = validate_executable(&s).is_ok();
            assert_eq!(rx.is_match(&s), ok, "{s:?}");
            accepted += ok as u32;
        }
        assert!(accepted > 400, "{accepted}");
    }

    #[test]
    fn allow_processes_rules() {
        let mut s = subject(&["/secret"]);
        s.allow_processes = vec!["/usr/sbin/nginx".into(), "/bin/.hidden".into()];
        assert!(spec(vec![s.clone()]).validate().is_ok());
        let cases = [
            ("usr/bin/x", "must be an absolute path"),
            ("/usr/bin/*", "patterns are not allowed here"),
            ("/usr/bin/", "names a directory"),
            ("/usr/../bin/x", "must not contain . or .. components"),
            ("/", "names a directory"),
        ];
        for (exe, why) in cases {
            let mut bad = s.clone();
            bad.allow_processes = vec!["/ok".into(), exe.into()];
            let e = spec(vec![bad]).validate().unwrap_err();
            assert_eq!(e.field, "subjects[0].allowProcesses[1]", "{exe}");
            assert!(e.reason.contains(why), "{exe}: {}", e.reason);
        }
        let mut only_allow = Subject { allow: vec!["/a".into()], ..Default::default() };
        only_allow.allow_processes = vec!["/bin/sh".into()];
        assert_eq!(spec(vec![only_allow]).validate().unwrap_err().field, "subjects[0].allowProcesses");
        let mut many = s.clone();
        many.allow_processes = (0..33).map(|i| format!("/bin/p{i}")).collect();
        assert!(spec(vec![many.clone()]).validate().unwrap_err().reason.contains("at most 32"));
        assert!(spec(vec![many]).validate_without_limits().is_ok());
        let g: GuardSpec =
            serde_json::from_str(r#"{"subjects":[{"deny":["/s"],"allowProcesses":["/usr/sbin/nginx"]}]}"#).unwrap();
        assert_eq!(g.subjects[0].allow_processes, ["/usr/sbin/nginx"]);
    }
}
