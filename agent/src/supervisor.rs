//! The supervisor keeps the engine enforcing what the agent was told to
//! enforce: it resolves each container to its main process, applies one
//! guard instance per (guard, pod, container) rooted at that process's root,
//! retries containers that are not running yet with backoff, re-guards
//! containers that restart, and drops enforcement for containers that are
//! gone. It also owns the state file.
//!
//! Concurrency: one lock per (guard, pod), held for the whole of a request's
//! work on it; the map of them is locked only to find, add or drop one, so a
//! long walk holds up nothing but requests for its own (guard, pod). State
//! writes are group-committed by [`Store`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use janus_api::{Assignment, Container, ContainerState, FieldError, GuardRef};
use janus_engine::policy::Policy;
use janus_engine::{Engine, GuardTarget, TargetInfo};
use janus_proto::{convert, v1};

use crate::containers::{self, ContainerId};
use crate::state::{self, StateError, Store};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Actual {
    spec: Container,
    cref: ContainerId,
    pid: u32,
    start_time: u64,
    state: ContainerState,
    marks: u64,
    last_error: String,
    pending: Vec<String>,
    backoff: Duration,
    next_try: Instant,
}

#[derive(Debug)]
struct Entry {
    desired: Assignment,
    policy: Arc<Policy>,
    containers: Vec<Actual>,
}

/// One (guard, pod): its enforcement, and what GetGuardState reports of it.
///
/// Work on one slot (a request, a resync pass) holds `work` for its whole
/// length — a /proc scan, an engine walk, a state-file write — and nothing
/// else: requests for other (guard, pod)s and GetGuardState never wait for
/// it. `status` is refreshed after each piece of work and read without
/// touching `work`.
#[derive(Debug, Default)]
struct Slot {
    work: Mutex<Work>,
    status: Mutex<Option<v1::GuardStatus>>,
}

#[derive(Debug, Default)]
struct Work {
    entry: Option<Entry>,
    /// Removed from the map: a request that found the slot before must look
    /// it up again.
    dead: bool,
}

impl Slot {
    fn work(&self) -> std::sync::MutexGuard<'_, Work> {
        self.work.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, entry: Option<&Entry>) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = entry.map(status_of);
    }

    fn status(&self) -> Option<v1::GuardStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

type Key = (String, String);

fn parse_token(t: &str) -> Key {
    t.split_once('\n').map(|(g, p)| (g.to_string(), p.to_string())).unwrap_or_default()
}

fn key_of(guard: &GuardRef, pod_uid: &str) -> Key {
    (guard.qualified(), pod_uid.to_string())
}

fn instance_id(d: &Assignment, container: &str) -> String {
    format!("{}@{}/{}", d.guard.qualified(), d.pod.uid, container)
}

