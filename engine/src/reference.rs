//! The simplest correct permission listener, kept as the benchmark baseline
//! (`janus-perf`'s `reference` configuration): blocking read, one `write` per
//! event, allow everything. No batching, no policy, no io_uring.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::event::{self, RESPONSE_LEN};
use crate::sys::{self, fanotify};

/// Marks `dir` (and its direct children) for `FAN_OPEN_PERM` and answers
/// every event with allow until `stop` is set. Returns events answered.
pub fn run(dir: &Path, stop: Arc<AtomicBool>) -> io::Result<u64> {
    let flags = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | libc::FAN_UNLIMITED_QUEUE;
    let group = fanotify::init(flags, (libc::O_RDONLY | libc::O_CLOEXEC) as u32)?;
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let mask = libc::FAN_OPEN_PERM | libc::FAN_EVENT_ON_CHILD;
    fanotify::mark(group.as_fd(), libc::FAN_MARK_ADD, mask, None, Some(&path))?;
    let mut buf = vec![0u8; 4096];
    let mut resp = Vec::with_capacity(RESPONSE_LEN);
    let mut answered = 0;
    let mut pfd = [libc::pollfd { fd: group.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    while !stop.load(Ordering::Relaxed) {
        // Blocking read, with a poll timeout so `stop` is noticed.
        if sys::poll_in(&mut pfd, 100)? == 0 {
            continue;
        }
        let n = match sys::read(group.as_raw_fd(), &mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        for (ev, _) in event::events(&buf[..n]) {
            if ev.fd < 0 {
                continue;
            }
            let fd = sys::own_fd(ev.fd);
            resp.clear();
            event::push_response(&mut resp, ev.fd, true);
            sys::write(group.as_raw_fd(), &resp)?;
            drop(fd);
            answered += 1;
        }
    }
    Ok(answered)
}
