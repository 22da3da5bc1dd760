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
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::audit::{Outcome, Pending};
use crate::engine::{Backend, EngineError, Queue, Runtime};
use crate::event::{self, Event, RESPONSE_LEN};
use crate::marks::{classify, merge_deny_wins};
use crate::policy::{Decision, Scratch, Verdict};
use crate::sys::uring::{Completion, OpKind, Ring};
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
    pub fn start(backend: Option<Backend>, queue: Queue) -> Result<(Enforcer, Backend), EngineError> {
        let wake = Arc::new(sys::eventfd().map_err(|e| EngineError::io("eventfd", e))?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let wake2 = wake.clone();
        // The ring is created on the enforcement thread (it is not Send);
        // the thread reports which backend it ended up with.
        let (chosen_tx, chosen_rx) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("janus-enforce".into())
            .spawn(move || {
                let ring = match backend {
                    Some(Backend::Plain) => None,
                    Some(Backend::IoUring) => match Ring::new(1024) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            let _ = chosen_tx.send(Err(EngineError::io("io_uring_setup", e)));
                            return;
                        }
                    },
                    None => match Ring::new(1024) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            tracing::warn!(error = %e, "io_uring unavailable; using the plain read/writev loop");
                            None
                        }
                    },
                };
                let _ = chosen_tx.send(Ok(if ring.is_some() { Backend::IoUring } else { Backend::Plain }));
                let decider = Decider::new(queue);
                let mut lp =
                    Loop { rx, wake: wake2, slots: HashMap::new(), decider, pool: Vec::new(), closers: Vec::new() };
                match ring {
                    Some(ring) => lp.run_ring(ring),
                    None => lp.run_plain(),
                }
            })
            .map_err(|e| EngineError::io("spawn enforcement thread", e))?;
        let chosen = chosen_rx.recv().map_err(|_| EngineError::Stopped)??;
        Ok((Enforcer { tx, wake, thread: Some(thread) }, chosen))
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
    }
}

struct Slot {
    rt: Arc<Runtime>,
    map: HashMap<FileKey, Entry>,
    read_op: Option<u64>,
    retiring: Option<Sender<()>>,
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
    procs: HashMap<i32, (crate::audit::ProcessInfo, Instant)>,
    queue: Queue,
    path: Vec<u8>,
    batch_size: metrics::Histogram,
    latency: metrics::Histogram,
    overflows: metrics::Counter,
    stale: metrics::Counter,
    cache_inserts: metrics::Counter,
}

