//! The io_uring event loop: one read per guard group in flight; a
//! completed read is decided as a batch, its responses go out in one
//! `writev` and the read is re-armed in the same submission; the batch's
//! event fds are closed through the ring once the responses are written.
//! A read or write the ring refuses is retried or done synchronously, never
//! dropped. The loop state and its shared bookkeeping are the parent's
//! ([`Loop`]).

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::{IDLE_TICK, Loop, MAX_READ_BACKOFF, Rearm, WriteCtx, write_all_sync};
use crate::decide::Batch;
use crate::event::RESPONSE_LEN;
use crate::heartbeat::Beater;
use crate::sys::uring::{Completion, OpKind, Refused, Ring};

const TAG_WAKE: u64 = u64::MAX;
pub(super) const TAG_CANCEL: u64 = u64::MAX - 1;
/// Write tags start here; read tags are guard serials (small).
const WRITE_TAG_BASE: u64 = 1 << 62;
/// A read the ring refuses this many times in a row retires its group.
const MAX_REARM_FAILURES: u32 = 5;

impl Loop {
    /// Arms the read of group `serial` (or of the wake-up eventfd). A read
    /// the ring refuses is retried with a growing pause; a group whose read
    /// is refused [`MAX_REARM_FAILURES`] times in a row is retired (marks
    /// flushed, queue answered, group closed) rather than left unread,
    /// which would hang its openers.
    pub(super) fn arm_read(&mut self, ring: &mut Ring, serial: u64, buf: Vec<u8>, failures: u32) {
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

    pub(super) fn run_ring(&mut self, mut ring: Ring) {
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
                            self.decider.batch(&slot.rt, &mut slot.map, &c.buf[..c.result as usize], &mut batch);
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
}
