//! Audit records: one per denial (and per allowed event when a subject sets
//! `audit: true`). The enforcement thread only *queues* a small pending
//! record on a bounded channel; a separate thread fills in process details,
//! renders JSON or the guard's `logFormat`, and writes it. A full queue drops
//! the record and counts it: enforcement never waits on audit output.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;

use crate::Kind;
use crate::instance::TargetInfo;
use janus_api::Mode;

/// What happened to the access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Allowed (logged because the subject audits).
    Allow,
    /// Denied with EPERM.
    Deny,
    /// Would have been denied; allowed because the guard is in Audit mode.
    WouldDeny,
}

impl Outcome {
    /// Name used in records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::WouldDeny => "would-deny",
        }
    }
}

/// A record as queued by the enforcement thread: cheap to build (reference
/// counted strings, no formatting).
#[derive(Debug)]
pub struct Pending {
    /// Event time.
    pub time: SystemTime,
    /// Guard / pod / container of the guard instance.
    pub target: Arc<TargetInfo>,
    /// Pid of the accessing process.
    pub pid: i32,
    /// Path as seen inside the guarded root.
    pub path: Arc<str>,
    /// Whether the object is a directory.
    pub is_dir: bool,
    /// Access kind.
    pub kind: Kind,
    /// Decision.
    pub outcome: Outcome,
    /// Guard mode.
    pub mode: Mode,
    /// The deciding rule, e.g. `deny /etc/shadow`.
    pub rule: Option<Arc<str>>,
    /// Subject tags.
    pub tags: Arc<BTreeMap<String, String>>,
    /// Template to render instead of JSON.
    pub log_format: Option<Arc<str>>,
    /// Process details, when read while the process was still blocked on
    /// the decision (done for denials, so their records are complete even
    /// if the process exits at once).
    pub process: Option<ProcessInfo>,
}

/// `comm`, executable and uid of a process.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    /// `/proc/<pid>/comm`.
    pub comm: Option<String>,
    /// `/proc/<pid>/exe`.
    pub exe: Option<String>,
    /// Real uid.
    pub uid: Option<u32>,
}

/// A complete audit record, as written and streamed.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC time.
    pub time: String,
    /// Guard name (`namespace/name`).
    pub guard: String,
    /// Namespace of the pod (or guard, standalone).
    pub namespace: String,
    /// Pod name; empty in standalone mode.
    pub pod: String,
    /// Container name; empty in standalone mode.
    pub container: String,
    /// Node name.
    pub node: String,
    /// Accessing process.
    pub pid: i32,
    /// Its `comm`.
    pub process: Option<String>,
    /// Its executable.
    pub executable: Option<String>,
    /// Its real uid.
    pub uid: Option<u32>,
    /// Path as seen inside the pod.
    pub path: String,
    /// `open`, `access` or `exec`.
    pub event: String,
    /// `allow`, `deny` or `would-deny`.
    pub decision: String,
    /// `enforce` or `audit`.
    pub mode: String,
    /// The rule that decided, if any.
    pub rule: Option<String>,
    /// Subject tags.
    pub tags: BTreeMap<String, String>,
}

impl AuditRecord {
    /// Renders the original Janus text line from a template.
    pub fn render(&self, format: &str, is_dir: bool) -> String {
        let mut out = String::with_capacity(format.len() + self.path.len() + 32);
        let mut rest = format;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                rest = "";
                break;
            };
            let tags = || self.tags.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(",");
            let value = match &after[..close] {
                "pod" => self.pod.clone(),
                "node" => self.node.clone(),
                "response" => match self.decision.as_str() {
                    "deny" => "DENY".into(),
                    "would-deny" => "WOULD-DENY".into(),
                    _ => "ALLOW".into(),
                },
                "event" => self.event.clone(),
                "path" => self.path.clone(),
                "ftype" => {
                    if is_dir {
                        "directory".into()
                    } else {
                        "file".into()
                    }
                }
                "tags" => tags(),
                "guard" => self.guard.clone(),
                "container" => self.container.clone(),
                "pid" => self.pid.to_string(),
                "process" => self.process.clone().unwrap_or_default(),
                "rule" => self.rule.clone().unwrap_or_default(),
                "namespace" => self.namespace.clone(),
                "uid" => self.uid.map(|u| u.to_string()).unwrap_or_default(),
                "executable" => self.executable.clone().unwrap_or_default(),
                "mode" => self.mode.clone(),
                "time" => self.time.clone(),
                other => format!("{{{other}}}"),
            };
            out.push_str(&value);
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// Formats a `SystemTime` as RFC 3339 UTC with microseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60,
        d.subsec_micros()
    )
}

