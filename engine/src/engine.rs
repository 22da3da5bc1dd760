//! The engine's public face: start it, apply guard instances, remove them,
//! stop it. Each guard instance (a compiled guard bound to one root
//! directory, e.g. a container's root) gets its own fanotify permission group,
//! so events arrive already attributed to their guard, and replacing a guard
//! never disturbs another.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::audit::{AuditQueue, AuditRecord, Subscribers};
use crate::enforce::{Enforcer, EntryBatch};
use crate::marks;
use crate::policy::Policy;
use crate::sys;
use crate::watch::Watcher;
use crate::{Kind, metrics as m};

/// Which event loop is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Batched reads and responses through one io_uring ring.
    IoUring,
    /// `poll` + `read` + `writev`, for kernels or sandboxes without io_uring.
    Plain,
}

impl Backend {
    /// Name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Plain => "plain",
        }
    }
}

/// Engine settings.
pub struct EngineConfig {
    /// `None`: io_uring if it works here, else plain. `Some`: exactly that.
    pub backend: Option<Backend>,
    /// Capacity of the audit queue (records); beyond it records are dropped
    /// and counted.
    pub audit_queue: usize,
    /// Where audit lines go (JSON, or `logFormat` text); `None`: only to
    /// subscribers.
    pub audit_out: Option<Box<dyn Write + Send>>,
    /// Most objects one guard may walk and mark (beyond: use `mountpoint`).
    pub max_walk: usize,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("backend", &self.backend)
            .field("audit_queue", &self.audit_queue)
            .field("audit_out", &self.audit_out.is_some())
            .field("max_walk", &self.max_walk)
            .finish()
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { backend: None, audit_queue: 65_536, audit_out: None, max_walk: 1_000_000 }
    }
}

/// Who a guard instance protects, for audit records and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetInfo {
    /// Guard, `namespace/name`.
    pub guard: String,
    /// Namespace.
    pub namespace: String,
    /// Pod name (empty standalone).
    pub pod: String,
    /// Container name (empty standalone).
    pub container: String,
    /// Node name.
    pub node: String,
}

/// A guard instance to enforce.
#[derive(Clone, Debug)]
pub struct GuardTarget {
    /// Unique key; applying the same id again replaces the instance.
    pub id: String,
    /// Names for records.
    pub info: TargetInfo,
    /// The compiled guard.
    pub policy: Arc<Policy>,
    /// Host path under which the guard's paths live: `/` on a host,
    /// `/proc/<pid>/root` for a container.
    pub root: PathBuf,
    /// Pids whose process trees `autoAllowOwner` subjects allow (a
    /// container's main process).
    pub owner_pids: Vec<u32>,
}

/// What applying a guard instance did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardReport {
    /// Permission marks placed (directories, denied files, mounts).
    pub marks: usize,
    /// Directories watched for new entries.
    pub watched_dirs: usize,
    /// One directory per mount marked as a whole for file opens (the mount
    /// holding each guarded tree): every file opened there reaches the
    /// engine once, so files created where no mark exists yet are decided.
    pub mounts: Vec<String>,
    /// Rule paths that do not exist yet (guarded once they appear).
    pub pending: Vec<String>,
    /// Non-fatal problems (unreadable directories, filesystems without file
    /// handles for the watcher).
    pub warnings: Vec<String>,
}

/// Engine failures.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The guard covers more objects than `max_walk`.
    #[error(
        "guard {guard} covers more than {limit} files and directories under {path}; narrow it or set `mountpoint: true`"
    )]
    TooLarge {
        /// Guard.
        guard: String,
        /// Walk start.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// The enforcement or watcher thread is gone.
    #[error("engine is stopped")]
    Stopped,
}

impl EngineError {
    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io { op: op.into(), source }
    }
}

/// Pre-registered metric handles of one guard instance (no allocation when
/// counting on the hot path).
#[derive(Debug)]
pub(crate) struct Counters {
    /// `[kind][allow, deny, would-deny]`.
    pub events: [[metrics::Counter; 3]; 3],
    pub marks: metrics::Gauge,
}

