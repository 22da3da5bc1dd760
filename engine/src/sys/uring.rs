//! A small owned-buffer wrapper around `io_uring`.
//!
//! The safety problem with io_uring is that the kernel writes into, or reads
//! from, buffers after `push` returns. Here every buffer handed to an
//! operation is *moved* into the ring's in-flight table and handed back only
//! with that operation's completion, so the memory stays alive and unaliased
//! for as long as the kernel may touch it. `Vec` heap storage does not move
//! when the table grows, so the addresses given to the kernel stay valid.

use std::io;
use std::os::fd::{IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};

/// What a completed operation was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// `read` into the returned buffer.
    Read,
    /// `writev` of the returned buffer's chunks.
    Writev,
    /// `close` of an fd.
    Close,
    /// Cancellation request.
    Cancel,
}

#[derive(Debug)]
struct InFlight {
    tag: u64,
    kind: OpKind,
    buf: Vec<u8>,
    iov: Vec<libc::iovec>,
}

/// A finished operation, with ownership of its buffers returned.
#[derive(Debug)]
pub struct Completion {
    /// The caller's tag given at submission.
    pub tag: u64,
    /// What the operation was.
    pub kind: OpKind,
    /// Syscall-style result: bytes, 0, or `-errno`.
    pub result: i32,
    /// The buffer the operation used (empty for close/cancel).
    pub buf: Vec<u8>,
    /// The iovec array of a writev, returned for reuse.
    pub iov: Vec<libc::iovec>,
}

/// An operation the ring could not take (the submission queue was full and
/// `io_uring_enter` failed). The kernel never saw it, so its buffers come
/// back to the caller, who must still do the work (e.g. answer the events
/// synchronously): nothing is left half-submitted and no slot leaks.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub error: io::Error,
    /// The operation's buffer.
    pub buf: Vec<u8>,
    /// The iovec array of a writev.
    pub iov: Vec<libc::iovec>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// An io_uring instance with an owned-buffer in-flight table.
pub struct Ring {
    ring: IoUring,
    inflight: Vec<Option<InFlight>>,
    free: Vec<usize>,
    /// Operations pushed to the submission queue but not yet handed to the
    /// kernel by `io_uring_enter`.
    queued: usize,
    /// Fault injection: every Nth push is refused (tests only).
    fail_every: Option<u64>,
    pushes: u64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("in_flight", &(self.inflight.len() - self.free.len())).finish()
    }
}

