//! The enforcement thread: reads permission events from every guard
//! instance's group, decides each, answers.
//!
//! Two backends share the decision code ([`Decider`]):
//! - io_uring: one read per group in flight; when a read completes, every
//!   event in it is decided and all responses go out in *one* `writev`
//!   (one 8-byte iovec per response), the read is re-armed in the same
//!   submission, and the batch's event fds are closed through the ring once
//!   the responses are written;
//! - plain: `poll` + `read` + `writev` + `close`, where io_uring is missing.
//!
//! No allocation per event on the hot path: read buffers, response buffers
//! and fd lists are recycled; a path is allocated only the first time an
//! inode is seen (then it is cached, in user space or in the kernel).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::audit::{Outcome, Pending};
use crate::engine::{Backend, EngineError, Queue, Runtime};
use crate::event::{self, Event, RESPONSE_LEN};
use crate::heartbeat::{Beater, Heartbeat};
use crate::marks::{classify, merge_deny_wins};
use crate::policy::{Decision, Scratch, Verdict};
use crate::sys::uring::{Completion, OpKind, Refused, Ring};
use crate::sys::{self, fanotify};
use crate::{Kind, metrics as m};
use janus_api::Mode;

/// Bytes read from a group at once (about 680 events).
const READ_BUF: usize = 16 * 1024;
/// Most decisions remembered per guard instance.
const MAX_ENTRIES: usize = 1 << 20;
const TAG_WAKE: u64 = u64::MAX;
const TAG_CANCEL: u64 = u64::MAX - 1;
/// Write tags start here; read tags are guard serials (small).
const WRITE_TAG_BASE: u64 = 1 << 62;
/// A read the ring refuses this many times in a row retires its group.
const MAX_REARM_FAILURES: u32 = 5;
/// Longest pause before reading a group again after a failed read.
const MAX_READ_BACKOFF: Duration = Duration::from_millis(100);
/// The loop wakes at least this often even when idle (it is how a stuck
/// thread would be told from an idle one).
const IDLE_TICK: Duration = Duration::from_secs(1);
/// The path shown for an object whose path the kernel cannot print.
pub(crate) const UNRESOLVED_PATH: &str = "<unresolved: path longer than PATH_MAX>";

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

/// The enforcement thread's name.
pub(crate) const THREAD_NAME: &str = "janus-enforce";

/// Decisions found by a walk (initial or watcher), for one instance.
#[derive(Debug)]
pub(crate) struct EntryBatch {
    pub serial: u64,
    pub entries: Vec<(FileKey, Entry)>,
    /// Files (held `O_PATH`) whose cached allow, if any, is taken back: they
    /// now need user space (`Walk::uncache`).
    pub uncache: Vec<OwnedFd>,
}

enum Command {
    Add(u64, Arc<Runtime>, Sender<()>),
    Entries(EntryBatch),
    Retire(u64, Sender<()>),
    Stop,
}

/// Handle to the enforcement thread.
#[derive(Debug)]
pub(crate) struct Enforcer {
    tx: Sender<Command>,
    wake: Arc<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
    closer: Option<std::thread::JoinHandle<()>>,
}

/// Lets the watcher thread hand new decisions to the enforcement thread.
#[derive(Clone, Debug)]
pub(crate) struct EntrySender {
    tx: Sender<Command>,
    wake: Arc<OwnedFd>,
}

impl EntrySender {
    pub fn send(&self, batch: EntryBatch) -> Result<(), EngineError> {
        self.tx.send(Command::Entries(batch)).map_err(|_| EngineError::Stopped)?;
        sys::eventfd_signal(self.wake.as_fd()).map_err(|e| EngineError::io("wake enforcement thread", e))
    }
}