/// A guard instance as the engine threads share it.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub id: String,
    pub info: Arc<TargetInfo>,
    pub policy: Arc<Policy>,
    /// Host path of the guarded root.
    pub root: PathBuf,
    /// The root, held open `O_PATH`: every path of the instance is resolved
    /// from it, inside it (marks.rs).
    pub rootfd: OwnedFd,
    /// Prefix that `readlink` of an event fd shows for the root; stripped to
    /// get the path as seen inside the root. Empty for `/`.
    pub root_shown: Vec<u8>,
    /// What resolving rule paths inside the root found (rules guarded at
    /// their real path through a symlink, links not followed), for the
    /// report.
    pub root_notes: Vec<String>,
    /// The owner processes (`autoAllowOwner`), as they ran when the
    /// instance was applied: a later process that merely reuses an owner's
    /// pid is not the owner.
    pub owners: Vec<Owner>,
    /// Per subject, the executables its `allowProcesses` names, as found
    /// inside the root when the instance was applied.
    pub exes: Vec<Vec<crate::root::ExeId>>,
    /// The permission group.
    pub perm: OwnedFd,
    pub counters: Counters,
    /// `describe()` of each rule, shared into audit records.
    pub rule_text: Vec<Arc<str>>,
    pub mark_count: std::sync::atomic::AtomicUsize,
}

/// One run of a process, held by a pidfd: while it runs its pid cannot be
/// reused, and once it has exited a later process with the same pid is not
/// it (a start time in clock ticks cannot tell two runs apart within 10 ms).
#[derive(Debug)]
pub struct Owner {
    /// Process ID.
    pub pid: u32,
    /// Whether the owner is its pid namespace's init (or its namespace is
    /// unknown): it adopts orphans that are not its descendants.
    pub reaper: bool,
    pidfd: OwnedFd,
}

impl Owner {
    /// The owners among `pids` that are running now (a pid that is gone
    /// owns nothing).
    fn open_all(pids: &[u32]) -> Vec<Owner> {
        pids.iter()
            .filter_map(|&pid| match sys::pidfd_open(pid) {
                Ok(pidfd) => {
                    // Read after the pidfd is held: if the pid was reused in
                    // between, the status is the new process's and the owner
                    // check fails anyway (`is`). Unknown counts as a reaper.
                    let ns_pid = janus_procfs::ProcFs::default().status(pid).ok().and_then(|s| s.ns_pid);
                    Some(Owner { pid, reaper: ns_pid.is_none_or(|n| n == 1), pidfd })
                }
                Err(e) => {
                    tracing::warn!(pid, error = %e, "owner process not found; autoAllowOwner allows nobody for it");
                    None
                }
            })
            .collect()
    }

    /// Whether the process that has pid `pid` now is this owner.
    pub fn is(&self, pid: u32) -> bool {
        self.pid == pid && !sys::pidfd_exited(self.pidfd.as_fd())
    }
}

impl Runtime {
    fn new(target: GuardTarget) -> Result<Runtime, EngineError> {
        let flags = libc::FAN_CLASS_CONTENT
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_UNLIMITED_QUEUE
            | libc::FAN_UNLIMITED_MARKS;
        let event_flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as u32;
        let perm = sys::fanotify::init(flags, event_flags)
            .map_err(|e| EngineError::io("fanotify_init (permission group)", e))?;
        let rootfd = crate::root::open_root(&target.root)
            .map_err(|e| EngineError::io(format!("open the guard's root {}", target.root.display()), e))?;
        let root_shown = shown_prefix(&target.root);
        let (policy, mut root_notes) = crate::root::resolve_rules(&target.root, &root_shown, target.policy);
        let (exes, exe_notes) = crate::root::resolve_executables(&target.root, &policy);
        root_notes.extend(exe_notes);
        let guard = target.info.guard.clone();
        let counter = |kind: Kind, decision: &'static str| metrics::counter!(m::EVENTS, "guard" => guard.clone(), "event" => kind.as_str(), "decision" => decision);
        let events = Kind::ALL.map(|k| [counter(k, "allow"), counter(k, "deny"), counter(k, "would-deny")]);
        let counters = Counters { events, marks: metrics::gauge!(m::MARKS_ACTIVE, "guard" => guard.clone()) };
        let rule_text = policy.rules.iter().map(|r| Arc::from(r.describe())).collect();
        Ok(Runtime {
            id: target.id,
            info: Arc::new(target.info),
            policy,
            root_notes,
            root: target.root,
            rootfd,
            root_shown,
            owners: Owner::open_all(&target.owner_pids),
            exes,
            perm,
            counters,
            rule_text,
            mark_count: Default::default(),
        })
    }

