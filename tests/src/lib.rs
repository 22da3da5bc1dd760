//! Helpers shared by the end-to-end tests: a real "other process" to open
//! files with (`janus-probe`), temporary guarded directories, and checks that
//! fail loudly when the machine cannot run a test (not root, no fanotify).
#![forbid(unsafe_code)]

pub mod container;
pub mod pki;

/// `janus.v1` as the first release (0.1) defined it: messages and client,
/// to play a 0.1 peer against this release (mixed-version tests).
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod legacy {
    tonic::include_proto!("janus.v1");
}

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use janus_procfs::{Pid, ProcFs};

/// Path of the probe binary built with this package: next to the test
/// executable's `deps/` directory (cargo builds it for integration tests).
pub fn probe_bin() -> std::path::PathBuf {
    target_bin("janus-probe")
}

/// A binary of this workspace in the same target directory as the running
/// test (`target/<profile>/NAME`).
pub fn target_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("deps dir");
    let dir = if dir.ends_with("deps") { dir.parent().expect("profile dir") } else { dir };
    let bin = dir.join(name);
    assert!(bin.exists(), "{} not built; run the tests through cargo test --workspace", bin.display());
    bin
}

/// Fails the test with a clear message unless running as root.
pub fn require_root() {
    let uid = ProcFs::default().status(Pid::SelfProc).ok().map(|s| s.uid.real);
    assert_eq!(
        uid,
        Some(0),
        "this test needs root (fanotify permission events need CAP_SYS_ADMIN); run it with sudo or as root"
    );
}

/// Runs `janus-probe OP PATH` in a separate process and returns its result
/// word (`ok`, `EPERM`, ...). The probe kills itself after 30 s.
pub fn probe(op: &str, path: impl AsRef<Path>) -> String {
    let out =
        Command::new(probe_bin()).arg(op).arg(path.as_ref()).stdin(Stdio::null()).output().expect("run janus-probe");
    assert!(out.status.code() != Some(99), "janus-probe hung (watchdog): {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Repeats `probe` until it returns `want` or `timeout` passes; returns the
/// last result. For effects that a background thread applies (new
/// directories are marked by the watcher a moment after they appear).
pub fn probe_until(op: &str, path: impl AsRef<Path>, want: &str, timeout: Duration) -> String {
    let end = Instant::now() + timeout;
    loop {
        let got = probe(op, path.as_ref());
        if got == want || Instant::now() > end {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `contents` to `path`, creating parent directories.
pub fn write(path: impl AsRef<Path>, contents: &str) {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent");
    }
    std::fs::write(path, contents).expect("write file");
}

/// Counts fanotify groups held by process `pid`.
pub fn fanotify_fds(pid: u32) -> usize {
    ProcFs::default().fanotify_fds(pid).map_or(0, |fds| fds.len())
}

/// Inode numbers that fanotify groups held by process `pid` have marks on
/// (from `/proc/<pid>/fdinfo`).
pub fn marked_inodes(pid: u32) -> std::collections::HashSet<u64> {
    let proc = ProcFs::default();
    let fds = proc.fanotify_fds(pid).unwrap_or_default();
    fds.into_iter().filter_map(|fd| proc.fdinfo(pid, fd).ok()).flat_map(|i| i.fanotify_inodes).collect()
}

/// Inode numbers of `dir` and everything below it.
pub fn inodes_under(dir: &Path) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        out.push(m.ino());
        if m.is_dir()
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    out
}

/// A directory bind-mounted onto itself, so that it is a mount of its own.
///
/// The engine marks the whole mount that holds a guarded tree (so files
/// created where no mark exists yet are still decided). A test directory
/// under `/tmp` sits on the machine's root mount; guarding it as is would
/// send every open on the machine through the test's listener. Tests guard
/// directories inside an `OwnMount` instead. Unmounted (lazily) on drop.
#[must_use = "the mount is removed when this is dropped"]
#[derive(Debug)]
pub struct OwnMount {
    path: std::path::PathBuf,
}

impl OwnMount {
    /// Bind-mounts `dir` onto itself. Panics with the reason if it cannot
    /// (not root, `mount` missing).
    pub fn new(dir: &Path) -> OwnMount {
        let st = Command::new("mount")
            .arg("--bind")
            .arg(dir)
            .arg(dir)
            .status()
            .unwrap_or_else(|e| panic!("run mount --bind {}: {e} (needs util-linux mount)", dir.display()));
        assert!(st.success(), "mount --bind {0} {0} failed: {st} (needs root)", dir.display());
        // Keep mounts made below it (tmpfs in some tests) out of the parent.
        let _ = Command::new("mount").arg("--make-private").arg(dir).status();
        OwnMount { path: dir.to_path_buf() }
    }

    /// The mounted directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg("-l").arg(&self.path).stderr(Stdio::null()).status();
    }
}

/// A temporary directory that is a mount of its own ([`OwnMount`]), for
/// tests that guard paths inside it. Unmounted, then removed, on drop.
#[derive(Debug)]
pub struct GuardedDir {
    _mount: OwnMount,
    dir: tempfile::TempDir,
}

impl GuardedDir {
    /// Creates `/tmp/<prefix>XXXXXX` and bind-mounts it onto itself.
    pub fn new(prefix: &str) -> GuardedDir {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("create a temporary directory");
        GuardedDir { _mount: OwnMount::new(dir.path()), dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