/// Failures of the supervisor's own (non-request) work.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The state file could not be written: the request changed nothing.
    #[error("cannot save state: {0}")]
    State(#[from] StateError),
    /// The request is invalid.
    #[error(transparent)]
    Invalid(#[from] FieldError),
}

/// See the module docs.
#[derive(Debug)]
pub struct Supervisor {
    engine: Engine,
    node: String,
    proc_root: PathBuf,
    /// (guard, pod) -> its slot. This lock is held only to find, add or
    /// drop a slot, or to copy statuses out, never across work.
    slots: Mutex<BTreeMap<Key, Arc<Slot>>>,
    /// The desired state on disk (group commit: concurrent requests share
    /// writes; each is durable before its reply).
    store: Store<Key>,
    /// Set while the state file could not be read (an I/O error, not
    /// corruption): when it was last tried. Meanwhile the file is never
    /// written, so what it holds is not lost, and it is read again every
    /// [`STATE_RETRY`].
    unreadable: Mutex<Option<std::time::Instant>>,
}

/// How often an unreadable state file is tried again.
pub const STATE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

impl Supervisor {
    /// A supervisor for `engine` on node `node`.
    pub fn new(engine: Engine, node: String, state_path: PathBuf, proc_root: PathBuf) -> Supervisor {
        Supervisor {
            engine,
            node,
            proc_root,
            slots: Mutex::default(),
            store: Store::new(state_path),
            unreadable: Mutex::default(),
        }
    }

    /// The engine (for audit subscriptions).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the live slot for `key` (made empty if there is none),
    /// holding its work lock.
    fn with_slot<R>(&self, key: &Key, f: impl FnOnce(&Slot, &mut Work) -> R) -> R {
        loop {
            let slot = self.slots().entry(key.clone()).or_default().clone();
            let mut work = slot.work();
            if work.dead {
                continue; // dropped from the map while we waited
            }
            return f(&slot, &mut work);
        }
    }

    /// Drops `key`'s slot from the map if it is still this one, and marks it
    /// dead (the caller holds its work lock).
    fn drop_slot(&self, key: &Key, slot: &Slot, work: &mut Work) {
        work.dead = true;
        slot.publish(None);
        let mut slots = self.slots();
        if slots.get(key).is_some_and(|s| std::ptr::eq(s.as_ref(), slot)) {
            slots.remove(key);
        }
    }

    /// Loads the state file and enforces it. A corrupt file is moved aside
    /// (kept for inspection) and the agent starts empty; the controller
    /// resends what it wants. A file that cannot be read (an I/O error) is
    /// left as it is, never written, and tried again every [`STATE_RETRY`]
    /// from [`Supervisor::reconcile`]; meanwhile the agent enforces what the
    /// controller sends.
    pub fn restore(&self) -> Result<usize, StateError> {
        let desired = match state::load(self.store.path()) {
            Ok(d) => d,
            Err(e @ StateError::Corrupt { .. }) => {
                let aside = state::quarantine(self.store.path());
                tracing::error!(error = %e, moved_to = ?aside, "state file unreadable; starting empty");
                Vec::new()
            }
            Err(e) => {
                self.mark_unreadable(&e);
                Vec::new()
            }
        };
        Ok(self.adopt(desired).len())
    }

    /// Takes the state file's guards that are not held already (what the
    /// controller sent since start wins) into memory, enforced at once;
    /// their keys. Nothing is written.
    fn adopt(&self, desired: Vec<Assignment>) -> Vec<Key> {
        let mut added = Vec::new();
        for d in desired {
            // The state file is an input like any other: the model's rules.
            let e = match d.validate().and_then(|()| Self::entry_from(d)) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "dropping an invalid guard from the state file");
                    continue;
                }
            };
            let key = key_of(&e.desired.guard, &e.desired.pod.uid);
            self.with_slot(&key, |slot, work| {
                if work.entry.is_some() || !self.store.insert_loaded(key.clone(), e.desired.clone()) {
                    return;
                }
                let entry = work.entry.insert(e);
                self.reconcile_entry(entry, true);
                slot.publish(Some(entry));
                added.push(key.clone());
            });
        }
        // Slots made for keys that were held already stay as they were.
        added
    }

    fn mark_unreadable(&self, e: &StateError) {
        let mut u = self.unreadable.lock().unwrap_or_else(|p| p.into_inner());
        if u.is_none() {
            tracing::error!(
                error = %e,
                retry_every = ?STATE_RETRY,
                "state file unreadable: enforcing what the controller sends, not writing the state file (so what it holds is not lost); retrying"
            );
        }
        *u = Some(std::time::Instant::now());
        self.store.set_hold(true);
        metrics::gauge!("janus_agent_state_file_unreadable").set(1.0);
    }

    /// Tries an unreadable state file again when due; once it reads, its
    /// guards not held already are enforced and the file is written again.
    fn retry_state_file(&self) {
        let due = self.unreadable.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() >= STATE_RETRY);
        if !due {
            return;
        }
        let desired = match state::load(self.store.path()) {
            Ok(d) => d,
            Err(e @ StateError::Corrupt { .. }) => {
                let aside = state::quarantine(self.store.path());
                tracing::error!(error = %e, moved_to = ?aside, "state file unreadable; continuing without it");
                Vec::new()
            }
            Err(e) => {
                self.mark_unreadable(&e);
                return;
            }
        };
        *self.unreadable.lock().unwrap_or_else(|p| p.into_inner()) = None;
        metrics::gauge!("janus_agent_state_file_unreadable").set(0.0);
        let added = self.adopt(desired);
        self.store.set_hold(false);
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "writing the state file");
        }
        tracing::info!(restored = added.len(), "state file readable again");
    }

    fn entry_from(desired: Assignment) -> Result<Entry, FieldError> {
        let policy = Arc::new(Policy::compile(&desired.spec)?);
        let mut containers = Vec::new();
        for (i, c) in desired.containers.iter().enumerate() {
            let cref = ContainerId::parse(&c.runtime_id)
                .map_err(|e| FieldError::new(format!("containers[{i}].runtimeId"), e))?;
            containers.push(Actual {
                spec: c.clone(),
                cref,
                pid: 0,
                start_time: 0,
                state: ContainerState::Pending,
                marks: 0,
                last_error: String::new(),
                pending: Vec::new(),
                backoff: BACKOFF_MIN,
                next_try: Instant::now(),
            });
        }
        Ok(Entry { desired, policy, containers })
    }

    /// Validates a CreateGuard request (the model's rules, in janus-api)
    /// into the assignment this agent keeps.
    fn desired_from(&self, req: &v1::CreateGuardRequest) -> Result<Assignment, FieldError> {
        let mut a = Assignment::try_from(req)?;
        a.check_node(&self.node)?;
        a.pod.node = self.node.clone();
        Policy::compile(&a.spec)?;
        Ok(a)
    }

    /// CreateGuard: validate, persist, enforce, report. Invalid requests and
    /// state-file failures change nothing. Only a request for the same
    /// (guard, pod) waits for this one.
    pub fn create(&self, req: &v1::CreateGuardRequest) -> Result<v1::GuardStatus, SupervisorError> {
        let desired = self.desired_from(req)?;
        let key = key_of(&desired.guard, &desired.pod.uid);
        let new = Self::entry_from(desired)?;
        self.with_slot(&key, |slot, work| {
            if let Some(e) = work.entry.as_mut()
                && e.desired == new.desired
            {
                // Idempotent resend: nothing to change, but retry anything due.
                self.reconcile_entry(e, false);
                slot.publish(Some(e));
                return Ok(status_of(e));
            }
            if let Err(e) = self.store.put(key.clone(), Some(new.desired.clone())) {
                if work.entry.is_none() {
                    self.drop_slot(&key, slot, work);
                }
                return Err(e.into());
            }
            if let Some(old) = work.entry.take() {
                // Containers that left the pod spec stop being enforced; the
                // others are replaced atomically by the apply below.
                for c in &old.containers {
                    if !new.containers.iter().any(|n| n.spec.name == c.spec.name) {
                        let _ = self.engine.remove(&instance_id(&old.desired, &c.spec.name));
                    }
                }
            }
            let entry = work.entry.insert(new);
            self.reconcile_entry(entry, true);
            slot.publish(Some(entry));
            Ok(status_of(entry))
        })
    }

    /// DestroyGuard: stop enforcing; unknown (guard, pod) is not an error.
    pub fn destroy(&self, guard: &GuardRef, pod_uid: &str) -> Result<bool, SupervisorError> {
        let key = key_of(guard, pod_uid);
        if !self.slots().contains_key(&key) {
            return Ok(false);
        }
        self.with_slot(&key, |slot, work| {
            let Some(old) = work.entry.take() else {
                self.drop_slot(&key, slot, work);
                return Ok(false);
            };
            if let Err(e) = self.store.put(key.clone(), None) {
                work.entry = Some(old);
                return Err(e.into());
            }
            self.drop_slot(&key, slot, work);
            for c in &old.containers {
                if let Err(e) = self.engine.remove(&instance_id(&old.desired, &c.spec.name)) {
                    tracing::error!(error = %e, "remove guard instance");
                }
            }
            Ok(true)
        })
    }

    /// The full state, for GetGuardState.
    pub fn state(&self) -> v1::GuardState {
        self.state_page(0, "")
    }

    /// One page of [`Supervisor::state`]: at most `size` entries (0: all)
    /// after `token` (the previous page's `next_page_token`), in key order,
    /// so pages never overlap or skip an entry that stayed. Never waits for
    /// work in progress: each entry as of its last finished step.
    pub fn state_page(&self, size: u32, token: &str) -> v1::GuardState {
        use std::ops::Bound;
        let after = (!token.is_empty()).then(|| parse_token(token));
        let start = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        let limit = if size == 0 { usize::MAX } else { size as usize };
        let slots = self.slots();
        let mut page: Vec<(&Key, v1::GuardStatus)> = slots
            .range::<Key, _>((start, Bound::Unbounded))
            .filter_map(|(k, s)| Some((k, s.status()?)))
            .take(limit.saturating_add(1))
            .collect();
        let mut next_page_token = String::new();
        if page.len() > limit {
            page.truncate(limit);
            if let Some((k, _)) = page.last() {
                next_page_token = format!("{}\n{}", k.0, k.1);
            }
        }
        v1::GuardState { node: self.node.clone(), guards: page.into_iter().map(|(_, s)| s).collect(), next_page_token }
    }

    /// One pass over every container that is due (retry time reached, or
    /// guarded but its process changed). A (guard, pod) that a request is
    /// working on is left to that request.
    pub fn reconcile(&self) {
        self.retry_state_file();
        let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
        let mut counts = [0usize; ContainerState::ALL.len()];
        for slot in slots {
            if let Ok(mut work) = slot.work.try_lock()
                && let Some(entry) = work.entry.as_mut()
            {
                self.reconcile_entry(entry, false);
                slot.publish(Some(entry));
            }
            for c in slot.status().iter().flat_map(|s| &s.containers) {
                let state = convert::container_state(c).unwrap_or(ContainerState::Pending);
                counts[ContainerState::ALL.iter().position(|s| *s == state).unwrap_or(0)] += 1;
            }
        }
        for (state, n) in ContainerState::ALL.iter().zip(counts) {
            metrics::gauge!("janus_agent_containers", "state" => state.as_str()).set(n as f64);
        }
    }

    fn reconcile_entry(&self, entry: &mut Entry, force: bool) {
        let Entry { desired, policy, containers } = entry;
        for actual in containers.iter_mut() {
            self.reconcile_container(desired, policy, actual, force);
        }
    }

    fn reconcile_container(&self, d: &Assignment, policy: &Arc<Policy>, a: &mut Actual, force: bool) {
        let id = instance_id(d, &a.spec.name);
        if a.state == ContainerState::Guarded {
            if !force && start_time(&self.proc_root, a.pid) == Some(a.start_time) {
                return; // still the same process
            }
            if start_time(&self.proc_root, a.pid) != Some(a.start_time) {
                // The container's process is gone (exited or restarted):
                // its root is gone with it.
                let _ = self.engine.remove(&id);
                a.state = ContainerState::Gone;
                a.marks = 0;
                a.next_try = Instant::now();
                a.backoff = BACKOFF_MIN;
                tracing::info!(guard = %id, pid = a.pid, "container process gone; waiting for a new one");
            }
        } else if !force && Instant::now() < a.next_try {
            return;
        }
        let t0 = Instant::now();
        let resolved = containers::resolve(&self.proc_root, &a.cref);
        let t_resolve = t0.elapsed();
        match resolved {
            Ok(Some(p)) => {
                let target = GuardTarget {
                    id: id.clone(),
                    info: TargetInfo {
                        guard: d.guard.qualified(),
                        namespace: d.pod.namespace.clone(),
                        pod: d.pod.name.clone(),
                        container: a.spec.name.clone(),
                        node: self.node.clone(),
                    },
                    policy: policy.clone(),
                    root: p.root.clone(),
                    owner_pids: vec![p.pid],
                };
                let t1 = Instant::now();
                let applied = self.engine.apply(target);
                tracing::debug!(guard = %id, resolve = ?t_resolve, apply = ?t1.elapsed(), "reconciled container");
                match applied {
                    Ok(report) => {
                        a.state = ContainerState::Guarded;
                        a.pid = p.pid;
                        a.start_time = p.start_time;
                        a.marks = report.marks as u64;
                        a.pending = report.pending;
                        a.last_error.clear();
                        a.backoff = BACKOFF_MIN;
                        tracing::info!(guard = %id, pid = p.pid, marks = report.marks, "container guarded");
                    }
                    Err(e) => self.failed(a, format!("apply: {e}")),
                }
            }
            Ok(None) => {
                if a.state != ContainerState::Gone {
                    a.state = ContainerState::Pending;
                }
                a.pid = 0;
                a.next_try = Instant::now() + a.backoff;
                a.backoff = (a.backoff * 2).min(BACKOFF_MAX);
            }
            Err(e) => self.failed(a, format!("resolve {}: {e}", a.spec.runtime_id)),
        }
    }

    fn failed(&self, a: &mut Actual, error: String) {
        if a.last_error != error {
            tracing::warn!(container = %a.spec.name, "{error}");
        }
        a.state = ContainerState::Failed;
        a.last_error = error;
        a.next_try = Instant::now() + a.backoff;
        a.backoff = (a.backoff * 2).min(BACKOFF_MAX);
    }
}

/// Start time (field 22 of /proc/<pid>/stat) of a live process.
fn start_time(proc_root: &Path, pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    janus_procfs::ProcFs::new(proc_root).stat(pid).ok().map(|s| s.start_time)
}

fn status_of(e: &Entry) -> v1::GuardStatus {
    let d = &e.desired;
    v1::GuardStatus {
        guard: Some((&d.guard).into()),
        pod: Some((&d.pod).into()),
        containers: e
            .containers
            .iter()
            .map(|a| {
                let mut c = v1::ContainerStatus {
                    name: a.spec.name.clone(),
                    runtime_id: a.spec.runtime_id.clone(),
                    pid: a.pid,
                    marks: a.marks,
                    last_error: a.last_error.clone(),
                    pending_paths: a.pending.clone(),
                    ..Default::default()
                };
                convert::set_container_state(&mut c, a.state);
                c
            })
            .collect(),
        spec: Some((&d.spec).into()),
    }
}
