//! The plain event loop, where io_uring is missing (old kernel,
//! `io_uring_disabled`, a seccomp profile that blocks it): `poll` every
//! group and the wake-up eventfd, `read` a ready group, decide the batch,
//! answer with `writev` and close the event fds. Same decision code and
//! loop state as the ring loop (the parent's [`Loop`]).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::{IDLE_TICK, Loop, READ_BUF, write_all_sync};
use crate::heartbeat::Beater;
use crate::sys;

impl Loop {
    pub(super) fn run_plain(&mut self) {
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
                        self.decider.batch(&slot.rt, &mut slot.map, &buf[..n], &mut batch);
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