impl Decider {
    fn new(queue: Queue) -> Decider {
        Decider {
            pid: sys::getpid(),
            procs: HashMap::new(),
            queue,
            path: vec![0; libc::PATH_MAX as usize + 1],
            batch_size: metrics::histogram!(m::BATCH_SIZE),
            latency: metrics::histogram!(m::DECISION_SECONDS),
            overflows: metrics::counter!(m::QUEUE_OVERFLOWS),
            stale: metrics::counter!(m::STALE_RESPONSES),
            cache_inserts: metrics::counter!(m::CACHE_INSERTS),
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
        let id = sys::file_id(fd).ok();
        let key = id.map(|i| FileKey { dev: i.dev, ino: i.ino });
        let known = key.and_then(|k| slot.map.get(&k)).filter(|e| id.is_none_or(|i| i.birth == e.birth)).cloned();
        let entry = match known {
            Some(e) => e,
            None => self.resolve(slot, fd, id, key),
        };
        let rt = &slot.rt;
        let policy = &rt.policy;
        let (outcome, log, rule) = match entry.decision.rule(kind) {
            None => (Outcome::Allow, false, None),
            Some(r) => {
                let subject = policy.subject_of(r);
                match policy.rule(r).verdict {
                    Verdict::Allow => (Outcome::Allow, subject.audit, Some(r)),
                    Verdict::Deny if subject.auto_allow_owner && is_owned(ev.pid, &rt.owners) => {
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
        let len = sys::fd_path(fd, &mut self.path).unwrap_or(0);
        let mut shown = &self.path[..len];
        if let Some(p) = shown.strip_suffix(b" (deleted)") {
            shown = p;
        }
        let inner = match shown.strip_prefix(rt.root_shown.as_slice()) {
            Some(rest) if rt.root_shown.is_empty() || rest.is_empty() || rest[0] == b'/' => rest,
            _ => shown,
        };
        let inner = if inner.is_empty() { &b"/"[..] } else { inner };
        let is_dir = id.is_some_and(|i| i.is_dir);
        let mut scratch = Scratch::default();
        let decision = rt.policy.decide(inner, is_dir, &mut scratch);
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
            let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_IGNORED_MASK | libc::FAN_MARK_IGNORED_SURV_MODIFY;
            if fanotify::mark_raw_fd(rt.perm.as_fd(), flags, cacheable.fan_mask(), fd).is_ok() {
                self.cache_inserts.increment(1);
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

/// Whether `pid` is one of `owners` or descends from one.
fn is_owned(pid: i32, owners: &[u32]) -> bool {
    if owners.is_empty() {
        return false;
    }
    let mut p = pid as u32;
    let proc = janus_procfs::ProcFs::default();
    for _ in 0..128 {
        if owners.contains(&p) {
            return true;
        }
        match proc.stat(p).map(|s| s.ppid) {
            Ok(pp) if pp > 0 && pp != p => p = pp,
            _ => return false,
        }
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
    closers: Vec<std::thread::JoinHandle<()>>,
}

impl Loop {
    /// Drops a reference to a guard instance. If it is the last one, the
    /// group is closed on a short-lived thread of its own: closing a fanotify
    /// group waits for every opener that is blocked on *any* group sharing
    /// that object's marks, and those openers may be waiting for this very
    /// thread to answer another group. Closing here would deadlock.
    fn release(&mut self, rt: Arc<Runtime>) {
        self.closers.retain(|c| !c.is_finished());
        if let Some(last) = Arc::into_inner(rt) {
            match std::thread::Builder::new().name("janus-close".into()).spawn(move || drop(last)) {
                Ok(h) => self.closers.push(h),
                Err(e) => {
                    tracing::error!(error = %e, "cannot spawn group closer; leaking the group")
                }
            }
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
        for c in std::mem::take(&mut self.closers) {
            let _ = c.join();
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
                    let mut slot = Slot { rt, map: HashMap::new(), read_op: None, retiring: None };
                    if let Some(ring) = ring.as_deref_mut() {
                        match ring.read(serial, slot.rt.perm.as_raw_fd(), vec![0u8; READ_BUF]) {
                            Ok(op) => slot.read_op = Some(op),
                            Err(e) => tracing::error!(error = %e, "cannot arm read on new group"),
                        }
                    }
                    self.slots.insert(serial, slot);
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

    fn run_ring(&mut self, mut ring: Ring) {
        let mut next_write = WRITE_TAG_BASE;
        let mut writes: HashMap<u64, WriteCtx> = HashMap::new();
        let mut cqes: Vec<Completion> = Vec::new();
        if let Err(e) = ring.read(TAG_WAKE, self.wake.as_raw_fd(), vec![0u8; 8]) {
            tracing::error!(error = %e, "cannot arm wake-up read; enforcement stopped");
            return;
        }
        loop {
            if let Err(e) = ring.submit_and_wait(1) {
                tracing::error!(error = %e, "io_uring_enter failed");
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
                        let _ = ring.read(TAG_WAKE, self.wake.as_raw_fd(), c.buf);
                    }
                    OpKind::Read => {
                        let serial = c.tag;
                        let mut batch = self.take_batch();
                        let Some(slot) = self.slots.get_mut(&serial) else {
                            continue;
                        };
                        slot.read_op = None;
                        if c.result > 0 {
                            self.decider.batch(slot, &c.buf[..c.result as usize], &mut batch);
                        } else if c.result < 0
                            && c.result != -libc::EAGAIN
                            && c.result != -libc::ECANCELED
                            && c.result != -libc::EINTR
                        {
                            tracing::error!(guard = %slot.rt.info.guard, error = %std::io::Error::from_raw_os_error(-c.result), "read from fanotify group failed");
                        }
                        let retiring = slot.retiring.is_some();
                        if !retiring {
                            match ring.read(serial, slot.rt.perm.as_raw_fd(), c.buf) {
                                Ok(op) => slot.read_op = Some(op),
                                Err(e) => tracing::error!(error = %e, "cannot re-arm read"),
                            }
                        }
                        if !batch.responses.is_empty() {
                            let rt = slot.rt.clone();
                            let tag = next_write;
                            next_write += 1;
                            let responses = std::mem::take(&mut batch.responses);
                            let iov = std::mem::take(&mut batch.iov);
                            let fds = std::mem::take(&mut batch.fds);
                            let fd = rt.perm.as_raw_fd();
                            writes.insert(tag, WriteCtx { rt, fds });
                            if let Err(e) = ring.writev_chunks(tag, fd, responses, RESPONSE_LEN, iov) {
                                tracing::error!(error = %e, "cannot submit responses");
                            }
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
                                let _ = ring.close(TAG_CANCEL, fd);
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
                                let _ = ring.close(TAG_CANCEL, fd);
                            }
                            self.release(ctx.rt);
                            continue;
                        }
                        let tag = next_write;
                        next_write += 1;
                        let fd = ctx.rt.perm.as_raw_fd();
                        writes.insert(tag, ctx);
                        if let Err(e) = ring.writev_chunks(tag, fd, rest, RESPONSE_LEN, c.iov) {
                            tracing::error!(error = %e, "cannot resubmit responses");
                        }
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
            for (serial, slot) in &self.slots {
                pollfds.push(libc::pollfd { fd: slot.rt.perm.as_raw_fd(), events: libc::POLLIN, revents: 0 });
                serials.push(*serial);
            }
            if let Err(e) = sys::poll_in(&mut pollfds, -1) {
                tracing::error!(error = %e, "poll failed");
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
                if let Ok(n) = sys::read(slot.rt.perm.as_raw_fd(), &mut buf)
                    && n > 0
                {
                    self.decider.batch(slot, &buf[..n], &mut batch);
                    write_all_sync(&slot.rt, &mut batch, &self.decider.stale);
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