/// Process details read from /proc, best effort (the process may be gone).
pub fn process_info(pid: i32) -> ProcessInfo {
    let proc = janus_procfs::ProcFs::default();
    let pid = pid as u32;
    let comm = proc.comm(pid).ok();
    let exe = proc.exe(pid).ok().map(|p| p.to_string_lossy().into_owned());
    let uid = proc.status(pid).ok().map(|s| s.uid.real);
    ProcessInfo { comm, exe, uid }
}

impl Pending {
    /// Completes the record with process details.
    pub fn complete(self) -> (AuditRecord, Option<Arc<str>>, bool) {
        let info = self.process.unwrap_or_else(|| process_info(self.pid));
        let (process, executable, uid) = (info.comm, info.exe, info.uid);
        let t = &self.target;
        let record = AuditRecord {
            time: rfc3339(self.time),
            guard: t.guard.clone(),
            namespace: t.namespace.clone(),
            pod: t.pod.clone(),
            container: t.container.clone(),
            node: t.node.clone(),
            pid: self.pid,
            process,
            executable,
            uid,
            path: self.path.to_string(),
            event: self.kind.as_str().to_string(),
            decision: self.outcome.as_str().to_string(),
            mode: self.mode.as_str().to_string(),
            rule: self.rule.map(|r| r.to_string()),
            tags: (*self.tags).clone(),
        };
        (record, self.log_format, self.is_dir)
    }
}

/// The enforcement side of the audit queue.
#[derive(Clone, Debug)]
pub struct AuditQueue {
    tx: Sender<Pending>,
    dropped: metrics::Counter,
}

impl AuditQueue {
    /// Queues a record; if the queue is full the record is dropped and
    /// counted. Never blocks.
    pub fn push(&self, record: Pending) {
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.increment(1),
        }
    }
}

/// Where finished records go.
pub type Subscribers = Arc<std::sync::Mutex<Vec<Sender<Arc<AuditRecord>>>>>;

/// Starts the audit writer thread. Records are written to `out` (one line
/// each) and offered to every subscriber (dropped for a subscriber whose
/// channel is full).
pub fn start(
    capacity: usize,
    mut out: Option<Box<dyn Write + Send>>,
    subscribers: Subscribers,
) -> std::io::Result<(AuditQueue, std::thread::JoinHandle<()>)> {
    let (tx, rx): (Sender<Pending>, Receiver<Pending>) = crossbeam_channel::bounded(capacity);
    let dropped = metrics::counter!(crate::metrics::AUDIT_DROPPED);
    let handle = std::thread::Builder::new().name("janus-audit".into()).spawn(move || {
        for pending in rx {
            let (record, format, is_dir) = pending.complete();
            if let Some(w) = out.as_mut() {
                let line = match &format {
                    Some(f) => record.render(f, is_dir),
                    None => serde_json::to_string(&record).unwrap_or_default(),
                };
                let _ = writeln!(w, "{line}");
                let _ = w.flush();
            }
            let record = Arc::new(record);
            if let Ok(mut subs) = subscribers.lock() {
                subs.retain(|s| !matches!(s.try_send(record.clone()), Err(TrySendError::Disconnected(_))));
            }
        }
    })?;
    Ok((AuditQueue { tx, dropped }, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AuditRecord {
        AuditRecord {
            time: "t".into(),
            guard: "default/g".into(),
            namespace: "default".into(),
            pod: "nginx".into(),
            container: "c".into(),
            node: "n1".into(),
            pid: 42,
            process: Some("cat".into()),
            executable: None,
            uid: Some(0),
            path: "/etc/secret".into(),
            event: "open".into(),
            decision: "deny".into(),
            mode: "enforce".into(),
            rule: Some("deny /etc/secret".into()),
            tags: [("team".to_string(), "a".to_string())].into(),
        }
    }

    #[test]
    fn default_log_format_matches_original() {
        let line = record().render(janus_api::guard::DEFAULT_LOG_FORMAT, false);
        assert_eq!(line, "<DENY> open file '/etc/secret' (nginx:n1) team:a");
    }

    #[test]
    fn rfc3339_known_instant() {
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123456Z");
    }
}
