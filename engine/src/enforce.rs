//! The enforcement thread: reads permission events from every guard
//! instance's group, decides each, answers.
//!
//! Two backends share the decision code ([`Decider`], in `decide.rs`) and
//! the loop state and its bookkeeping here ([`Loop`]: commands, retiring
//! and failing groups, recycled buffers, closing groups off this thread):
//! - io_uring (`enforce/ring.rs`): one read per group in flight; when a
//!   read completes, every event in it is decided and all responses go out
//!   in *one* `writev` (one 8-byte iovec per response), the read is
//!   re-armed in the same submission, and the batch's event fds are closed
//!   through the ring once the responses are written;
//! - plain (`enforce/plain.rs`): `poll` + `read` + `writev` + `close`,
//!   where io_uring is missing.
//!
//! No allocation per event on the hot path: read buffers, response buffers
//! and fd lists are recycled; a path is allocated only the first time an
//! inode is seen (then it is cached, in user space or in the kernel).

mod plain;
mod ring;

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::audit::AuditQueue;
use crate::cache;
use crate::decide::{Batch, Decider, MAX_ENTRIES};
use crate::event::RESPONSE_LEN;
use crate::heartbeat::Heartbeat;
use crate::instance::{ENFORCEMENT_THREAD, EngineError, Entry, EntryBatch, FileKey, Runtime};
use crate::metrics as m;
use crate::policy::merge_deny_wins;
use crate::sys::uring::Ring;
use crate::sys::{self, fanotify};

/// Bytes read from a group at once (about 680 events).
const READ_BUF: usize = 16 * 1024;
/// Longest pause before reading a group again after a failed read.
const MAX_READ_BACKOFF: Duration = Duration::from_millis(100);
/// The loop wakes at least this often even when idle (it is how a stuck
/// thread would be told from an idle one).
const IDLE_TICK: Duration = Duration::from_secs(1);

/// The enforcement thread's name.
const THREAD_NAME: &str = ENFORCEMENT_THREAD;

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
        queue: AuditQueue,
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
            cache::uncache(slot.rt.perm.as_fd(), &sys::fd_magic_path(fd.as_raw_fd()));
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
                    self.decider.batch(&slot.rt, &mut slot.map, &buf[..n], &mut batch);
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
                            if ring.cancel(ring::TAG_CANCEL, op).is_err() {
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