impl Enforcer {
    pub fn start(
        backend: Option<Backend>,
        queue: Queue,
        heartbeat: Heartbeat,
    ) -> Result<(Enforcer, Backend), EngineError> {
        let wake = Arc::new(sys::eventfd().map_err(|e| EngineError::io("eventfd", e))?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let wake2 = wake.clone();
        // The ring is created on the enforcement thread (it is not Send);
        // the thread reports which backend it ended up with.
        let (chosen_tx, chosen_rx) = crossbeam_channel::bounded(1);
        let (closer_tx, closer_rx) = crossbeam_channel::unbounded();
        let closer_thread = std::thread::Builder::new()
            .name("janus-close".into())
            .spawn(move || abort_on_panic("janus-close", move || closer(closer_rx)))
            .map_err(|e| EngineError::io("spawn group closer thread", e))?;
        let closer = closer_tx;
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                abort_on_panic(THREAD_NAME, move || {
                    let fail_every = crate::fault::faults().ring_push_fail_every;
                    let ring = match backend {
                        Some(Backend::Plain) => None,
                        Some(Backend::IoUring) => match Ring::new(1024, fail_every) {
                            Ok(r) => Some(r),
                            Err(e) => {
                                let _ = chosen_tx.send(Err(EngineError::io("io_uring_setup", e)));
                                return;
                            }
                        },
                        None => match Ring::new(1024, fail_every) {
                            Ok(r) => Some(r),
                            Err(e) => {
                                tracing::warn!(error = %e, "io_uring unavailable; using the plain read/writev loop");
                                None
                            }
                        },
                    };
                    let _ = chosen_tx.send(Ok(if ring.is_some() { Backend::IoUring } else { Backend::Plain }));
                    let decider = Decider::new(queue);
                    let mut lp = Loop {
                        rx,
                        wake: wake2,
                        slots: HashMap::new(),
                        decider,
                        pool: Vec::new(),
                        closer,
                        heartbeat,
                        rearm: Vec::new(),
                        submit_errors: metrics::counter!(m::SUBMIT_ERRORS),
                    };
                    match ring {
                        Some(ring) => lp.run_ring(ring),
                        None => lp.run_plain(),
                    }
                })
            })
            .map_err(|e| EngineError::io("spawn enforcement thread", e))?;
        let chosen = chosen_rx.recv().map_err(|_| EngineError::Stopped)??;
        Ok((Enforcer { tx, wake, thread: Some(thread), closer: Some(closer_thread) }, chosen))
    }

    fn send(&self, cmd: Command) -> Result<(), EngineError> {
        self.tx.send(cmd).map_err(|_| EngineError::Stopped)?;
        sys::eventfd_signal(self.wake.as_fd()).map_err(|e| EngineError::io("wake enforcement thread", e))
    }

    /// Starts reading `rt`'s group; returns once the thread reads it.
    pub fn add(&self, serial: u64, rt: Arc<Runtime>) -> Result<(), EngineError> {
        let (ack, done) = crossbeam_channel::bounded(1);
        self.send(Command::Add(serial, rt, ack))?;
        done.recv().map_err(|_| EngineError::Stopped)
    }

    pub fn send_entries(&self, batch: EntryBatch) -> Result<(), EngineError> {
        self.send(Command::Entries(batch))
    }

    pub fn entry_sender(&self) -> EntrySender {
        EntrySender { tx: self.tx.clone(), wake: self.wake.clone() }
    }

    /// Removes an instance: its marks are flushed, its queue drained and
    /// answered, then its group is closed. Returns when that is done.
    pub fn retire(&self, serial: u64) -> Result<(), EngineError> {
        let (ack, done) = crossbeam_channel::bounded(1);
        self.send(Command::Retire(serial, ack))?;
        done.recv().map_err(|_| EngineError::Stopped)
    }

    pub fn stop(&mut self) {
        let _ = self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The loop (the closer's only sender) is gone: the closer finishes.
        if let Some(t) = self.closer.take() {
            let _ = t.join();
        }
    }
}

struct Slot {
    rt: Arc<Runtime>,
    map: HashMap<FileKey, Entry>,
    read_op: Option<u64>,
    retiring: Option<Sender<()>>,
    /// Pause before the next read after failed ones (EMFILE, ENFILE, ...);
    /// zero while reads succeed.
    backoff: Duration,
    /// Plain loop: not polled before this time (after a failed read).
    resume_at: Option<Instant>,
}

impl Slot {
    fn new(rt: Arc<Runtime>) -> Slot {
        Slot { rt, map: HashMap::new(), read_op: None, retiring: None, backoff: Duration::ZERO, resume_at: None }
    }

    /// A read failed with `errno`: counts it and returns how long to wait
    /// before reading again (doubling, up to [`MAX_READ_BACKOFF`]). The
    /// kernel has already denied the event it could not hand over (for
    /// EMFILE/ENFILE: no fd for it), so nothing waits on the pause but
    /// later openers.
    fn read_failed(&mut self, errno: i32) -> Duration {
        let name = match errno {
            libc::EMFILE => "EMFILE",
            libc::ENFILE => "ENFILE",
            libc::ENOMEM => "ENOMEM",
            libc::EFAULT => "EFAULT",
            _ => "other",
        };
        metrics::counter!(m::READ_ERRORS, "errno" => name).increment(1);
        let first = self.backoff.is_zero();
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(1), MAX_READ_BACKOFF);
        if first || self.backoff == MAX_READ_BACKOFF {
            tracing::error!(
                guard = %self.rt.info.guard,
                error = %std::io::Error::from_raw_os_error(errno),
                retry_in = ?self.backoff,
                "read from fanotify group failed; backing off"
            );
        }
        self.backoff
    }
}

/// A read to arm again later: after a failed read (backoff) or when the
/// ring refused it.
struct Rearm {
    serial: u64,
    buf: Vec<u8>,
    due: Instant,
    failures: u32,
}

/// Work for the closer thread.
enum CloseJob {
    /// Close this instance's groups (drop the last reference).
    Close(Box<Runtime>),
    /// Reply once everything sent before is closed.
    Barrier(Sender<()>),
}

