//! Turning a compiled policy into kernel marks.
//!
//! Marking plan for one guard instance (see docs/engine.md):
//! - every directory under a rule whose subtree can need a decision gets a
//!   permission mark with `FAN_EVENT_ON_CHILD | FAN_ONDIR`, so opens of its
//!   entries, present and future, reach the engine; and a notification mark
//!   (`FAN_CREATE | FAN_MOVED_TO`) so new subdirectories get marked too;
//! - every existing file whose decision is deny (or audited) gets its own
//!   inode mark, so the same file reached by another name (hard link, bind
//!   mount, `/proc/<pid>/root`) is still decided;
//! - allowed files are cached in the kernel as *ignore* marks, placed by
//!   the enforcement thread on the file's first open (through the event's
//!   fd, evictable) and taken back by it too (see `cache::cache_allowed`);
//! - the mount holding every such directory is marked too (files only), so
//!   a file created in a directory that is not marked yet (a new
//!   subdirectory, a renamed one, a name the walk could not follow) still
//!   reaches the engine on its first open; the engine decides it by path and
//!   caches an allow in the kernel (an evictable ignore mark);
//! - `mountpoint: true` rules mark the whole mount instead.
//!
//! Every object is reached from the instance's root fd with `openat2`
//! (`RESOLVE_IN_ROOT`, no symlink followed at all: a walked path holds
//! none, so one there now was swapped in), held open `O_PATH`, checked
//! with `statx` on that fd, and marked through `/proc/self/fd/N`, which
//! names exactly that object. Nothing outside the root can be marked or
//! listed, whatever is renamed or swapped while the walk runs.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use crate::instance::{EngineError, Entry, FileKey, GuardReport, Runtime};
use crate::policy::{Decision, Scratch, classify, merge_deny_wins};
use crate::sys::{self, fanotify};

/// Events the watcher group asks for on guarded directories.
const WATCH_MASK: u64 = libc::FAN_CREATE | libc::FAN_MOVED_TO | libc::FAN_ONDIR;

/// Pseudo filesystems a walk never descends into.
const SKIP_FS: &[i64] = &[
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x6462_6720, // debugfs
    0x7472_6163, // tracefs
    0x7363_6673, // securityfs
];

/// Creates the notification group that reports new directory entries.
pub(crate) fn notification_group() -> std::io::Result<OwnedFd> {
    let flags = libc::FAN_CLASS_NOTIF
        | libc::FAN_CLOEXEC
        | libc::FAN_NONBLOCK
        | libc::FAN_UNLIMITED_QUEUE
        | libc::FAN_UNLIMITED_MARKS
        | libc::FAN_REPORT_DFID_NAME;
    fanotify::init(flags, (libc::O_RDONLY | libc::O_CLOEXEC) as u32)
}

/// The outcome of a walk: decisions to hand to the enforcement thread and
/// watched directories to hand to the watcher.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub entries: Vec<(FileKey, Entry)>,
    /// (file handle, in-root path) of every watched directory.
    pub dirs: Vec<(Vec<u8>, Arc<str>)>,
    /// An fd on the root's filesystem and on each filesystem watched as a
    /// whole (`mountpoint: true`), for the watcher to reopen the
    /// directories its events name.
    pub fs_roots: Vec<OwnedFd>,
    /// Files that now carry a permission mark (held `O_PATH`): an ignore
    /// mark a previous name left on them is for the enforcement thread,
    /// which owns the cache, to take back.
    pub uncache: Vec<OwnedFd>,
    pub report: GuardReport,
}

struct FileRec {
    path: Arc<str>,
    decision: Decision,
    birth: u64,
}

/// An object of the instance's root, held open `O_PATH` (see the module
/// docs) with the path that names exactly it.
struct Held {
    fd: OwnedFd,
    magic: CString,
}

