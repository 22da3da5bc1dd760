//! janus-procfs: the one place Janus reads and parses `/proc`.
//!
//! The agent scans every `/proc/<pid>/cgroup` to find a container's
//! processes, the engine walks parents and names the process in a denial,
//! the benchmark harness samples its own CPU and memory, and the end-to-end
//! tests check fds and marks. They all go through [`ProcFs`], so each file
//! format is parsed by exactly one function here, with typed errors.
//!
//! Two layers:
//!
//! - pure parsers of file contents ([`Stat::parse`], [`Status::parse`],
//!   [`CgroupLine::parse_all`], [`Mount::parse_all`], [`Schedstat::parse`],
//!   [`FdInfo::parse`]), which never touch the filesystem;
//! - [`ProcFs`], a proc root (`/proc`, or a fake tree under a temporary
//!   directory in tests) with one reader per file, telling a process that
//!   exited ([`ProcError::Gone`]) apart from a real read error.
//!
//! Linux only; std and `thiserror` only.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod parse;

pub use parse::{CgroupLine, FdInfo, Ids, InodeMark, Mount, ParseError, Schedstat, Stat, Status};

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Which process a [`ProcFs`] call is about.
///
/// Callers pass a `u32` (converted with `From`) or [`Pid::SelfProc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pid {
    /// A process (or thread) ID in the PID namespace of the proc root.
    Id(u32),
    /// `<root>/self`: the calling process.
    SelfProc,
}

impl From<u32> for Pid {
    fn from(pid: u32) -> Pid {
        Pid::Id(pid)
    }
}

impl fmt::Display for Pid {
    /// The directory name under the proc root: the number, or `self`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pid::Id(pid) => write!(f, "{pid}"),
            Pid::SelfProc => f.write_str("self"),
        }
    }
}

/// Why a `/proc` read failed.
///
/// [`ProcError::Gone`] is the expected race of reading another process (it
/// may exit at any time), which callers usually treat as "not there";
/// [`ProcError::Io`] and [`ProcError::Parse`] are real failures.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// An entry under `<root>/<pid>` vanished (`ENOENT`) or the process
    /// exited while it was read (`ESRCH`): the process is gone. For
    /// per-thread and per-fd files it may instead be that thread or fd that
    /// is gone; for [`ProcFs::exe`], a kernel thread (which has no
    /// executable) looks the same.
    #[error("process {pid} has exited")]
    Gone {
        /// The process.
        pid: u32,
    },
    /// Any other I/O error (permission denied, a directory where a file was
    /// expected, the proc root missing, ...).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file was read but does not have the expected format (a
    /// truncated file from an exiting process, or a fake tree that is wrong).
    #[error("cannot parse {}: {what}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        what: ParseError,
    },
}

impl ProcError {
    /// Whether this is [`ProcError::Gone`].
    pub fn is_gone(&self) -> bool {
        matches!(self, ProcError::Gone { .. })
    }
}