/// The one long-lived thread that closes groups. Closing a fanotify group
/// waits for every opener blocked on *any* group sharing that object's
/// marks, and those openers may be waiting for the enforcement thread to
/// answer another group: closing on the enforcement thread could deadlock,
/// so it never does.
fn closer(jobs: Receiver<CloseJob>) {
    for job in jobs {
        match job {
            CloseJob::Close(rt) => drop(rt),
            CloseJob::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Runs `f`; a panic aborts the process. An unwinding enforcement or
/// watcher thread would leave its groups open with nobody reading them,
/// and every opener of a guarded file would hang; when the process dies
/// the kernel closes the groups and lets every pending event through.
pub(crate) fn abort_on_panic<T>(thread: &str, f: impl FnOnce() -> T) -> T {
    quiet_panics_on_engine_threads();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            // The panic hook has printed the message and location.
            eprintln!("janus: {thread} thread panicked; aborting so the kernel releases every guarded opener");
            std::process::abort();
        }
    }
}

/// Makes the panic hook print only the message and location (no
/// backtrace) for the engine's own threads. Printing a backtrace opens the
/// running binary to symbolize it; when the binary sits on a mount this
/// engine has marked (`janusd standalone` guarding host paths), that open
/// would wait for the very thread that is panicking, and the process would
/// hang instead of aborting, with every guarded opener behind it. Other
/// threads keep the previous hook.
fn quiet_panics_on_engine_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let current = std::thread::current();
            match current.name() {
                Some(name) if name.starts_with("janus-") => eprintln!("janus: thread {name} panicked: {info}"),
                _ => previous(info),
            }
        }));
    });
}

/// Per-batch buffers, recycled.
#[derive(Default)]
struct Batch {
    responses: Vec<u8>,
    fds: Vec<OwnedFd>,
    iov: Vec<libc::iovec>,
}

/// Decision making shared by both backends.
struct Decider {
    pid: u32,
    /// Events of other processes decided (for fault injection).
    decided: u64,
    panic_after: Option<u64>,
    stall_after: Option<u64>,
    procs: HashMap<i32, (crate::audit::ProcessInfo, Instant)>,
    queue: Queue,
    path: Vec<u8>,
    /// The path read again after caching (see [`Decider::resolve`]).
    recheck: Vec<u8>,
    batch_size: metrics::Histogram,
    latency: metrics::Histogram,
    overflows: metrics::Counter,
    stale: metrics::Counter,
    cache_inserts: metrics::Counter,
    cache_takebacks: metrics::Counter,
}

impl Decider {
    fn new(queue: Queue) -> Decider {
        Decider {
            pid: sys::getpid(),
            decided: 0,
            panic_after: crate::fault::faults().panic_after_events,
            stall_after: crate::fault::faults().stall_after_events,
            procs: HashMap::new(),
            queue,
            path: vec![0; libc::PATH_MAX as usize + 1],
            recheck: vec![0; libc::PATH_MAX as usize + 1],
            batch_size: metrics::histogram!(m::BATCH_SIZE),
            latency: metrics::histogram!(m::DECISION_SECONDS),
            overflows: metrics::counter!(m::QUEUE_OVERFLOWS),
            stale: metrics::counter!(m::STALE_RESPONSES),
            cache_inserts: metrics::counter!(m::CACHE_INSERTS),
            cache_takebacks: metrics::counter!(m::CACHE_TAKEBACKS, "why" => "renamed"),
        }
    }