impl Held {
    /// The object at in-root path `inner`, no symlink followed.
    fn open(rt: &Runtime, inner: &str) -> std::io::Result<Held> {
        let rel = inner.trim_start_matches('/');
        let rel = CString::new(if rel.is_empty() { "." } else { rel })
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let fd = sys::openat2_in_root_no_symlinks(rt.rootfd.as_fd(), &rel)?;
        Ok(Held { magic: sys::fd_magic_path(std::os::fd::AsRawFd::as_raw_fd(&fd)), fd })
    }

    fn id(&self) -> std::io::Result<sys::FileId> {
        use std::os::fd::AsRawFd;
        sys::file_id(self.fd.as_raw_fd())
    }

    fn as_path(&self) -> &std::path::Path {
        std::path::Path::new(std::ffi::OsStr::from_bytes(self.magic.as_bytes()))
    }
}

pub(crate) struct Walker<'a> {
    rt: &'a Runtime,
    notif: BorrowedFd<'a>,
    scratch: Scratch<'a>,
    files: HashMap<FileKey, FileRec>,
    pub out: Walk,
    seen: usize,
    max: usize,
    handle: Vec<u8>,
    /// Mark the mount of every walked directory (initial walks only: a
    /// directory the watcher reports is on a mount already marked).
    mark_mounts: bool,
    mounts: HashSet<u64>,
    /// Layer directories of the overlay mounts on the node (read when the
    /// first directory is marked; see [`Walker::dir_events`]).
    layers: Option<Vec<String>>,
}

/// Marks everything a freshly applied guard instance needs.
pub(crate) fn initial(rt: &Runtime, notif: BorrowedFd<'_>, max: usize) -> Result<Walk, EngineError> {
    let mut w = Walker::new(rt, notif, max);
    w.mark_mounts = true;
    w.out.report.warnings.extend(rt.root_notes.iter().cloned());
    // The watcher reopens the directories its events name from the root's
    // filesystem, so a renamed directory is known by where it is now.
    match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(&rt.root) {
        Ok(f) => w.out.fs_roots.push(f.into()),
        Err(e) => w.out.report.warnings.push(format!("cannot open the root for the watcher: {e}")),
    }
    let policy = &rt.policy;
    let mut starts: Vec<String> = Vec::new();
    for (ri, rule) in policy.rules.iter().enumerate() {
        let prefix = rule.pattern.literal_prefix();
        let existing = deepest_existing(rt, &prefix);
        if existing != prefix {
            w.out.report.pending.push(rule.text.to_string());
        }
        if policy.subject_of(ri as u32).mountpoint {
            w.mark_mount(&existing)?;
            continue;
        }
        // Start at the parent so a rule path that is replaced (new inode) or
        // created later is still seen through its directory.
        let start = if existing == prefix { parent(&prefix).to_string() } else { existing };
        starts.push(start);
    }
    starts.sort();
    starts.dedup();
    let roots: Vec<String> =
        starts.iter().filter(|s| !starts.iter().any(|o| o != *s && is_under(s, o))).cloned().collect();
    for start in roots {
        w.walk(&start)?;
    }
    w.finish()?;
    Ok(w.out)
}

/// Layer directories (canonical paths) of every overlay mount this process
/// and the node's init can see.
fn overlay_layers() -> Vec<String> {
    let proc = janus_procfs::ProcFs::default();
    let mut out: Vec<String> = Vec::new();
    for pid in [janus_procfs::Pid::SelfProc, janus_procfs::Pid::Id(1)] {
        let Ok(mounts) = proc.mountinfo(pid) else { continue };
        for layer in mounts.iter().flat_map(|m| m.overlay_layers()) {
            let layer = std::fs::canonicalize(&layer).unwrap_or(layer);
            if let Some(s) = layer.to_str()
                && !out.iter().any(|o| o == s)
            {
                out.push(s.to_string());
            }
        }
    }
    out
}

/// Whether `path` is `dir` or below it.
fn is_under(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" { format!("/{name}") } else { format!("{dir}/{name}") }
}

