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

/// An io_uring instance with an owned-buffer in-flight table.
pub struct Ring {
    ring: IoUring,
    inflight: Vec<Option<InFlight>>,
    free: Vec<usize>,
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
    pub fn new(entries: u32) -> io::Result<Ring> {
        let ring = match IoUring::builder()
            .setup_cqsize(entries * 4)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)
        {
            Ok(r) => r,
            Err(_) => IoUring::builder().setup_cqsize(entries * 4).build(entries)?,
        };
        Ok(Ring { ring, inflight: Vec::new(), free: Vec::new() })
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

    fn push(&mut self, entry: squeue::Entry, op: InFlight) -> io::Result<u64> {
        let idx = self.slot(op);
        let entry = entry.user_data(idx as u64);
        loop {
            // SAFETY: every buffer `entry` points to is owned by
            // `self.inflight[idx]` until this operation's completion is
            // reaped in `completions`, so it outlives the kernel's use.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return Ok(idx as u64);
            }
            // Submission queue full: hand what we have to the kernel.
            self.ring.submit()?;
        }
    }

    /// Reads from `fd` into `buf` (its full length). Returns the op id.
    pub fn read(&mut self, tag: u64, fd: RawFd, mut buf: Vec<u8>) -> io::Result<u64> {
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
    ) -> io::Result<u64> {
        iov.clear();
        for piece in data.chunks(chunk) {
            iov.push(libc::iovec { iov_base: piece.as_ptr() as *mut _, iov_len: piece.len() });
        }
        let entry = opcode::Writev::new(types::Fd(fd), iov.as_ptr(), iov.len() as u32).offset(u64::MAX).build();
        self.push(entry, InFlight { tag, kind: OpKind::Writev, buf: data, iov })
    }

    /// Closes `fd` asynchronously; ownership passes to the kernel.
    pub fn close(&mut self, tag: u64, fd: OwnedFd) -> io::Result<u64> {
        let entry = opcode::Close::new(types::Fd(fd.into_raw_fd())).build();
        self.push(entry, InFlight { tag, kind: OpKind::Close, buf: Vec::new(), iov: Vec::new() })
    }

    /// Asks the kernel to cancel the operation `op` (an id returned above).
    pub fn cancel(&mut self, tag: u64, op: u64) -> io::Result<u64> {
        let entry = opcode::AsyncCancel::new(op).build();
        self.push(entry, InFlight { tag, kind: OpKind::Cancel, buf: Vec::new(), iov: Vec::new() })
    }

    /// Submits queued entries and waits until at least `want` completions.
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        match self.ring.submit_and_wait(want) {
            Ok(_) => Ok(()),
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
    /// Cancels and reaps every operation still in flight before the buffers
    /// are freed, so the kernel never writes into released memory.
    fn drop(&mut self) {
        let pending: Vec<u64> = self
            .inflight
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(op, Some(InFlight { kind: OpKind::Read | OpKind::Writev, .. })))
            .map(|(i, _)| i as u64)
            .collect();
        for op in pending {
            let _ = self.cancel(0, op);
        }
        let mut done = Vec::new();
        for _ in 0..1000 {
            if self.in_flight() == 0 {
                break;
            }
            let _ = self.ring.submit_and_wait(1);
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