impl From<ProcError> for io::Error {
    /// For callers that return `io::Result`: `Gone` becomes `NotFound`,
    /// `Parse` becomes `InvalidData`, `Io` keeps its kind; the message keeps
    /// the path.
    fn from(e: ProcError) -> io::Error {
        let kind = match &e {
            ProcError::Gone { .. } => io::ErrorKind::NotFound,
            ProcError::Io { source, .. } => source.kind(),
            ProcError::Parse { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// A proc filesystem: `/proc` by default, or any directory laid out like it
/// (`<root>/<pid>/stat`, ...), so code that reads /proc can be tested
/// against a fake tree.
///
/// Every reader reads the file once, whole, and parses it; nothing is
/// cached. Non-UTF-8 bytes (a command name may hold any) are replaced with
/// U+FFFD rather than failing the read.
///
/// ```
/// use janus_procfs::{Pid, ProcFs};
///
/// let proc = ProcFs::default();
/// let me = proc.stat(Pid::SelfProc)?;
/// assert_eq!(me.pid, std::process::id());
/// // The same run of the same process: pid and start time both match.
/// assert_eq!(proc.stat(me.pid)?.start_time, me.start_time);
/// # Ok::<(), janus_procfs::ProcError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    /// The host's `/proc`.
    fn default() -> ProcFs {
        ProcFs::new("/proc")
    }
}

impl ProcFs {
    /// A proc filesystem rooted at `root` (e.g. `/proc`, or a host's /proc
    /// mounted elsewhere, or a fake tree in a test).
    pub fn new(root: impl Into<PathBuf>) -> ProcFs {
        ProcFs { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<pid>/<file>`; `file` may have several components
    /// (`task/7/schedstat`) or be empty (the process directory).
    pub fn path(&self, pid: impl Into<Pid>, file: &str) -> PathBuf {
        let mut p = self.root.join(pid.into().to_string());
        if !file.is_empty() {
            p.push(file);
        }
        p
    }

    /// Whether `<root>/<pid>` exists (a zombie still has one).
    pub fn exists(&self, pid: u32) -> bool {
        self.path(pid, "").exists()
    }

    /// Reads `<root>/<pid>/<file>` into `buf` (cleared first), reusing its
    /// allocation: for scans that read a file of every process.
    pub fn read_into(&self, pid: impl Into<Pid>, file: &str, buf: &mut String) -> Result<(), ProcError> {
        let pid = pid.into();
        let path = self.path(pid, file);
        read_lossy(&path, buf).map_err(|e| io_error(pid, path, e))
    }

    fn read(&self, pid: Pid, file: &str) -> Result<(String, PathBuf), ProcError> {
        let mut buf = String::new();
        let path = self.path(pid, file);
        match read_lossy(&path, &mut buf) {
            Ok(()) => Ok((buf, path)),
            Err(e) => Err(io_error(pid, path, e)),
        }
    }

    fn read_link(&self, pid: Pid, file: &str) -> Result<PathBuf, ProcError> {
        let path = self.path(pid, file);
        fs::read_link(&path).map_err(|e| io_error(pid, path, e))
    }

    fn list(&self, pid: Pid, dir: &str, zero: bool) -> Result<Entries, ProcError> {
        let path = self.path(pid, dir);
        match fs::read_dir(&path) {
            Ok(dir) => Ok(Entries { dir, path, zero }),
            Err(e) => Err(io_error(pid, path, e)),
        }
    }

    /// `<root>/<pid>/stat`, parsed: parent, start time, CPU ticks, ...
    pub fn stat(&self, pid: impl Into<Pid>) -> Result<Stat, ProcError> {
        let (text, path) = self.read(pid.into(), "stat")?;
        Stat::parse(&text).map_err(|what| ProcError::Parse { path, what })
    }

    /// `<root>/<pid>/status`, parsed: uids, gids, resident memory.
    pub fn status(&self, pid: impl Into<Pid>) -> Result<Status, ProcError> {
        let (text, path) = self.read(pid.into(), "status")?;
        Status::parse(&text).map_err(|what| ProcError::Parse { path, what })
    }

    /// `<root>/<pid>/cgroup`, read into `buf` and parsed strictly (any
    /// malformed line is an error). One line per hierarchy: `0::/path` on
    /// cgroup v2, `N:ctrl,ctrl:/path` on v1.
    pub fn cgroups<'b>(&self, pid: impl Into<Pid>, buf: &'b mut String) -> Result<Vec<CgroupLine<'b>>, ProcError> {
        let pid = pid.into();
        self.read_into(pid, "cgroup", buf)?;
        CgroupLine::parse_all(buf)
            .collect::<Result<_, _>>()
            .map_err(|what| ProcError::Parse { path: self.path(pid, "cgroup"), what })
    }

    /// `<root>/<pid>/mountinfo`, parsed strictly: the mounts that process
    /// sees, in its mount namespace.
    pub fn mountinfo(&self, pid: impl Into<Pid>) -> Result<Vec<Mount>, ProcError> {
        let (text, path) = self.read(pid.into(), "mountinfo")?;
        Mount::parse_all(&text).collect::<Result<_, _>>().map_err(|what| ProcError::Parse { path, what })
    }

    /// `<root>/<pid>/comm`: the command name (at most 15 bytes, set by
    /// `exec` or `prctl`), without the trailing newline.
    pub fn comm(&self, pid: impl Into<Pid>) -> Result<String, ProcError> {
        let (mut text, _) = self.read(pid.into(), "comm")?;
        if text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }

    /// The target of `<root>/<pid>/exe`: the executable's path.
    pub fn exe(&self, pid: impl Into<Pid>) -> Result<PathBuf, ProcError> {
        self.read_link(pid.into(), "exe")
    }

    /// The process IDs under the root (the numeric directory names). Fails
    /// only if the root cannot be listed.
    pub fn pids(&self) -> Result<Entries, ProcError> {
        let path = self.root.clone();
        match fs::read_dir(&path) {
            Ok(dir) => Ok(Entries { dir, path, zero: false }),
            Err(source) => Err(ProcError::Io { path, source }),
        }
    }

    /// The thread IDs of process `pid` (`<root>/<pid>/task`).
    pub fn tasks(&self, pid: impl Into<Pid>) -> Result<Entries, ProcError> {
        self.list(pid.into(), "task", false)
    }

    /// `<root>/<pid>/task/<tid>/schedstat`: CPU time of one thread.
    pub fn task_schedstat(&self, pid: impl Into<Pid>, tid: u32) -> Result<Schedstat, ProcError> {
        let (text, path) = self.read(pid.into(), &format!("task/{tid}/schedstat"))?;
        Schedstat::parse(&text).map_err(|what| ProcError::Parse { path, what })
    }

    /// The open file descriptors of process `pid` (`<root>/<pid>/fd`).
    /// Listing `/proc/self/fd` opens one fd itself, which is listed too.
    pub fn fds(&self, pid: impl Into<Pid>) -> Result<Entries, ProcError> {
        self.list(pid.into(), "fd", true)
    }

    /// What fd `fd` of process `pid` refers to (`<root>/<pid>/fd/<fd>`):
    /// a path, or e.g. `anon_inode:[fanotify]`, `socket:[1234]`.
    pub fn fd_target(&self, pid: impl Into<Pid>, fd: u32) -> Result<PathBuf, ProcError> {
        self.read_link(pid.into(), &format!("fd/{fd}"))
    }

    /// `<root>/<pid>/fdinfo/<fd>`, parsed.
    pub fn fdinfo(&self, pid: impl Into<Pid>, fd: u32) -> Result<FdInfo, ProcError> {
        let (text, path) = self.read(pid.into(), &format!("fdinfo/{fd}"))?;
        FdInfo::parse(&text).map_err(|what| ProcError::Parse { path, what })
    }

    /// The fds of process `pid` that are fanotify groups (their target is
    /// `anon_inode:[fanotify]`). Fds closed while listing are skipped; fails
    /// only if the fd directory cannot be listed.
    pub fn fanotify_fds(&self, pid: impl Into<Pid>) -> Result<Vec<u32>, ProcError> {
        let pid = pid.into();
        let mut out = Vec::new();
        for fd in self.fds(pid)? {
            if let Ok(fd) = fd
                && self.fd_target(pid, fd).is_ok_and(|t| t.as_os_str() == "anon_inode:[fanotify]")
            {
                out.push(fd);
            }
        }
        Ok(out)
    }

    /// The kernel thread ID of the calling thread, from the
    /// `<root>/thread-self` link (`<pid>/task/<tid>`).
    pub fn current_tid(&self) -> Result<u32, ProcError> {
        let path = self.root.join("thread-self");
        let link = fs::read_link(&path).map_err(|source| ProcError::Io { path: path.clone(), source })?;
        link.file_name().and_then(|n| n.to_str()).and_then(|n| parse_number(n, true)).ok_or_else(|| ProcError::Parse {
            path,
            what: ParseError::Invalid { field: "thread-self", value: link.to_string_lossy().into_owned() },
        })
    }

    /// `fs.fanotify.max_user_groups`: how many fanotify groups one user may
    /// hold (each guard instance uses two).
    pub fn fanotify_max_user_groups(&self) -> Result<u64, ProcError> {
        let path = self.root.join(MAX_USER_GROUPS);
        let text = fs::read_to_string(&path).map_err(|source| ProcError::Io { path: path.clone(), source })?;
        text.trim().parse().map_err(|_| ProcError::Parse {
            path,
            what: ParseError::Invalid { field: "max_user_groups", value: text.trim().to_string() },
        })
    }

    /// Sets `fs.fanotify.max_user_groups` (needs root in the initial user
    /// namespace and a writable /proc/sys).
    pub fn set_fanotify_max_user_groups(&self, value: u64) -> Result<(), ProcError> {
        let path = self.root.join(MAX_USER_GROUPS);
        fs::write(&path, value.to_string()).map_err(|source| ProcError::Io { path, source })
    }
}

const MAX_USER_GROUPS: &str = "sys/fs/fanotify/max_user_groups";

/// The numeric entries of a /proc directory, in directory order: process
/// IDs ([`ProcFs::pids`]), thread IDs ([`ProcFs::tasks`]) or file
/// descriptors ([`ProcFs::fds`]). Other entries (`self`, `sys`, ...) are
/// skipped; an entry that cannot be read yields an error item.
#[derive(Debug)]
pub struct Entries {
    dir: fs::ReadDir,
    path: PathBuf,
    /// Whether `0` is a valid entry (fd 0 is; pid 0 is not).
    zero: bool,
}

impl Iterator for Entries {
    type Item = Result<u32, ProcError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let entry = match self.dir.next()? {
                Ok(entry) => entry,
                Err(source) => return Some(Err(ProcError::Io { path: self.path.clone(), source })),
            };
            if let Some(n) = entry.file_name().to_str().and_then(|n| parse_number(n, self.zero)) {
                return Some(Ok(n));
            }
        }
    }
}

/// A directory name that is a plain decimal number (no sign, no leading
/// `+`, fits in `u32`; `0` only if `zero`).
fn parse_number(name: &str, zero: bool) -> Option<u32> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|&n| zero || n != 0)
}

/// Reads a file into `buf`, reusing its allocation; invalid UTF-8 is
/// replaced rather than an error.
fn read_lossy(path: &Path, buf: &mut String) -> io::Result<()> {
    let mut bytes = std::mem::take(buf).into_bytes();
    bytes.clear();
    let read = fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes));
    *buf = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    if read.is_err() {
        buf.clear();
    }
    read.map(drop)
}

/// ENOENT (the entry is gone) or ESRCH (the process exited while the file
/// was read) under a numbered process is [`ProcError::Gone`]; anything
/// else, and anything under `self`, is [`ProcError::Io`].
fn io_error(pid: Pid, path: PathBuf, source: io::Error) -> ProcError {
    const ESRCH: i32 = 3;
    match pid {
        Pid::Id(pid) if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(ESRCH) => {
            ProcError::Gone { pid }
        }
        _ => ProcError::Io { path, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0", false), None);
        assert_eq!(parse_number("0", true), Some(0));
        assert_eq!(parse_number("+5", false), None);
        assert_eq!(parse_number("-5", false), None);
        assert_eq!(parse_number("", false), None);
        assert_eq!(parse_number("self", false), None);
        assert_eq!(parse_number("99999999999", false), None);
        assert_eq!(parse_number("42", false), Some(42));
    }

    #[test]
    fn paths() {
        let p = ProcFs::new("/x");
        assert_eq!(p.path(7, "stat"), Path::new("/x/7/stat"));
        assert_eq!(p.path(Pid::SelfProc, "task/3/schedstat"), Path::new("/x/self/task/3/schedstat"));
        assert_eq!(p.path(7, ""), Path::new("/x/7"));
        assert_eq!(ProcFs::default().root(), Path::new("/proc"));
    }

    /// A fake proc root with processes 1 and 42 and non-process entries.
    fn fake() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["1", "42/task/42", "42/task/43", "self", "sys", "0"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("uptime"), "1.0 1.0\n").unwrap();
        fs::write(root.join("42/stat"), "42 (a) b)) S 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 2 0 555 0 0\n").unwrap();
        fs::write(root.join("42/comm"), b"a\xffb\n").unwrap();
        fs::write(root.join("42/cgroup"), "0::/kubepods/x\n").unwrap();
        fs::write(root.join("42/task/42/schedstat"), "100 5 2\n").unwrap();
        fs::write(root.join("42/task/43/schedstat"), "garbage\n").unwrap();
        fs::write(root.join("1/cgroup"), "0::/a\nnot a line\n").unwrap();
        // A directory where a file should be: EISDIR, a real error.
        fs::create_dir_all(root.join("1/stat")).unwrap();
        dir
    }

    #[test]
    fn fake_tree() {
        let dir = fake();
        let p = ProcFs::new(dir.path());
        let mut pids: Vec<u32> = p.pids().unwrap().map(Result::unwrap).collect();
        pids.sort();
        assert_eq!(pids, [1, 42]);

        let s = p.stat(42).unwrap();
        assert_eq!((s.pid, s.comm.as_str(), s.state, s.ppid, s.start_time), (42, "a) b)", 'S', 1, 555));
        assert_eq!(p.comm(42).unwrap(), "a\u{fffd}b");

        let mut buf = String::from("old contents");
        let lines = p.cgroups(42, &mut buf).unwrap();
        assert_eq!(lines, [CgroupLine { hierarchy: 0, controllers: "", path: "/kubepods/x" }]);
        let err = p.cgroups(1, &mut buf).unwrap_err();
        assert!(matches!(err, ProcError::Parse { .. }), "{err:?}");
        assert!(err.to_string().contains("1/cgroup"), "{err}");

        let mut tids: Vec<u32> = p.tasks(42).unwrap().map(Result::unwrap).collect();
        tids.sort();
        assert_eq!(tids, [42, 43]);
        assert_eq!(p.task_schedstat(42, 42).unwrap().run_ns, 100);
        assert!(matches!(p.task_schedstat(42, 43), Err(ProcError::Parse { .. })));

        // Gone: no such process, or its file vanished.
        assert!(matches!(p.stat(7), Err(ProcError::Gone { pid: 7 })));
        assert!(p.status(42).unwrap_err().is_gone());
        assert!(p.exe(42).unwrap_err().is_gone());
        // A real error is not "gone".
        let err = p.stat(1).unwrap_err();
        assert!(matches!(err, ProcError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("1/stat"), "{err}");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::IsADirectory);
        // A read error leaves the buffer empty, not half-filled or stale.
        buf.push_str("stale");
        assert!(p.read_into(1, "stat", &mut buf).is_err());
        assert!(buf.is_empty());
        assert!(p.exists(42) && !p.exists(7));

        // A missing root is an error, not an empty list.
        let err = ProcFs::new(dir.path().join("nope")).pids().unwrap_err();
        assert!(matches!(err, ProcError::Io { .. }) && err.to_string().contains("nope"), "{err}");
        // Under `self`, a missing file is not a process that exited.
        assert!(matches!(p.stat(Pid::SelfProc), Err(ProcError::Io { .. })));
    }

    #[test]
    fn real_proc_self() {
        let p = ProcFs::default();
        let me = std::process::id();
        let s = p.stat(Pid::SelfProc).unwrap();
        assert_eq!(s.pid, me);
        assert_eq!(s.ppid, std::os::unix::process::parent_id());
        assert!(s.start_time > 0);
        assert_eq!(p.stat(me).unwrap().start_time, s.start_time);
        // The main thread's state: the test runs on another thread.
        assert!(s.state.is_ascii_uppercase(), "{s:?}");

        let st = p.status(Pid::SelfProc).unwrap();
        assert!(st.vm_rss_kib.is_some_and(|k| k > 0));
        let meta = std::os::unix::fs::MetadataExt::uid(&fs::metadata("/proc/self").unwrap());
        assert_eq!(st.uid.effective, meta);

        assert_eq!(p.exe(Pid::SelfProc).unwrap(), std::env::current_exe().unwrap());
        assert!(!p.comm(me).unwrap().is_empty());
        assert!(p.pids().unwrap().map(Result::unwrap).any(|pid| pid == me));

        let mut buf = String::new();
        let cg = p.cgroups(Pid::SelfProc, &mut buf).unwrap();
        assert!(!cg.is_empty() && cg.iter().all(|l| l.path.starts_with('/')), "{cg:?}");
        let mounts = p.mountinfo(Pid::SelfProc).unwrap();
        assert!(mounts.iter().any(|m| m.mount_point == Path::new("/proc") && m.fs_type == "proc"), "{mounts:?}");

        let tid = p.current_tid().unwrap();
        let tids: Vec<u32> = p.tasks(Pid::SelfProc).unwrap().map(Result::unwrap).collect();
        assert!(tids.contains(&tid) && tids.contains(&me), "{tid} {tids:?}");
        let _ = p.task_schedstat(Pid::SelfProc, tid).unwrap();

        let open = fs::File::open("/proc/self/stat").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&open) as u32;
        let fds: Vec<u32> = p.fds(Pid::SelfProc).unwrap().map(Result::unwrap).collect();
        assert!(fds.contains(&fd), "{fd} {fds:?}");
        assert_eq!(p.fd_target(Pid::SelfProc, fd).unwrap(), Path::new(&format!("/proc/{me}/stat")));
        assert!(p.fdinfo(Pid::SelfProc, fd).unwrap().fanotify_inodes.is_empty());
        assert!(p.fanotify_fds(Pid::SelfProc).unwrap().is_empty());
    }
}