    pub fn add_marks(&self, n: usize) {
        let total = self.mark_count.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        self.counters.marks.set(total as f64);
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.counters.marks.set(0.0);
        // Never close a group on the enforcement thread (see
        // `enforce::Loop::release`): the loop hands its last references to
        // the closer thread; should one still end here, the group's last
        // fd is closed on a thread of its own, and this close only drops a
        // reference.
        if std::thread::current().name() == Some(crate::enforce::THREAD_NAME) {
            tracing::error!(guard = %self.info.guard, "guard instance dropped on the enforcement thread; closing its group elsewhere");
            if let Ok(dup) = self.perm.try_clone() {
                let closing = std::thread::Builder::new().name("janus-close-late".into()).spawn(move || drop(dup));
                if let Err(e) = closing {
                    tracing::error!(error = %e, "cannot start a thread to close the group; leaking it");
                    // `dup` moved into the failed closure is gone; keep
                    // ours open instead so this close cannot be the last.
                    std::mem::forget(self.perm.try_clone());
                }
            }
        }
    }
}

/// A failed `fanotify_init`, explained when it is the per-user group limit
/// (each guard instance uses two groups).
pub(crate) fn group_error(which: &str, e: std::io::Error) -> EngineError {
    if e.raw_os_error() == Some(libc::EMFILE) {
        let limit = janus_procfs::ProcFs::default()
            .fanotify_max_user_groups()
            .map_or_else(|e| format!("unreadable: {e}"), |n| n.to_string());
        return EngineError::io(
            format!(
                "fanotify_init ({which} group): the per-user limit of fanotify groups (fs.fanotify.max_user_groups = {}) is reached; each guard instance uses two",
                limit.trim()
            ),
            e,
        );
    }
    EngineError::io(format!("fanotify_init ({which} group)"), e)
}

/// The prefix `readlink(/proc/self/fd/N)` shows for files under `root`.
/// The in-root path of a path the kernel printed (`readlink` of an fd),
/// given the prefix it shows for the instance's root (`Runtime::root_shown`,
/// empty for `/`): `Some("/")` for the root itself, `None` for a path
/// outside the root.
pub(crate) fn in_root<'a>(shown: &'a [u8], root_shown: &[u8]) -> Option<&'a [u8]> {
    match shown.strip_prefix(root_shown) {
        Some(rest) if root_shown.is_empty() || rest.is_empty() || rest[0] == b'/' => {
            Some(if rest.is_empty() { &b"/"[..] } else { rest })
        }
        _ => None,
    }
}

fn shown_prefix(root: &Path) -> Vec<u8> {
    let shown =
        std::fs::read_link(root).or_else(|_| std::fs::canonicalize(root)).unwrap_or_else(|_| root.to_path_buf());
    let bytes = shown.as_os_str().as_bytes();
    if bytes == b"/" { Vec::new() } else { bytes.to_vec() }
}

/// The running engine. Dropping it stops enforcement: every mark is released
/// and any opener still waiting is allowed by the kernel.
#[derive(Debug)]
pub struct Engine {
    enforcer: Enforcer,
    watcher: Watcher,
    backend: Backend,
    /// id -> serial of the live instance.
    guards: Mutex<HashMap<String, u64>>,
    next: std::sync::atomic::AtomicU64,
    subscribers: Subscribers,
    audit_thread: Option<std::thread::JoinHandle<()>>,
    max_walk: usize,
    active: metrics::Gauge,
    heartbeat: crate::heartbeat::Heartbeat,
}