/// The deepest ancestor-or-self of `path` that exists as a directory (or
/// `path` itself if it exists at all).
fn deepest_existing(rt: &Runtime, path: &str) -> String {
    if Held::open(rt, path).is_ok() {
        return path.to_string();
    }
    let mut p = path;
    loop {
        p = parent(p);
        if p == "/" || Held::open(rt, p).and_then(|h| h.id()).is_ok_and(|id| id.is_dir) {
            return p.to_string();
        }
    }
}

impl<'a> Walker<'a> {
    pub(crate) fn new(rt: &'a Runtime, notif: BorrowedFd<'a>, max: usize) -> Walker<'a> {
        Walker {
            rt,
            notif,
            scratch: Scratch::default(),
            files: HashMap::new(),
            out: Walk::default(),
            seen: 0,
            max,
            handle: Vec::new(),
            mark_mounts: false,
            mounts: HashSet::new(),
            layers: None,
        }
    }

    fn perm_mark(&self, flags: u32, mask: u64, host: &CString) -> std::io::Result<()> {
        fanotify::mark(self.rt.perm.as_fd(), libc::FAN_MARK_ADD | flags, mask, None, Some(host))
    }

    fn mark_mount(&mut self, path: &str) -> Result<(), EngineError> {
        let held = Held::open(self.rt, path).map_err(|e| EngineError::io(format!("open {path} inside the root"), e))?;
        let host = held.magic.clone();
        let mask = self.rt.policy.kinds.fan_mask() | libc::FAN_ONDIR;
        self.perm_mark(libc::FAN_MARK_MOUNT, mask, &host)
            .map_err(|e| EngineError::io(format!("mark mount of {path}"), e))?;
        self.out.report.marks += 1;
        self.rt.add_marks(1);
        // No directory there is walked or watched, yet a file cached as
        // allowed may be renamed or linked to a denied name later: watch
        // the whole filesystem for new names, so the watcher can take the
        // cache back (see watch.rs).
        let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM;
        // open_by_handle_at refuses an O_PATH mount fd (EBADF).
        let root = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(held.as_path());
        match (fanotify::mark(self.notif, flags, WATCH_MASK, None, Some(&host)), root) {
            (Ok(()), Ok(f)) => self.out.fs_roots.push(f.into()),
            (Err(e), _) | (_, Err(e)) => {
                self.out
                    .report
                    .warnings
                    .push(format!("files under {path} renamed or linked to a denied name will not be noticed: {e}"));
            }
        }
        Ok(())
    }

    /// Marks the mount that holds directory `dir` for file events, once per
    /// mount: files in directories that carry no mark yet still reach the
    /// engine (decided by path, allowed ones then cached in the kernel).
    fn mark_mount_of(&mut self, dir: &str, host: &CString, mnt_id: u64) -> Result<(), EngineError> {
        if !self.mark_mounts || !self.mounts.insert(mnt_id) {
            return Ok(());
        }
        let mask = self.rt.policy.kinds.fan_mask();
        self.perm_mark(libc::FAN_MARK_MOUNT, mask, host)
            .map_err(|e| EngineError::io(format!("mark the mount holding {dir}"), e))?;
        self.out.report.marks += 1;
        self.out.report.mounts.push(dir.to_string());
        self.rt.add_marks(1);
        Ok(())
    }

    /// The overlay layer (lower, upper or work directory of an overlay
    /// mount) that holds `dir`, if any. Nothing in a layer is ever marked:
    /// reading an event for a file or directory of the overlay makes the
    /// kernel open the matching object of its layer *inside* `read()`
    /// (measured on 6.18: `ovl_open_realfile` raising `FAN_OPEN_PERM` on the
    /// layer file's parent mark), and if that object carried a mark of any
    /// group this engine answers, the enforcement thread would wait on
    /// itself and every guarded opener would hang. A guard is meant for the
    /// merged view, which stays guarded. Only host instances (root `/`) can
    /// reach layers; a layer mounted after a guard marked it is not seen.
    fn layer_of(&mut self, dir: &str) -> Option<String> {
        if self.rt.root != std::path::Path::new("/") {
            return None;
        }
        let layers = self.layers.get_or_insert_with(overlay_layers);
        let layer = layers.iter().find(|l| is_under(dir, l))?.clone();
        let note = format!(
            "{dir} is in the overlay layer {layer}: nothing in it is marked (that could deadlock the engine); \
             its files are decided by path through its mount's mark, directory opens there are not decided; \
             guard the overlay's merged path"
        );
        if !self.out.report.warnings.contains(&note) {
            self.out.report.warnings.push(note);
        }
        Some(layer)
    }

    /// Whether directory `dir` holds a layer directory as a direct child:
    /// its mark then must not ask for directory events (`FAN_ONDIR`), which
    /// would include the kernel's own open of that layer directory.
    fn parents_a_layer(&mut self, dir: &str) -> bool {
        if self.rt.root != std::path::Path::new("/") {
            return false;
        }
        self.layers.get_or_insert_with(overlay_layers).iter().any(|l| parent(l) == dir)
    }

    /// Walks directory `start` (in-root path) and everything below it that
    /// can need a decision, marking directories and collecting files.
    pub(crate) fn walk(&mut self, start: &str) -> Result<(), EngineError> {
        // (in-root path, device of the parent directory).
        let mut stack: Vec<(String, Option<u64>)> = vec![(start.to_string(), None)];
        while let Some((dir, parent_dev)) = stack.pop() {
            if !self.rt.policy.needs_events_at_or_below(dir.as_bytes(), &mut self.scratch) {
                continue;
            }
            // Gone, or a symlink swapped in since the parent was listed.
            let Ok(held) = Held::open(self.rt, &dir) else {
                continue;
            };
            let Ok(id) = held.id() else {
                continue;
            };
            if !id.is_dir {
                continue;
            }
            if parent_dev.is_some_and(|d| d != id.dev) && is_pseudo_fs(&held.fd) {
                continue;
            }
            let host = &held.magic;
            if self.layer_of(&dir).is_some() {
                // Its mount may be marked: the overlay reaches its layers
                // through private clones of their mounts, which that mark
                // does not see. Direct opens of its files are decided by path.
                self.mark_mount_of(&dir, host, id.mnt_id)?;
                continue;
            }
            self.count(&dir)?;
            let ondir = if self.parents_a_layer(&dir) { 0 } else { libc::FAN_ONDIR };
            let mask = self.rt.policy.kinds.fan_mask() | libc::FAN_EVENT_ON_CHILD | ondir;
            self.perm_mark(0, mask, host).map_err(|e| EngineError::io(format!("mark directory {dir}"), e))?;
            self.out.report.marks += 1;
            self.rt.add_marks(1);
            self.mark_mount_of(&dir, host, id.mnt_id)?;
            self.watch_dir(&dir, &held);
            let path: Arc<str> = Arc::from(dir.as_str());
            let decision = self.rt.policy.decide(dir.as_bytes(), true, &mut self.scratch);
            self.out
                .entries
                .push((FileKey { dev: id.dev, ino: id.ino }, Entry { path, birth: id.birth, is_dir: true, decision }));
            let entries = match std::fs::read_dir(held.as_path()) {
                Ok(e) => e,
                Err(e) => {
                    self.out.report.warnings.push(format!("cannot list {dir}: {e}"));
                    continue;
                }
            };
            for entry in entries.flatten() {
                let Ok(ft) = entry.file_type() else { continue };
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    self.out.report.warnings.push(format!("skipping non-UTF-8 name in {dir}"));
                    continue;
                };
                let child = join(&dir, name);
                if ft.is_dir() {
                    stack.push((child, Some(id.dev)));
                } else if !ft.is_symlink() {
                    use std::os::fd::AsRawFd;
                    let Ok(cname) = CString::new(name) else { continue };
                    if let Ok(fid) = sys::statx_at(held.fd.as_raw_fd(), &cname, libc::AT_SYMLINK_NOFOLLOW) {
                        self.collect_file(&child, fid)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn count(&mut self, at: &str) -> Result<(), EngineError> {
        self.seen += 1;
        if self.seen > self.max {
            return Err(EngineError::TooLarge {
                guard: self.rt.info.guard.clone(),
                path: at.to_string(),
                limit: self.max,
            });
        }
        Ok(())
    }

    fn watch_dir(&mut self, dir: &str, held: &Held) {
        if let Err(e) = fanotify::mark(self.notif, libc::FAN_MARK_ADD, WATCH_MASK, None, Some(&held.magic)) {
            self.out.report.warnings.push(format!("new entries in {dir} will not be noticed: {e}"));
            metrics::counter!(crate::metrics::ERRORS, "op" => "watch").increment(1);
            return;
        }
        match fanotify::handle_of_fd(held.fd.as_fd(), &mut self.handle) {
            Ok(()) => {
                self.out.dirs.push((self.handle.clone(), Arc::from(dir)));
                self.out.report.watched_dirs += 1;
            }
            Err(e) => self.out.report.warnings.push(format!("no file handle for {dir}: {e}")),
        }
    }

    /// Records the decision of file `path` (`id` from `statx` of it); a
    /// file seen under several names keeps the strictest decision per kind
    /// (deny wins).
    pub(crate) fn collect_file(&mut self, path: &str, id: sys::FileId) -> Result<(), EngineError> {
        self.count(path)?;
        let decision = self.rt.policy.decide(path.as_bytes(), false, &mut self.scratch);
        let key = FileKey { dev: id.dev, ino: id.ino };
        match self.files.get_mut(&key) {
            Some(rec) => rec.decision = merge_deny_wins(&self.rt.policy, rec.decision, decision),
            None => {
                self.files.insert(key, FileRec { path: Arc::from(path), decision, birth: id.birth });
            }
        }
        Ok(())
    }

    /// Places the marks for collected files that need user space (denied,
    /// audited), each on the object found again at its path and checked to
    /// be the one decided, and hands their decisions to the enforcement
    /// thread. Allowed files get neither: their first open is decided by
    /// path and cached in the kernel then, by the enforcement thread.
    pub(crate) fn finish(&mut self) -> Result<(), EngineError> {
        let policy = &self.rt.policy;
        for (key, rec) in self.files.drain() {
            let (needs, _) = classify(policy, &rec.decision);
            if needs.is_empty() {
                continue;
            }
            let held = Held::open(self.rt, &rec.path).ok().filter(|h| {
                h.id().is_ok_and(|id| FileKey { dev: id.dev, ino: id.ino } == key && id.birth == rec.birth)
            });
            // Renamed or replaced since it was listed: the object now
            // there is decided on its first open (its directory or mount
            // is marked); the decided inode keeps its entry below, and
            // the watcher reports the name it moved to.
            if let Some(held) = held {
                fanotify::mark(self.rt.perm.as_fd(), libc::FAN_MARK_ADD, needs.fan_mask(), None, Some(&held.magic))
                    .map_err(|e| EngineError::io(format!("mark file {}", rec.path), e))?;
                self.out.report.marks += 1;
                self.rt.add_marks(1);
                self.out.uncache.push(held.fd);
            }
            self.out
                .entries
                .push((key, Entry { path: rec.path, birth: rec.birth, is_dir: false, decision: rec.decision }));
        }
        Ok(())
    }
}

fn is_pseudo_fs(fd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    sys::fs_magic(fd.as_raw_fd()).map(|m| SKIP_FS.contains(&m)).unwrap_or(false)
}

/// What the watcher does with a new entry `name` in watched directory `dir`.
pub(crate) fn on_new_entry(
    rt: &Runtime,
    notif: BorrowedFd<'_>,
    dir: &str,
    name: &str,
    max: usize,
) -> Result<Walk, EngineError> {
    let mut w = Walker::new(rt, notif, max);
    let path = join(dir, name);
    // A symlink (or gone again): nothing to mark.
    let Ok(id) = Held::open(rt, &path).and_then(|h| h.id()) else {
        return Ok(w.out);
    };
    if id.is_dir {
        w.walk(&path)?;
    } else {
        w.collect_file(&path, id)?;
    }
    w.finish()?;
    Ok(w.out)
}