impl Ring {
    /// Creates a ring with `entries` submission slots, for use by the
    /// calling thread only: completion work is deferred until that thread
    /// asks for completions (`DEFER_TASKRUN`), which saves the interrupts
    /// and wake-ups of running it on the side. Falls back to a plain ring on
    /// kernels without these flags (before 6.1).
    pub fn new(entries: u32, fail_every: Option<u64>) -> io::Result<Ring> {
        let ring = match IoUring::builder()
            .setup_cqsize(entries * 4)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)
        {
            Ok(r) => r,
            Err(_) => IoUring::builder().setup_cqsize(entries * 4).build(entries)?,
        };
        Ok(Ring { ring, inflight: Vec::new(), free: Vec::new(), queued: 0, fail_every, pushes: 0 })
    }

    fn slot(&mut self, op: InFlight) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.inflight[i] = Some(op);
                i
            }
            None => {
                self.inflight.push(Some(op));
                self.inflight.len() - 1
            }
        }
    }

    fn push(&mut self, entry: squeue::Entry, op: InFlight) -> Result<u64, Refused> {
        self.pushes += 1;
        if self.fail_every.is_some_and(|n| self.pushes.is_multiple_of(n)) {
            return Err(Refused { error: io::Error::other("injected submission failure"), buf: op.buf, iov: op.iov });
        }
        let idx = self.slot(op);
        let entry = entry.user_data(idx as u64);
        loop {
            // SAFETY: every buffer `entry` points to is owned by
            // `self.inflight[idx]` until this operation's completion is
            // reaped in `completions` (or, if the push fails, until it is
            // taken back below, before the kernel could see it), so it
            // outlives the kernel's use.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                self.queued += 1;
                return Ok(idx as u64);
            }
            // Submission queue full: hand what we have to the kernel.
            if let Err(error) = self.submit() {
                // The entry is not in the queue: the kernel never saw it.
                let op = self.inflight[idx].take().expect("slot just filled");
                self.free.push(idx);
                return Err(Refused { error, buf: op.buf, iov: op.iov });
            }
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        let n = self.ring.submit()?;
        self.queued = self.queued.saturating_sub(n);
        Ok(())
    }

    /// Reads from `fd` into `buf` (its full length). Returns the op id.
    pub fn read(&mut self, tag: u64, fd: RawFd, mut buf: Vec<u8>) -> Result<u64, Refused> {
        let (ptr, len) = (buf.as_mut_ptr(), buf.len() as u32);
        let entry = opcode::Read::new(types::Fd(fd), ptr, len).offset(u64::MAX).build();
        self.push(entry, InFlight { tag, kind: OpKind::Read, buf, iov: Vec::new() })
    }

    /// Writes `data` to `fd` as `data.len() / chunk` iovecs of `chunk` bytes
    /// in one `writev` (fanotify applies one response per iovec).
    pub fn writev_chunks(
        &mut self,
        tag: u64,
        fd: RawFd,
        data: Vec<u8>,
        chunk: usize,
        mut iov: Vec<libc::iovec>,
    ) -> Result<u64, Refused> {
        iov.clear();
        for piece in data.chunks(chunk) {
            iov.push(libc::iovec { iov_base: piece.as_ptr() as *mut _, iov_len: piece.len() });
        }
        let entry = opcode::Writev::new(types::Fd(fd), iov.as_ptr(), iov.len() as u32).offset(u64::MAX).build();
        self.push(entry, InFlight { tag, kind: OpKind::Writev, buf: data, iov })
    }

    /// Closes `fd` asynchronously; ownership passes to the kernel. If the
    /// ring refuses, the fd is closed here, synchronously, and `false` is
    /// returned.
    pub fn close(&mut self, tag: u64, fd: OwnedFd) -> bool {
        let raw = fd.into_raw_fd();
        let entry = opcode::Close::new(types::Fd(raw)).build();
        if self.push(entry, InFlight { tag, kind: OpKind::Close, buf: Vec::new(), iov: Vec::new() }).is_err() {
            // `raw` came from an `OwnedFd` just above and the kernel never
            // received the close, so this is its only owner.
            drop(super::own_fd(raw));
            return false;
        }
        true
    }

    /// Asks the kernel to cancel the operation `op` (an id returned above).
    pub fn cancel(&mut self, tag: u64, op: u64) -> Result<u64, Refused> {
        let entry = opcode::AsyncCancel::new(op).build();
        self.push(entry, InFlight { tag, kind: OpKind::Cancel, buf: Vec::new(), iov: Vec::new() })
    }

    /// Submits queued entries and waits until at least `want` completions
    /// or `timeout`, whichever comes first.
    pub fn submit_and_wait_timeout(&mut self, want: usize, timeout: Duration) -> io::Result<()> {
        let ts = types::Timespec::new().sec(timeout.as_secs()).nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(n) => {
                self.queued = self.queued.saturating_sub(n);
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {
                // Timed out; the queued entries were submitted before waiting.
                self.queued = self.ring.submission().len();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()), // CQ full: reap first
            Err(e) => Err(e),
        }
    }

    /// Moves every available completion into `out`.
    pub fn completions(&mut self, out: &mut Vec<Completion>) {
        for cqe in self.ring.completion() {
            let idx = cqe.user_data() as usize;
            if let Some(op) = self.inflight.get_mut(idx).and_then(Option::take) {
                self.free.push(idx);
                out.push(Completion { tag: op.tag, kind: op.kind, result: cqe.result(), buf: op.buf, iov: op.iov });
            }
        }
    }

    /// Operations the kernel still holds buffers for.
    pub fn in_flight(&self) -> usize {
        self.inflight.len() - self.free.len()
    }
}

impl Drop for Ring {
    /// Cancels reads and reaps every operation still in flight before the
    /// buffers are freed, so the kernel never writes into released memory.
    /// Writes are left to finish (they answer openers). Waits are bounded:
    /// at most about five seconds, never forever.
    fn drop(&mut self) {
        let pending: Vec<u64> = self
            .inflight
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(op, Some(InFlight { kind: OpKind::Read, .. })))
            .map(|(i, _)| i as u64)
            .collect();
        for op in pending {
            let _ = self.cancel(0, op);
        }
        let mut done = Vec::new();
        for _ in 0..50 {
            if self.in_flight() == 0 {
                break;
            }
            let _ = self.submit_and_wait_timeout(1, Duration::from_millis(100));
            self.completions(&mut done);
            done.clear();
        }
        if self.in_flight() != 0 {
            // Should never happen; leaking is the only memory-safe option.
            tracing::error!(left = self.in_flight(), "io_uring operations did not finish; leaking their buffers");
            std::mem::forget(std::mem::take(&mut self.inflight));
        }
    }
}