impl Engine {
    /// Starts the enforcement, watcher and audit threads.
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        // Every event read carries an fd: a low soft limit turns bursts of
        // opens into EMFILE (which the kernel answers with a denial).
        match crate::sys::raise_nofile_limit() {
            Ok((before, now)) if now > before => tracing::info!(before, now, "raised RLIMIT_NOFILE"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE"),
        }
        let subscribers: Subscribers = Default::default();
        let (queue, audit_thread) = crate::audit::start(config.audit_queue, config.audit_out, subscribers.clone())
            .map_err(|e| EngineError::io("spawn audit thread", e))?;
        let heartbeat = crate::heartbeat::Heartbeat::new();
        let (enforcer, backend) = Enforcer::start(config.backend, queue.clone(), heartbeat.clone())?;
        metrics::gauge!(m::BACKEND, "backend" => backend.as_str()).set(1.0);
        let watcher = Watcher::start(enforcer.entry_sender(), heartbeat.clone())?;
        Ok(Engine {
            enforcer,
            watcher,
            backend,
            guards: Mutex::default(),
            next: std::sync::atomic::AtomicU64::new(1),
            subscribers,
            audit_thread: Some(audit_thread),
            max_walk: config.max_walk,
            heartbeat,
            active: metrics::gauge!(m::GUARDS_ACTIVE),
        })
    }

    /// The engine threads' liveness (for a health endpoint).
    pub fn heartbeat(&self) -> crate::heartbeat::Heartbeat {
        self.heartbeat.clone()
    }

    /// The event loop in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts enforcing `target`, or replaces the instance with the same id.
    /// The new policy's marks are in place before the old instance is
    /// retired, so no access slips between them. On error the previous
    /// instance (if any) keeps running unchanged.
    pub fn apply(&self, target: GuardTarget) -> Result<GuardReport, EngineError> {
        let mut guards = self.guards.lock().unwrap_or_else(|p| p.into_inner());
        let rt = Arc::new(Runtime::new(target)?);
        let serial = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The enforcement thread must read the new group before any mark
        // exists on it, or openers would wait on a group nobody reads.
        self.enforcer.add(serial, rt.clone())?;
        let notif = match marks::notification_group() {
            Ok(fd) => fd,
            Err(e) => {
                self.enforcer.retire(serial)?;
                return Err(group_error("notification", e));
            }
        };
        let walk = match marks::initial(&rt, notif.as_fd(), self.max_walk) {
            Ok(walk) => walk,
            Err(e) => {
                self.enforcer.retire(serial)?;
                return Err(e);
            }
        };
        let report = walk.report.clone();
        self.enforcer.send_entries(EntryBatch { serial, entries: walk.entries, uncache: walk.uncache })?;
        self.watcher.add(serial, rt.clone(), notif, walk.dirs, walk.fs_roots)?;
        if let Some(old) = guards.insert(rt.id.clone(), serial) {
            self.watcher.remove(old)?;
            self.enforcer.retire(old)?;
        }
        self.active.set(guards.len() as f64);
        Ok(report)
    }

    /// Stops enforcing the instance `id`; `false` if there was none.
    pub fn remove(&self, id: &str) -> Result<bool, EngineError> {
        let mut guards = self.guards.lock().unwrap_or_else(|p| p.into_inner());
        let Some(serial) = guards.remove(id) else {
            return Ok(false);
        };
        self.watcher.remove(serial)?;
        self.enforcer.retire(serial)?;
        self.active.set(guards.len() as f64);
        Ok(true)
    }

    /// Ids of the instances being enforced.
    pub fn guard_ids(&self) -> Vec<String> {
        let guards = self.guards.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<String> = guards.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// A stream of every audit record from now on. A slow reader loses
    /// records (its channel holds `capacity`), never slows enforcement.
    pub fn subscribe(&self, capacity: usize) -> crossbeam_channel::Receiver<Arc<AuditRecord>> {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    /// Stops enforcement and joins the threads. Every mark is released.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.watcher.stop();
        self.enforcer.stop();
        self.guards.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.active.set(0.0);
        // The audit thread ends when the last queue sender (held by the
        // enforcer) is gone.
        if let Some(t) = self.audit_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Keeps `AuditQueue` reachable for the enforcer module.
pub(crate) type Queue = AuditQueue;
