//! The engine's public face: start it, apply guard instances, remove them,
//! stop it. Each guard instance (a compiled guard bound to one root
//! directory, e.g. a container's root) gets its own fanotify permission group,
//! so events arrive already attributed to their guard, and replacing a guard
//! never disturbs another.
//!
//! The top of the module graph: it wires the enforcement, watcher and audit
//! threads and the marking walk together; the guard-instance types they
//! share live in `instance`.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use crate::audit::{AuditRecord, Subscribers};
use crate::enforce::{Backend, Enforcer};
use crate::instance::{EngineError, EntryBatch, GuardReport, GuardTarget, Runtime, group_error};
use crate::marks;
use crate::metrics as m;
use crate::watch::Watcher;

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
    ///
    /// The walk (up to `max_walk` objects) runs without any engine-wide
    /// lock, so applies of different instances proceed side by side; calls
    /// for the *same* id must not overlap (the agent serializes them per
    /// (guard, pod)): the last to finish would win.
    pub fn apply(&self, target: GuardTarget) -> Result<GuardReport, EngineError> {
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
        let old = {
            let mut guards = self.guards.lock().unwrap_or_else(|p| p.into_inner());
            let old = guards.insert(rt.id.clone(), serial);
            self.active.set(guards.len() as f64);
            old
        };
        if let Some(old) = old {
            self.watcher.remove(old)?;
            self.enforcer.retire(old)?;
        }
        Ok(report)
    }

    /// Stops enforcing the instance `id`; `false` if there was none.
    pub fn remove(&self, id: &str) -> Result<bool, EngineError> {
        let serial = {
            let mut guards = self.guards.lock().unwrap_or_else(|p| p.into_inner());
            let Some(serial) = guards.remove(id) else {
                return Ok(false);
            };
            self.active.set(guards.len() as f64);
            serial
        };
        self.watcher.remove(serial)?;
        self.enforcer.retire(serial)?;
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