    /// Decides every event in `buf`, appending responses and event fds.
    fn batch(&mut self, slot: &mut Slot, buf: &[u8], out: &mut Batch) {
        let start = Instant::now();
        let mut n = 0u64;
        for (ev, _) in event::events(buf) {
            if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
                self.overflows.increment(1);
                continue;
            }
            if ev.fd < 0 {
                continue;
            }
            let fd = sys::own_fd(ev.fd);
            let allow = self.decide(slot, &ev, fd.as_raw_fd());
            event::push_response(&mut out.responses, ev.fd, allow);
            out.fds.push(fd);
            n += 1;
        }
        if n > 0 {
            self.batch_size.record(n as f64);
            self.latency.record(start.elapsed().as_secs_f64());
        }
    }

    fn decide(&mut self, slot: &mut Slot, ev: &Event, fd: RawFd) -> bool {
        let Some(kind) = Kind::from_fan_mask(ev.mask) else {
            return true;
        };
        if ev.pid as u32 == self.pid {
            // Our own walks and reads: never wait on ourselves.
            return true;
        }
        self.decided += 1;
        if self.panic_after.is_some_and(|n| self.decided >= n) {
            panic!("injected panic after {} events (JANUS_FAULT_INJECT)", self.decided);
        }
        if self.stall_after.is_some_and(|n| self.decided >= n) {
            tracing::error!("injected stall (JANUS_FAULT_INJECT): the enforcement thread stops");
            loop {
                std::thread::park();
            }
        }
        let id = sys::file_id(fd).ok();
        let key = id.map(|i| FileKey { dev: i.dev, ino: i.ino });
        let known = key.and_then(|k| slot.map.get(&k)).filter(|e| id.is_none_or(|i| i.birth == e.birth)).cloned();
        let entry = match known {
            Some(e) => e,
            None => self.resolve(slot, fd, id, key),
        };
        let rt = &slot.rt;
        let policy = &rt.policy;
        let mut kind = kind;
        let mut deciding = entry.decision.rule(kind);
        if kind == Kind::Open
            && let Some(r) = policy.denies_exec(&entry.decision)
            // Read now, not from the per-pid cache: a process that opened
            // the file a moment ago may have exec'd the loader since.
            && janus_procfs::ProcFs::default()
                .exe(ev.pid as u32)
                .is_ok_and(|exe| exe.to_str().is_some_and(is_dynamic_loader))
        {
            // `ld.so FILE`: the loader opens FILE to map and run it. That
            // is an exec, decided by the exec rule.
            kind = Kind::Exec;
            deciding = Some(r);
        }
        let (outcome, log, rule) = match deciding {
            None => (Outcome::Allow, false, None),
            Some(r) => {
                let subject = policy.subject_of(r);
                match policy.rule(r).verdict {
                    Verdict::Allow => (Outcome::Allow, subject.audit, Some(r)),
                    Verdict::Deny if subject.auto_allow_owner && is_owned(ev.pid, &rt.owners) => {
                        (Outcome::Allow, subject.audit, Some(r))
                    }
                    Verdict::Deny if runs_allowed_exe(ev.pid, &rt.exes[policy.rule(r).subject as usize]) => {
                        (Outcome::Allow, subject.audit, Some(r))
                    }
                    Verdict::Deny if policy.mode == Mode::Audit => (Outcome::WouldDeny, true, Some(r)),
                    Verdict::Deny => (Outcome::Deny, true, Some(r)),
                }
            }
        };
        let oi = match outcome {
            Outcome::Allow => 0,
            Outcome::Deny => 1,
            Outcome::WouldDeny => 2,
        };
        rt.counters.events[kind as usize][oi].increment(1);
        if log {
            let (rule_text, tags) = match rule {
                Some(r) => (Some(rt.rule_text[r as usize].clone()), policy.subject_of(r).tags.clone()),
                None => (None, Default::default()),
            };
            let process = (outcome != Outcome::Allow).then(|| self.process_info(ev.pid));
            self.queue.push(Pending {
                time: SystemTime::now(),
                target: rt.info.clone(),
                pid: ev.pid,
                path: entry.path.clone(),
                is_dir: entry.is_dir,
                kind,
                outcome,
                mode: policy.mode,
                rule: rule_text,
                tags,
                log_format: policy.log_format.clone(),
                process,
            });
        }
        outcome != Outcome::Deny
    }

    /// First sight of an inode: decide by its path, then remember the
    /// decision (in the kernel as an ignore mark when it is an unconditional
    /// allow, else in the map).
    fn resolve(&mut self, slot: &mut Slot, fd: RawFd, id: Option<sys::FileId>, key: Option<FileKey>) -> Entry {
        let rt = &slot.rt;
        let is_dir = id.is_some_and(|i| i.is_dir);
        let len = match sys::fd_path(fd, &mut self.path) {
            Ok(len) => len,
            Err(e) => {
                // No path (longer than the kernel prints, or the fd is
                // gone): the object may be in a denied tree, so it is
                // denied, and never remembered, so the next open tries again.
                tracing::debug!(error = %e, "cannot resolve an event's path; failing closed");
                metrics::counter!(m::ERRORS, "op" => "resolve_path").increment(1);
                return Entry {
                    path: Arc::from(UNRESOLVED_PATH),
                    birth: id.map_or(0, |i| i.birth),
                    is_dir,
                    decision: Decision::fail_closed(&rt.policy),
                };
            }
        };
        let mut shown = &self.path[..len];
        if let Some(p) = shown.strip_suffix(b" (deleted)") {
            shown = p;
        }
        let (inner, decision) = match crate::engine::in_root(shown, &rt.root_shown) {
            Some(inner) => {
                let mut scratch = Scratch::default();
                (inner, rt.policy.decide(inner, is_dir, &mut scratch))
            }
            // Outside the instance's root (a root that is a directory, not
            // a mount, shares its mount with files outside it): this
            // instance's rules, written for paths inside the root, never
            // apply there.
            _ => (shown, Decision::default()),
        };
        let entry = Entry {
            path: Arc::from(String::from_utf8_lossy(inner).as_ref()),
            birth: id.map_or(0, |i| i.birth),
            is_dir,
            decision,
        };
        let (needs, cacheable) = classify(&rt.policy, &decision);
        let single_file = id.is_some_and(|i| i.is_file && i.nlink == 1);
        let mut remember = !needs.is_empty() || !single_file;
        if single_file && !cacheable.is_empty() {
            if crate::marks::cache_allowed(rt.perm.as_fd(), cacheable.fan_mask(), fd).is_ok() {
                // Renamed or linked to another name while this was decided?
                // Then the watcher's news of it may already have been
                // handled, before the mark existed: look again now that it
                // does, and take the cache back unless the name is the same.
                // (Renamed after this look, the watcher's news comes after
                // the mark and takes it back.)
                let again = sys::fd_path(fd, &mut self.recheck).ok();
                let nlink = sys::file_id(fd).map_or(0, |i| i.nlink);
                if again.is_some_and(|n| self.recheck[..n] == self.path[..len]) && nlink == 1 {
                    self.cache_inserts.increment(1);
                } else {
                    crate::marks::uncache(rt.perm.as_fd(), &event_fd_path(fd));
                    self.cache_takebacks.increment(1);
                    remember = true;
                }
            } else {
                remember = true;
            }
        }
        if remember
            && let Some(k) = key
            && slot.map.len() < MAX_ENTRIES
        {
            slot.map.insert(k, entry.clone());
        }
        entry
    }
}

