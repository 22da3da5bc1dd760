//! The watcher thread: notices new entries (created, linked or moved in) in
//! guarded directories and extends the marks to them, so that directories
//! created after a guard started are guarded too, and a file that appears
//! under a denied name gets its own inode mark.
//!
//! It runs apart from the enforcement thread because marking walks the
//! filesystem, which can block; the enforcement thread never waits on it.

use crate::heartbeat::{Beater, Heartbeat};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::enforce::EntrySender;
use crate::event;
use crate::instance::{EngineError, EntryBatch, Runtime};
use crate::marks;
use crate::sys;

/// Largest subtree the watcher walks for one new directory.
const MAX_NEW_WALK: usize = 1_000_000;

enum Command {
    Add(u64, Arc<Runtime>, OwnedFd, Vec<(Vec<u8>, Arc<str>)>, Vec<OwnedFd>),
    Remove(u64, Sender<()>),
    Stop,
}

struct WatchSet {
    rt: Arc<Runtime>,
    notif: OwnedFd,
    /// Directory file handle -> path inside the root.
    dirs: HashMap<Vec<u8>, Arc<str>>,
    /// The root's filesystem and those watched whole (`mountpoint: true`):
    /// directories that events name are reopened by handle from these.
    fs_roots: Vec<OwnedFd>,
}

/// Handle to the watcher thread.
#[derive(Debug)]
pub(crate) struct Watcher {
    tx: Sender<Command>,
    wake: Arc<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    pub fn start(entries: EntrySender, heartbeat: Heartbeat) -> Result<Watcher, EngineError> {
        let wake = Arc::new(sys::eventfd().map_err(|e| EngineError::io("eventfd", e))?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let w = wake.clone();
        let thread = std::thread::Builder::new()
            .name("janus-watch".into())
            .spawn(move || crate::enforce::abort_on_panic("janus-watch", move || run(rx, w, entries, heartbeat)))
            .map_err(|e| EngineError::io("spawn watcher thread", e))?;
        Ok(Watcher { tx, wake, thread: Some(thread) })
    }

    fn send(&self, cmd: Command) -> Result<(), EngineError> {
        self.tx.send(cmd).map_err(|_| EngineError::Stopped)?;
        sys::eventfd_signal(self.wake.as_fd()).map_err(|e| EngineError::io("wake watcher", e))
    }

    pub fn add(
        &self,
        serial: u64,
        rt: Arc<Runtime>,
        notif: OwnedFd,
        dirs: Vec<(Vec<u8>, Arc<str>)>,
        fs_roots: Vec<OwnedFd>,
    ) -> Result<(), EngineError> {
        self.send(Command::Add(serial, rt, notif, dirs, fs_roots))
    }

    /// Stops watching for `serial`; returns once its group is closed.
    pub fn remove(&self, serial: u64) -> Result<(), EngineError> {
        let (ack, done) = crossbeam_channel::bounded(1);
        self.send(Command::Remove(serial, ack))?;
        done.recv().map_err(|_| EngineError::Stopped)
    }

    pub fn stop(&mut self) {
        let _ = self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: Receiver<Command>, wake: Arc<OwnedFd>, entries: EntrySender, heartbeat: Heartbeat) {
    let mut sets: HashMap<u64, WatchSet> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pollfds = Vec::new();
    let mut serials = Vec::new();
    let mut key = Vec::new();
    let mut path = vec![0u8; libc::PATH_MAX as usize + 1];
    loop {
        pollfds.clear();
        serials.clear();
        pollfds.push(libc::pollfd { fd: wake.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        for (serial, set) in &sets {
            pollfds.push(libc::pollfd { fd: set.notif.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            serials.push(*serial);
        }
        heartbeat.beat(Beater::Watcher);
        if sys::poll_in(&mut pollfds, 1000).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(1));
            continue;
        }
        if pollfds[0].revents != 0 {
            let mut b = [0u8; 8];
            let _ = sys::read(wake.as_raw_fd(), &mut b);
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    Command::Add(serial, rt, notif, dirs, fs_roots) => {
                        sets.insert(serial, WatchSet { rt, notif, dirs: dirs.into_iter().collect(), fs_roots });
                    }
                    Command::Remove(serial, ack) => {
                        sets.remove(&serial);
                        let _ = ack.send(());
                    }
                    Command::Stop => return,
                }
            }
        }
        for (i, serial) in serials.iter().enumerate() {
            if pollfds[i + 1].revents == 0 {
                continue;
            }
            let Some(set) = sets.get_mut(serial) else {
                continue;
            };
            let Ok(n) = sys::read(set.notif.as_raw_fd(), &mut buf) else {
                continue;
            };
            let mut found = Vec::new();
            for (ev, info) in event::events(&buf[..n]) {
                if ev.fd >= 0 {
                    drop(sys::own_fd(ev.fd));
                }
                let Some(d) = event::dir_entry_info(info) else {
                    continue;
                };
                key.clear();
                key.extend_from_slice(&d.handle_type.to_ne_bytes());
                key.extend_from_slice(d.handle);
                let Ok(name) = std::str::from_utf8(d.name) else {
                    continue;
                };
                // Where the directory is now; the path recorded when it was
                // marked only if it cannot be reopened (another filesystem).
                let dir = match dir_by_handle(set, d.handle_type, d.handle, &mut path) {
                    Some(dir) => dir,
                    None => match set.dirs.get(&key) {
                        Some(dir) => dir.clone(),
                        None => continue,
                    },
                };
                found.push((dir, name.to_string()));
            }
            for (dir, name) in found {
                match marks::on_new_entry(&set.rt, set.notif.as_fd(), &dir, &name, MAX_NEW_WALK) {
                    Ok(walk) => {
                        set.dirs.extend(walk.dirs);
                        if !walk.entries.is_empty() || !walk.uncache.is_empty() {
                            let _ = entries.send(EntryBatch {
                                serial: *serial,
                                entries: walk.entries,
                                uncache: walk.uncache,
                            });
                        }
                    }
                    Err(e) => {
                        metrics::counter!(crate::metrics::ERRORS, "op" => "new_entry").increment(1);
                        tracing::warn!(guard = %set.rt.info.guard, dir = %dir, name = %name, error = %e, "cannot guard new entry");
                    }
                }
            }
        }
    }
}

/// The in-root path of the directory a handle names, reopened from one of
/// the set's filesystem roots (where it is *now*, so a renamed directory is
/// found under its new name). `None` when it is on none of them, gone, or
/// outside the root.
fn dir_by_handle(set: &WatchSet, handle_type: i32, handle: &[u8], buf: &mut [u8]) -> Option<Arc<str>> {
    let fd = set.fs_roots.iter().find_map(|root| {
        match sys::fanotify::open_by_handle(root.as_fd(), handle_type, handle) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::debug!(error = %e, "cannot reopen a directory by handle");
                None
            }
        }
    })?;
    let len = sys::fd_path(fd.as_raw_fd(), buf).ok()?;
    let inner = crate::root::in_root(&buf[..len], &set.rt.root_shown)?;
    Some(Arc::from(std::str::from_utf8(inner).ok()?))
}
