//! Guard instances as the engine threads share them: what a caller asks to
//! enforce ([`GuardTarget`]), what applying it did ([`GuardReport`]), the
//! instance's runtime state ([`Runtime`]: its permission group, root fd,
//! resolved policy, owners, counters) and the decisions handed between
//! threads ([`FileKey`], [`Entry`], [`EntryBatch`]).
//!
//! A leaf of the module graph: every other engine module may use these
//! types, and this module uses only `policy`, `root`, `sys` and `metrics`.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Kind;
use crate::metrics as m;
use crate::policy::{Decision, Policy};
use crate::root::ExeId;
use crate::sys;

/// The enforcement thread's name (`enforce::THREAD_NAME`), known here so
/// that dropping a [`Runtime`] can tell whether it happens on that thread.
pub(crate) const ENFORCEMENT_THREAD: &str = "janus-enforce";

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
    pub exes: Vec<Vec<ExeId>>,
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
    pub(crate) fn new(target: GuardTarget) -> Result<Runtime, EngineError> {
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
        if std::thread::current().name() == Some(ENFORCEMENT_THREAD) {
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
fn shown_prefix(root: &Path) -> Vec<u8> {
    let shown =
        std::fs::read_link(root).or_else(|_| std::fs::canonicalize(root)).unwrap_or_else(|_| root.to_path_buf());
    let bytes = shown.as_os_str().as_bytes();
    if bytes == b"/" { Vec::new() } else { bytes.to_vec() }
}

/// Identity of a file in the decision map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

/// A remembered decision for one inode.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Path as seen inside the guarded root (for audit records).
    pub path: Arc<str>,
    /// Birth time when known; a mismatch means the inode number was reused.
    pub birth: u64,
    pub is_dir: bool,
    pub decision: Decision,
}

/// Decisions found by a walk (initial or watcher), for one instance.
#[derive(Debug)]
pub(crate) struct EntryBatch {
    pub serial: u64,
    pub entries: Vec<(FileKey, Entry)>,
    /// Files (held `O_PATH`) whose cached allow, if any, is taken back: they
    /// now need user space (`Walk::uncache`).
    pub uncache: Vec<OwnedFd>,
}