impl Decider {
    /// Process details for a denial, read while the process still waits on
    /// us. Cached for a second per pid, so a process hammering a denied file
    /// costs three /proc reads per second, not per event.
    fn process_info(&mut self, pid: i32) -> crate::audit::ProcessInfo {
        let now = Instant::now();
        if let Some((info, at)) = self.procs.get(&pid)
            && now.duration_since(*at) < PROCESS_INFO_TTL
        {
            return info.clone();
        }
        if self.procs.len() >= 4096 {
            self.procs.retain(|_, (_, at)| now.duration_since(*at) < PROCESS_INFO_TTL);
        }
        let info = crate::audit::process_info(pid);
        self.procs.insert(pid, (info.clone(), now));
        info
    }
}

/// How long process details of a pid are reused.
const PROCESS_INFO_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether `exe` (a process's executable path) is a dynamic loader by its
/// name (`ld-linux-x86-64.so.2`, `ld-linux-aarch64.so.1`, `ld-musl-*.so.1`,
/// `ld64.so.2`, `ld.so`). A renamed copy of a loader, like any program that
/// maps code itself, is a reader to fanotify; `deny` on `open` closes that
/// (docs/engine.md, "What exec guards see").
fn is_dynamic_loader(exe: &str) -> bool {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    let name = name.strip_suffix(" (deleted)").unwrap_or(name);
    name == "ld.so" || name.starts_with("ld64.so") || (name.starts_with("ld-") && name.contains(".so"))
}

/// `/proc/self/fd/N` of an event fd (the engine owns it until its response
/// is sent).
fn event_fd_path(fd: RawFd) -> std::ffi::CString {
    std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a number")
}

/// Whether process `pid` runs one of `exes` (`allowProcesses`), read now:
/// the opener is blocked in its open, so its pid names it, and if another
/// of its threads execs meanwhile, the kernel kills the opener first.
fn runs_allowed_exe(pid: i32, exes: &[crate::root::ExeId]) -> bool {
    !exes.is_empty() && crate::root::ExeId::of_process(pid as u32).is_some_and(|id| exes.contains(&id))
}

/// Whether `pid` is one of `owners` or descends from one. An ancestor with
/// an owner's pid after that owner exited is a process that reused the pid:
/// not the owner.
///
/// The parent links are not all descent: an owner that is its pid
/// namespace's init adopts every orphan of the namespace, including those
/// of processes that entered it from outside (`kubectl exec`, `nsenter`):
/// `sh -c '(sleep 1; cat secret) &'` leaves a child whose parent is then
/// the owner. Such a link counts only when the owner leads its own session
/// and the child is in it. Sessions are inherited by fork alone (`setsid()`
/// starts a new one), so the members of the owner's session are its
/// descendants, while runtimes start every exec'd process in a session of
/// its own (runc's nsexec calls `setsid()`). The price: a descendant that
/// starts its own session and is then orphaned is no longer the owner's
/// (docs/guard-format.md, `autoAllowOwner`). Subreapers only adopt their
/// own descendants, so links to any other parent are descent.
fn is_owned(pid: i32, owners: &[crate::engine::Owner]) -> bool {
    if owners.is_empty() {
        return false;
    }
    let mut p = pid as u32;
    let proc = janus_procfs::ProcFs::default();
    let mut child: Option<janus_procfs::Stat> = None;
    for _ in 0..128 {
        let Ok(st) = proc.stat(p) else {
            return false;
        };
        if let Some(o) = owners.iter().find(|o| o.pid == p) {
            let adopted = match &child {
                Some(c) if o.reaper => !(st.session == o.pid && c.session == o.pid),
                _ => false,
            };
            return !adopted && o.is(p);
        }
        match st.ppid {
            pp if pp > 0 && pp != p => p = pp,
            _ => return false,
        }
        child = Some(st);
    }
    false
}

struct WriteCtx {
    rt: Arc<Runtime>,
    fds: Vec<OwnedFd>,
}

struct Loop {
    rx: Receiver<Command>,
    wake: Arc<OwnedFd>,
    slots: HashMap<u64, Slot>,
    decider: Decider,
    pool: Vec<Batch>,
    /// Where groups go to be closed (see [`closer`]).
    closer: Sender<CloseJob>,
    heartbeat: Heartbeat,
    /// Reads waiting to be armed again (ring loop).
    rearm: Vec<Rearm>,
    submit_errors: metrics::Counter,
}

impl Loop {
    /// Drops a reference to a guard instance. If it is the last one, the
    /// group is closed on a short-lived thread of its own: closing a fanotify
    /// group waits for every opener that is blocked on *any* group sharing
    /// that object's marks, and those openers may be waiting for this very
    /// thread to answer another group. Closing here would deadlock.
    fn release(&mut self, rt: Arc<Runtime>) {
        if let Some(last) = Arc::into_inner(rt)
            && let Err(crossbeam_channel::SendError(CloseJob::Close(last))) =
                self.closer.send(CloseJob::Close(Box::new(last)))
        {
            // The closer thread is gone (it cannot be, short of a panic,
            // which aborts): never close here; keep the group open instead.
            // Its marks are flushed and its queue answered, so nothing waits.
            tracing::error!(guard = %last.info.guard, "group closer thread gone; leaking the group");
            std::mem::forget(last);
        }
    }

    /// Stop: no new events (marks flushed), answer what is queued, then
    /// close every group in parallel and wait for the closes.
    fn shutdown(&mut self) {
        for slot in self.slots.values() {
            flush_marks(&slot.rt);
        }
        let serials: Vec<u64> = self.slots.keys().copied().collect();
        for serial in serials {
            self.finish_retire(serial);
        }
        let (done, wait) = crossbeam_channel::bounded(1);
        if self.closer.send(CloseJob::Barrier(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    fn take_batch(&mut self) -> Batch {
        self.pool.pop().unwrap_or_default()
    }

    fn give_batch(&mut self, mut b: Batch) {
        b.responses.clear();
        b.fds.clear();
        if self.pool.len() < 64 {
            self.pool.push(b);
        }
    }

    fn merge_entries(&mut self, batch: EntryBatch) {
        let Some(slot) = self.slots.get_mut(&batch.serial) else {
            return;
        };
        for fd in &batch.uncache {
            crate::marks::uncache(slot.rt.perm.as_fd(), &sys::fd_magic_path(fd.as_fd()));
        }
        for (key, entry) in batch.entries {
            let full = slot.map.len() >= MAX_ENTRIES;
            match slot.map.get_mut(&key) {
                Some(old) if old.birth == entry.birth => {
                    let merged = merge_deny_wins(&slot.rt.policy, old.decision, entry.decision);
                    if merged != old.decision {
                        old.path = entry.path;
                    }
                    old.decision = merged;
                }
                Some(old) => *old = entry,
                None if !full => {
                    slot.map.insert(key, entry);
                }
                None => {}
            }
        }
    }

    /// Drains a group synchronously (after its marks are flushed), answers
    /// what is left, and drops it; the kernel allows anything that arrives
    /// after the group is closed, but with marks flushed nothing new can.
    fn finish_retire(&mut self, serial: u64) {
        let Some(mut slot) = self.slots.remove(&serial) else {
            return;
        };
        let mut buf = vec![0u8; READ_BUF];
        let mut batch = self.take_batch();
        loop {
            match sys::read(slot.rt.perm.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    self.decider.batch(&mut slot, &buf[..n], &mut batch);
                    write_all_sync(&slot.rt, &mut batch, &self.decider.stale);
                    batch.fds.clear();
                    batch.responses.clear();
                }
                _ => break,
            }
        }
        self.give_batch(batch);
        if let Some(ack) = slot.retiring.take() {
            let _ = ack.send(());
        }
        self.release(slot.rt);
    }

    /// Handles queued commands. Returns false on Stop.
    fn commands(&mut self, ring: &mut Option<&mut Ring>) -> bool {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::Add(serial, rt, ack) => {
                    self.slots.insert(serial, Slot::new(rt));
                    if let Some(ring) = ring.as_deref_mut() {
                        self.arm_read(ring, serial, vec![0u8; READ_BUF], 0);
                    }
                    let _ = ack.send(());
                }
                Command::Entries(batch) => self.merge_entries(batch),
                Command::Retire(serial, ack) => {
                    let Some(slot) = self.slots.get_mut(&serial) else {
                        let _ = ack.send(());
                        continue;
                    };
                    flush_marks(&slot.rt);
                    slot.retiring = Some(ack);
                    match (ring.as_deref_mut(), slot.read_op) {
                        (Some(ring), Some(op)) => {
                            // Finished when the read completes (cancelled or not).
                            if ring.cancel(TAG_CANCEL, op).is_err() {
                                self.finish_retire(serial);
                            }
                        }
                        _ => self.finish_retire(serial),
                    }
                }
                Command::Stop => return false,
            }
        }
        true
    }

    /// Arms the read of group `serial` (or of the wake-up eventfd). A read
    /// the ring refuses is retried with a growing pause; a group whose read
    /// is refused [`MAX_REARM_FAILURES`] times in a row is retired (marks
    /// flushed, queue answered, group closed) rather than left unread,
    /// which would hang its openers.
    fn arm_read(&mut self, ring: &mut Ring, serial: u64, buf: Vec<u8>, failures: u32) {
        let fd = if serial == TAG_WAKE {
            self.wake.as_raw_fd()
        } else {
            match self.slots.get(&serial) {
                Some(slot) if slot.retiring.is_none() => slot.rt.perm.as_raw_fd(),
                Some(_) => return self.finish_retire(serial),
                None => return,
            }
        };
        match ring.read(serial, fd, buf) {
            Ok(op) => {
                if let Some(slot) = self.slots.get_mut(&serial) {
                    slot.read_op = Some(op);
                }
            }
            Err(Refused { error, buf, .. }) => {
                self.submit_errors.increment(1);
                let failures = failures + 1;
                if serial != TAG_WAKE && failures >= MAX_REARM_FAILURES {
                    self.fail_group(serial, &format!("its read could not be submitted {failures} times ({error})"));
                    return;
                }
                tracing::warn!(serial, failures, %error, "cannot arm a read; retrying");
                let pause = Duration::from_millis(10 * u64::from(failures)).min(MAX_READ_BACKOFF);
                self.rearm.push(Rearm { serial, buf, due: Instant::now() + pause, failures });
            }
        }
    }

    /// Gives up on a group the loop cannot serve: its marks are flushed, what
    /// is queued is answered, and the group is closed. The guard instance is
    /// no longer enforced; that is logged and counted
    /// (`janus_groups_failed_total`).
    fn fail_group(&mut self, serial: u64, why: &str) {
        if let Some(slot) = self.slots.get(&serial) {
            tracing::error!(
                guard = %slot.rt.info.guard,
                "guard instance retired: {why}; its marks are flushed and its queue answered, so nothing waits on it, \
                 but it is NOT enforced until it is applied again"
            );
            metrics::counter!(m::GROUPS_FAILED).increment(1);
            flush_marks(&slot.rt);
            self.finish_retire(serial);
        }
    }

    /// Arms the reads whose pause is over; returns how long until the next.
    fn rearm_due(&mut self, ring: &mut Ring) -> Option<Duration> {
        let now = Instant::now();
        let (due, later): (Vec<Rearm>, Vec<Rearm>) =
            std::mem::take(&mut self.rearm).into_iter().partition(|r| r.due <= now);
        self.rearm = later;
        for r in due {
            self.arm_read(ring, r.serial, r.buf, r.failures);
        }
        self.rearm.iter().map(|r| r.due.saturating_duration_since(now)).min()
    }

    /// Sends a batch's responses through the ring, or, if the ring refuses,
    /// synchronously: responses are never dropped.
    fn send_responses(
        &mut self,
        ring: &mut Ring,
        writes: &mut HashMap<u64, WriteCtx>,
        next_write: &mut u64,
        ctx: WriteCtx,
        responses: Vec<u8>,
        iov: Vec<libc::iovec>,
    ) {
        let tag = *next_write;
        *next_write += 1;
        let fd = ctx.rt.perm.as_raw_fd();
        writes.insert(tag, ctx);
        if let Err(Refused { error, buf, iov }) = ring.writev_chunks(tag, fd, responses, RESPONSE_LEN, iov) {
            self.submit_errors.increment(1);
            tracing::warn!(%error, "cannot submit responses through the ring; writing them directly");
            let ctx = writes.remove(&tag).expect("just inserted");
            let mut batch = Batch { responses: buf, fds: ctx.fds, iov };
            write_all_sync(&ctx.rt, &mut batch, &self.decider.stale);
            self.release(ctx.rt);
            self.give_batch(batch);
        }
    }

    fn run_ring(&mut self, mut ring: Ring) {
        let mut next_write = WRITE_TAG_BASE;
        let mut writes: HashMap<u64, WriteCtx> = HashMap::new();
        let mut cqes: Vec<Completion> = Vec::new();
        self.arm_read(&mut ring, TAG_WAKE, vec![0u8; 8], 0);
        let mut enter_errors = 0u64;
        loop {
            self.heartbeat.beat(Beater::Enforcement);
            let wait = self.rearm_due(&mut ring).map_or(IDLE_TICK, |d| d.min(IDLE_TICK));
            if let Err(e) = ring.submit_and_wait_timeout(1, wait) {
                enter_errors += 1;
                self.submit_errors.increment(1);
                if enter_errors.is_power_of_two() {
                    tracing::error!(error = %e, times = enter_errors, "io_uring_enter failed");
                }
                // Never spin on a failing ring.
                std::thread::sleep(Duration::from_millis(1));
            } else {
                enter_errors = 0;
            }
            ring.completions(&mut cqes);
            for c in cqes.drain(..) {
                match c.kind {
                    OpKind::Read if c.tag == TAG_WAKE => {
                        if !self.commands(&mut Some(&mut ring)) {
                            drop(ring);
                            for (_, ctx) in writes.drain() {
                                self.release(ctx.rt);
                            }
                            self.shutdown();
                            return;
                        }
                        self.arm_read(&mut ring, TAG_WAKE, c.buf, 0);
                    }
                    OpKind::Read => {
                        let serial = c.tag;
                        let mut batch = self.take_batch();
                        let Some(slot) = self.slots.get_mut(&serial) else {
                            continue;
                        };
                        slot.read_op = None;
                        let mut pause = Duration::ZERO;
                        if c.result > 0 {
                            slot.backoff = Duration::ZERO;
                            self.decider.batch(slot, &c.buf[..c.result as usize], &mut batch);
                        } else if c.result < 0
                            && c.result != -libc::EAGAIN
                            && c.result != -libc::ECANCELED
                            && c.result != -libc::EINTR
                        {
                            pause = slot.read_failed(-c.result);
                        }
                        let retiring = slot.retiring.is_some();
                        // Only a write holds a reference past this point: a
                        // clone dropped here after `finish_retire` below
                        // released the slot's would be the last one, and
                        // close the group on this thread (a deadlock, see
                        // `release`).
                        let rt = (!batch.responses.is_empty()).then(|| slot.rt.clone());
                        if !retiring {
                            if pause.is_zero() {
                                self.arm_read(&mut ring, serial, c.buf, 0);
                            } else {
                                self.rearm.push(Rearm { serial, buf: c.buf, due: Instant::now() + pause, failures: 0 });
                            }
                        }
                        if let Some(rt) = rt {
                            let responses = std::mem::take(&mut batch.responses);
                            let iov = std::mem::take(&mut batch.iov);
                            let fds = std::mem::take(&mut batch.fds);
                            let ctx = WriteCtx { rt, fds };
                            self.send_responses(&mut ring, &mut writes, &mut next_write, ctx, responses, iov);
                        }
                        self.give_batch(batch);
                        if retiring {
                            self.finish_retire(serial);
                        }
                    }
                    OpKind::Writev => {
                        let Some(ctx) = writes.remove(&c.tag) else {
                            continue;
                        };
                        let total = c.buf.len() as i32;
                        if c.result == total {
                            for fd in ctx.fds {
                                if !ring.close(TAG_CANCEL, fd) {
                                    self.submit_errors.increment(1);
                                }
                            }
                            self.release(ctx.rt);
                            self.give_batch(Batch { responses: c.buf, fds: Vec::new(), iov: c.iov });
                            continue;
                        }
                        // One response was refused (its event is gone):
                        // skip it and send the rest.
                        self.decider.stale.increment(1);
                        let done = if c.result > 0 { c.result as usize / RESPONSE_LEN } else { 0 };
                        let mut rest = c.buf;
                        rest.drain(..((done + 1) * RESPONSE_LEN).min(rest.len()));
                        if rest.is_empty() {
                            for fd in ctx.fds {
                                if !ring.close(TAG_CANCEL, fd) {
                                    self.submit_errors.increment(1);
                                }
                            }
                            self.release(ctx.rt);
                            continue;
                        }
                        self.send_responses(&mut ring, &mut writes, &mut next_write, ctx, rest, c.iov);
                    }
                    OpKind::Close | OpKind::Cancel => {}
                }
            }
        }
    }

    fn run_plain(&mut self) {
        let mut buf = vec![0u8; READ_BUF];
        let mut pollfds: Vec<libc::pollfd> = Vec::new();
        let mut serials: Vec<u64> = Vec::new();
        let mut wakebuf = [0u8; 8];
        loop {
            pollfds.clear();
            serials.clear();
            pollfds.push(libc::pollfd { fd: self.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            self.heartbeat.beat(Beater::Enforcement);
            let now = Instant::now();
            let mut timeout = IDLE_TICK;
            for (serial, slot) in &mut self.slots {
                if let Some(at) = slot.resume_at {
                    if at > now {
                        timeout = timeout.min(at - now);
                        continue; // backing off after a failed read
                    }
                    slot.resume_at = None;
                }
                pollfds.push(libc::pollfd { fd: slot.rt.perm.as_raw_fd(), events: libc::POLLIN, revents: 0 });
                serials.push(*serial);
            }
            if let Err(e) = sys::poll_in(&mut pollfds, timeout.as_millis().max(1) as i32) {
                tracing::error!(error = %e, "poll failed");
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if pollfds[0].revents != 0 {
                let _ = sys::read(self.wake.as_raw_fd(), &mut wakebuf);
                if !self.commands(&mut None) {
                    self.shutdown();
                    return;
                }
            }
            for (i, serial) in serials.iter().enumerate() {
                if pollfds[i + 1].revents == 0 {
                    continue;
                }
                let mut batch = self.take_batch();
                let Some(slot) = self.slots.get_mut(serial) else {
                    continue;
                };
                match sys::read(slot.rt.perm.as_raw_fd(), &mut buf) {
                    Ok(n) if n > 0 => {
                        slot.backoff = Duration::ZERO;
                        self.decider.batch(slot, &buf[..n], &mut batch);
                        write_all_sync(&slot.rt, &mut batch, &self.decider.stale);
                    }
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => {}
                    Err(e) => {
                        let pause = slot.read_failed(e.raw_os_error().unwrap_or(0));
                        slot.resume_at = Some(Instant::now() + pause);
                    }
                }
                self.give_batch(batch);
            }
        }
    }
}

/// Writes a batch's responses with `writev`, skipping refused entries, then
/// closes the event fds.
fn write_all_sync(rt: &Runtime, batch: &mut Batch, stale: &metrics::Counter) {
    let mut off = 0;
    while off < batch.responses.len() {
        let rest = &batch.responses[off..];
        match sys::writev_chunks(rt.perm.as_raw_fd(), rest, RESPONSE_LEN, &mut batch.iov) {
            Ok(n) if n == rest.len() => break,
            Ok(n) => {
                stale.increment(1);
                off += (n / RESPONSE_LEN + 1) * RESPONSE_LEN;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                stale.increment(1);
                off += RESPONSE_LEN;
            }
        }
    }
    batch.fds.clear();
}

/// Removes every mark of a group so no new event can be queued on it.
fn flush_marks(rt: &Runtime) {
    for flags in [
        libc::FAN_MARK_FLUSH,
        libc::FAN_MARK_FLUSH | libc::FAN_MARK_MOUNT,
        libc::FAN_MARK_FLUSH | libc::FAN_MARK_FILESYSTEM,
    ] {
        let _ = fanotify::mark(rt.perm.as_fd(), flags, 0, None, None);
    }
    rt.counters.marks.set(0.0);
}

#[cfg(test)]
mod tests {
    use super::is_dynamic_loader;

    #[test]
    fn dynamic_loaders_by_name() {
        for exe in [
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "/lib/ld-linux-aarch64.so.1",
            "/lib/ld-musl-x86_64.so.1",
            "/lib64/ld64.so.2",
            "/usr/bin/ld.so",
            "/lib/ld-linux.so.2 (deleted)",
        ] {
            assert!(is_dynamic_loader(exe), "{exe}");
        }
        for exe in ["/usr/bin/cat", "/usr/bin/ld", "/usr/bin/ldd", "/opt/ld-tool", "/usr/lib/libld-x.so"] {
            assert!(!is_dynamic_loader(exe), "{exe}");
        }
    }
}
