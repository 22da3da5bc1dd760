//! Real test "containers", so tests can play kubelet: a process in its own
//! mount namespace and root filesystem, placed in a cgroup named the way
//! containerd, CRI-O or Docker name them.
//!
//! [`TestContainer::start`] builds a root filesystem under
//! `/tmp/janus-ctr-XXXXXX/rootfs` (the given files, a copy of `janus-probe` at
//! `/probe`, and — in the container's mount namespace only — read-only binds
//! of the host's `/usr` and library directories, `/etc/ld.so.cache`,
//! `/dev/null` and a fresh `/proc`), creates the cgroup for the [`Layout`],
//! and starts `unshare --mount --propagation private --fork --kill-child`
//! running a shell that binds, reports its pid, waits until it has been moved
//! into the cgroup, then `chroot`s and execs `/probe serve`. No pid namespace:
//! the pid the probe reports is the host pid.
//!
//! Process tree: test -> `unshare` (the "shim"; for CRI-O layouts it sits in
//! the `crio-conmon-<id>.scope` cgroup like conmon) -> main process (in the
//! container's cgroup). [`TestContainer::exec_op`] starts a process that is no
//! descendant of the main one (like `kubectl exec`): a shell that adds itself
//! to the container's cgroup and execs `nsenter --mount --root` into `/probe`.
//!
//! Everything is root-only. Every wait has a timeout. Dropping a container
//! kills its processes, removes its cgroups and its directory (after checking
//! nothing is mounted under it on the host).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use janus_procfs::{Mount, Pid, ProcFs};

/// How long `start`, `restart` and `stop` wait for each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time [`TestContainer::op`] waits for an answer.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`TestContainer::exec_op`] lets its process run.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(15);
/// Watchdog of the container's main process (`JANUS_PROBE_WATCHDOG`), unless
/// the environment sets one: a test can keep a container this long.
pub const SERVE_WATCHDOG_SECS: u32 = 600;

/// Host directories bound read-only into the root filesystem (or recreated
/// as the same symlink where the host has a symlink, e.g. merged /usr).
const HOST_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// v1 hierarchies tried, in order, for the cgroupfs v1 layouts. Not memory
/// (a sandbox may account the tests there) and not cpuset (a new cpuset
/// cgroup has no CPUs until configured).
const V1_CONTROLLERS: &[&str] = &["pids", "freezer", "devices", "cpu", "cpuacct", "blkio", "net_cls", "perf_event"];

/// Where a container's cgroup is and how it is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// containerd, systemd driver, cgroup v2:
    /// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`.
    ContainerdSystemdV2,
    /// containerd, cgroupfs driver, cgroup v2, Guaranteed QoS (no QoS
    /// directory): `/kubepods/pod<uid>/<id>`.
    ContainerdCgroupfsV2,
    /// containerd, systemd driver, v1 `name=systemd` hierarchy (same path as
    /// [`Layout::ContainerdSystemdV2`]).
    ContainerdSystemdV1,
    /// containerd, cgroupfs driver, a v1 controller hierarchy (`pids` where
    /// mounted): `/kubepods/burstable/pod<uid>/<id>`.
    ContainerdCgroupfsV1,
    /// CRI-O, systemd driver, cgroup v2:
    /// `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/crio-<id>.scope`,
    /// with its monitor in `crio-conmon-<id>.scope` beside it.
    CrioSystemdV2,
    /// CRI-O, cgroupfs driver, a v1 controller hierarchy:
    /// `/kubepods/besteffort/pod<uid>/crio-<id>` (monitor: `crio-conmon-<id>`).
    CrioCgroupfsV1,
    /// Docker (cri-dockerd), systemd driver, cgroup v2:
    /// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/docker-<id>.scope`.
    DockerSystemdV2,
    /// Docker, cgroupfs driver, a v1 controller hierarchy: `/docker/<id>`.
    DockerCgroupfsV1,
}

/// Which cgroup hierarchy a layout lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hierarchy {
    V2,
    V1Systemd,
    V1Controller,
}

impl Layout {
    /// Every layout.
    pub const ALL: [Layout; 8] = [
        Layout::ContainerdSystemdV2,
        Layout::ContainerdCgroupfsV2,
        Layout::ContainerdSystemdV1,
        Layout::ContainerdCgroupfsV1,
        Layout::CrioSystemdV2,
        Layout::CrioCgroupfsV1,
        Layout::DockerSystemdV2,
        Layout::DockerCgroupfsV1,
    ];

    /// The runtime scheme of the container ID (`containerd`, `cri-o`, `docker`).
    pub fn scheme(self) -> &'static str {
        match self {
            Layout::ContainerdSystemdV2
            | Layout::ContainerdCgroupfsV2
            | Layout::ContainerdSystemdV1
            | Layout::ContainerdCgroupfsV1 => "containerd",
            Layout::CrioSystemdV2 | Layout::CrioCgroupfsV1 => "cri-o",
            Layout::DockerSystemdV2 | Layout::DockerCgroupfsV1 => "docker",
        }
    }

    fn hierarchy(self) -> Hierarchy {
        match self {
            Layout::ContainerdSystemdV2
            | Layout::ContainerdCgroupfsV2
            | Layout::CrioSystemdV2
            | Layout::DockerSystemdV2 => Hierarchy::V2,
            Layout::ContainerdSystemdV1 => Hierarchy::V1Systemd,
            Layout::ContainerdCgroupfsV1 | Layout::CrioCgroupfsV1 | Layout::DockerCgroupfsV1 => Hierarchy::V1Controller,
        }
    }

    /// The container's cgroup path inside its hierarchy (starts with `/`).
    pub fn cgroup_path(self, id: &str, pod_uid: &str) -> String {
        let uid_ = pod_uid.replace('-', "_");
        let slice = |qos: &str| format!("/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{uid_}.slice");
        match self {
            Layout::ContainerdSystemdV2 | Layout::ContainerdSystemdV1 => {
                format!("{}/cri-containerd-{id}.scope", slice("burstable"))
            }
            Layout::ContainerdCgroupfsV2 => format!("/kubepods/pod{pod_uid}/{id}"),
            Layout::ContainerdCgroupfsV1 => format!("/kubepods/burstable/pod{pod_uid}/{id}"),
            Layout::CrioSystemdV2 => format!("{}/crio-{id}.scope", slice("besteffort")),
            Layout::CrioCgroupfsV1 => format!("/kubepods/besteffort/pod{pod_uid}/crio-{id}"),
            Layout::DockerSystemdV2 => format!("{}/docker-{id}.scope", slice("burstable")),
            Layout::DockerCgroupfsV1 => format!("/docker/{id}"),
        }
    }

    /// CRI-O's monitor (conmon) cgroup, beside the container's.
    pub fn conmon_path(self, id: &str, pod_uid: &str) -> Option<String> {
        let path = self.cgroup_path(id, pod_uid);
        match self {
            Layout::CrioSystemdV2 => {
                Some(path.replace(&format!("/crio-{id}.scope"), &format!("/crio-conmon-{id}.scope")))
            }
            Layout::CrioCgroupfsV1 => Some(path.replace(&format!("/crio-{id}"), &format!("/crio-conmon-{id}"))),
            _ => None,
        }
    }

    /// The directory levels that belong to one pod (removed with it), counted
    /// from the container's cgroup: container, pod. Docker's standalone
    /// layout has no pod level.
    fn own_levels(self) -> usize {
        match self {
            Layout::DockerCgroupfsV1 => 1,
            _ => 2,
        }
    }

    /// The mounted hierarchy this layout uses on this host, if any.
    pub fn hierarchy_mount(self) -> Option<CgroupMount> {
        let mounts = cgroup_mounts();
        match self.hierarchy() {
            Hierarchy::V2 => mounts.v2,
            Hierarchy::V1Systemd => mounts.v1.get("name=systemd").cloned(),
            Hierarchy::V1Controller => V1_CONTROLLERS.iter().find_map(|c| mounts.v1.get(*c).cloned()),
        }
    }

    /// Whether this host has the hierarchy the layout needs (a pure cgroup v2
    /// host has no v1 layouts; a pure v1 host no v2 ones).
    pub fn available(self) -> bool {
        self.hierarchy_mount().is_some()
    }
}

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/unified`.
    pub mount_point: PathBuf,
    /// The mount's root inside the hierarchy (`/` unless the mount shows a
    /// subtree, as in a container with its own cgroup namespace).
    pub root: String,
}

impl CgroupMount {
    /// The path that `/proc/<pid>/cgroup` shows for a cgroup at `rel` (a path
    /// below this mount, starting with `/`), for processes in this cgroup
    /// namespace.
    pub fn proc_path(&self, rel: &str) -> String {
        if self.root == "/" { rel.to_string() } else { format!("{}{rel}", self.root.trim_end_matches('/')) }
    }
}

/// The cgroup hierarchies mounted in this mount namespace.
#[derive(Debug, Clone, Default)]
pub struct CgroupMounts {
    /// The cgroup2 mount: `/sys/fs/cgroup` on a pure v2 host,
    /// `/sys/fs/cgroup/unified` on a hybrid one.
    pub v2: Option<CgroupMount>,
    /// v1 hierarchies by controller (`pids`, `cpu`, ...) and by name
    /// (`name=systemd`).
    pub v1: HashMap<String, CgroupMount>,
}

/// Reads `/proc/self/mountinfo` for cgroup and cgroup2 mounts. The first
/// mount of each hierarchy wins.
pub fn cgroup_mounts() -> CgroupMounts {
    let mut text = String::new();
    let _ = ProcFs::default().read_into(Pid::SelfProc, "mountinfo", &mut text);
    parse_cgroup_mounts(&text)
}

fn parse_cgroup_mounts(mountinfo: &str) -> CgroupMounts {
    let mut out = CgroupMounts::default();
    for m in Mount::parse_all(mountinfo).flatten() {
        let mount = CgroupMount { mount_point: m.mount_point, root: m.root };
        match m.fs_type.as_str() {
            "cgroup2" => {
                out.v2.get_or_insert(mount);
            }
            "cgroup" => {
                for opt in m.super_options.split(',') {
                    let known = matches!(
                        opt,
                        "pids"
                            | "cpu"
                            | "cpuacct"
                            | "cpuset"
                            | "memory"
                            | "devices"
                            | "freezer"
                            | "blkio"
                            | "net_cls"
                            | "net_prio"
                            | "perf_event"
                            | "hugetlb"
                            | "rdma"
                            | "misc"
                    );
                    if known || opt.starts_with("name=") {
                        out.v1.entry(opt.to_string()).or_insert_with(|| mount.clone());
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Shared ancestor cgroup directories (`/kubepods.slice`, ...) that this
/// process created, with how many live containers use each. Also serializes
/// creating and removing them, so one test's cleanup cannot remove a
/// directory another test is about to create a child in.
static SHARED_CGROUPS: Mutex<Option<HashMap<PathBuf, usize>>> = Mutex::new(None);

/// The cgroup directories of one container.
#[derive(Debug)]
struct Cgroups {
    /// The container's cgroup directory.
    dir: PathBuf,
    /// CRI-O's monitor cgroup directory.
    conmon: Option<PathBuf>,
    /// Directories owned by this container (container, conmon, pod), in the
    /// order to remove them.
    own: Vec<PathBuf>,
    /// Shared ancestors this process created, deepest first.
    shared: Vec<PathBuf>,
}

impl Cgroups {
    fn create(mount: &Path, rel: &str, conmon_rel: Option<&str>, own_levels: usize) -> Cgroups {
        let dir = mount.join(rel.trim_start_matches('/'));
        let conmon = conmon_rel.map(|r| mount.join(r.trim_start_matches('/')));
        // Shallowest first: the shared levels between the mount and the pod,
        // then the pod (and container) levels this container owns.
        let mut levels: Vec<PathBuf> = dir.ancestors().take_while(|p| *p != mount).map(Path::to_path_buf).collect();
        levels.reverse();
        let first_own = levels.len().saturating_sub(own_levels);
        let mut guard = SHARED_CGROUPS.lock().unwrap_or_else(|e| e.into_inner());
        let counts = guard.get_or_insert_with(HashMap::new);
        // Shared levels this container holds a count on.
        let mut shared: Vec<PathBuf> = Vec::new();
        let mut attempt = 0;
        'retry: loop {
            attempt += 1;
            for (i, p) in levels.iter().chain(conmon.as_ref()).enumerate() {
                let is_shared = i < first_own;
                if is_shared
                    && !shared.contains(p)
                    && let Some(n) = counts.get_mut(p)
                {
                    *n += 1;
                    shared.push(p.clone());
                }
                match std::fs::create_dir(p) {
                    Ok(()) => {
                        if is_shared && !shared.contains(p) {
                            counts.insert(p.clone(), 1);
                            shared.push(p.clone());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    // Another process removed an ancestor meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < 50 => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue 'retry;
                    }
                    Err(e) => panic!("cannot create cgroup {}: {e}", p.display()),
                }
            }
            break;
        }
        // Deepest first: conmon and container before the pod.
        let mut own: Vec<PathBuf> = levels[first_own..].to_vec();
        own.extend(conmon.clone());
        own.reverse();
        shared.reverse();
        Cgroups { dir, conmon, own, shared }
    }

    /// Removes the container's directories (waiting for them to empty) and
    /// the shared ones no other container of this process uses. Returns the
    /// directories that could not be removed.
    fn remove(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        for d in self.own.drain(..) {
            if let Err(e) = rmdir_retry(&d, STEP_TIMEOUT) {
                failed.push(format!("{}: {e}", d.display()));
            }
        }
        let mut guard = SHARED_CGROUPS.lock().unwrap_or_else(|e| e.into_inner());
        let counts = guard.get_or_insert_with(HashMap::new);
        for d in self.shared.drain(..) {
            let Some(n) = counts.get_mut(&d) else { continue };
            *n -= 1;
            if *n == 0 {
                counts.remove(&d);
                // Best effort: another process may use it too.
                let _ = std::fs::remove_dir(&d);
            }
        }
        failed
    }
}

fn rmdir_retry(dir: &Path, timeout: Duration) -> std::io::Result<()> {
    let end = Instant::now() + timeout;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() > end => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Pids listed in a cgroup directory's `cgroup.procs`.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Sends SIGKILL to `pids` (with the `kill` command: this crate has no unsafe).
fn kill_pids(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Start time (field 22 of `/proc/<pid>/stat`), if the process exists.
pub fn start_time(pid: u32) -> Option<u64> {
    ProcFs::default().stat(pid).ok().map(|s| s.start_time)
}

/// Parent pid (field 4 of `/proc/<pid>/stat`), if the process exists.
pub fn parent_pid(pid: u32) -> Option<u32> {
    ProcFs::default().stat(pid).ok().map(|s| s.ppid)
}

/// Whether `pid` is `ancestor` or one of its descendants (walks parents).
pub fn is_descendant(pid: u32, ancestor: u32) -> bool {
    let mut p = pid;
    for _ in 0..4096 {
        if p == ancestor {
            return true;
        }
        match parent_pid(p) {
            Some(pp) if pp != 0 && pp != p => p = pp,
            _ => return false,
        }
    }
    false
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_uuid() -> String {
    let h = random_hex(16);
    // Version 4, variant 1.
    let variant = ["8", "9", "a", "b"][usize::from_str_radix(&h[16..17], 16).unwrap_or(0) % 4];
    format!("{}-{}-4{}-{}{}-{}", &h[0..8], &h[8..12], &h[13..16], variant, &h[17..20], &h[20..32])
}

/// Single-quotes `s` for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Waits for `child` (stdout/stderr piped), killing it after `timeout`.
fn wait_with_timeout(mut child: Child, timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let end = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    // The pipes close when the process (and anything that inherited them) exits.
    (status, out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

/// The running main process of a container.
#[derive(Debug)]
struct Main {
    /// `unshare`: the main process's parent (the "shim").
    shim: Child,
    /// Host pid of the main process.
    pid: u32,
    start_time: u64,
    /// Its stdin and stdout (locked per request, so `op` takes `&self`).
    io: Mutex<Io>,
}

#[derive(Debug)]
struct Io {
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// Requests whose answers timed out: their late answers are skipped.
    stale: usize,
}

/// A running test container. See the module documentation.
#[derive(Debug)]
pub struct TestContainer {
    layout: Layout,
    id: String,
    pod_uid: String,
    /// `/tmp/janus-ctr-XXXXXX`.
    dir: PathBuf,
    rootfs: PathBuf,
    cgroup_mount: CgroupMount,
    cgroup_rel: String,
    cgroups: Cgroups,
    /// The shell script the shim runs.
    script: String,
    main: Option<Main>,
    last_pid: u32,
    op_timeout: Duration,
}

impl TestContainer {
    /// Starts a container of `layout` whose root filesystem holds `files`
    /// (`(absolute path inside, contents)`): [`TestContainer::prepare`] then
    /// [`TestContainer::launch`]. Panics with a clear message if anything
    /// fails (not root, layout's hierarchy not mounted, ...).
    pub fn start(layout: Layout, files: &[(&str, &str)]) -> TestContainer {
        let mut c = TestContainer::prepare(layout, files);
        c.launch();
        c
    }

    /// Everything but the process: root filesystem, IDs and cgroups. The
    /// container is "created, not started" (its ID resolves to nothing)
    /// until [`TestContainer::launch`].
    pub fn prepare(layout: Layout, files: &[(&str, &str)]) -> TestContainer {
        let cgroup_mount = layout.hierarchy_mount().unwrap_or_else(|| {
            panic!("{layout:?}: this host has no mounted cgroup hierarchy for this layout (see /proc/self/mountinfo)")
        });
        let dir = tempfile::Builder::new()
            .prefix("janus-ctr-")
            .tempdir_in("/tmp")
            .expect("create /tmp/janus-ctr-XXXXXX")
            .keep();
        let rootfs = dir.join("rootfs");
        let script = build_rootfs(&rootfs, files);
        let id = random_hex(32);
        let pod_uid = random_uuid();
        let cgroup_rel = layout.cgroup_path(&id, &pod_uid);
        let conmon_rel = layout.conmon_path(&id, &pod_uid);
        let cgroups =
            Cgroups::create(&cgroup_mount.mount_point, &cgroup_rel, conmon_rel.as_deref(), layout.own_levels());
        TestContainer {
            layout,
            id,
            pod_uid,
            dir,
            rootfs,
            cgroup_mount,
            cgroup_rel,
            cgroups,
            script,
            main: None,
            last_pid: 0,
            op_timeout: OP_TIMEOUT,
        }
    }

    /// Starts the main process of a prepared or stopped container. Panics if
    /// it is running.
    pub fn launch(&mut self) {
        assert!(self.main.is_none(), "container already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .expect("open stderr.log");
        let watchdog = std::env::var("JANUS_PROBE_WATCHDOG").unwrap_or_else(|_| SERVE_WATCHDOG_SECS.to_string());
        let mut shim = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--fork", "--kill-child", "sh", "-c", &self.script])
            .env("JANUS_PROBE_WATCHDOG", watchdog)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run unshare (util-linux): {e}"));
        let stdin = shim.stdin.take().expect("stdin");
        let stdout = shim.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut main = Main { shim, pid: 0, start_time: 0, io: Mutex::new(Io { stdin, lines, stale: 0 }) };
        let layout = self.layout;
        let fail = |main: &mut Main, what: String| -> ! {
            kill_main(main);
            let log = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
            panic!("{layout:?}: {what}; container stderr: {log}");
        };
        // 1. The shell has set up the mounts and waits: move it.
        let ready = recv_line(&main.io.get_mut().unwrap_or_else(|e| e.into_inner()).lines, STEP_TIMEOUT);
        let pid = ready.as_deref().and_then(|l| l.strip_prefix("ready ")).and_then(|p| p.trim().parse::<u32>().ok());
        let Some(pid) = pid else { fail(&mut main, format!("container setup failed (got {ready:?})")) };
        main.pid = pid;
        if parent_pid(pid) != Some(main.shim.id()) {
            fail(&mut main, format!("the reported pid {pid} is not unshare's child"));
        }
        let mut moves = vec![(self.cgroups.dir.clone(), pid)];
        moves.extend(self.cgroups.conmon.iter().map(|d| (d.clone(), main.shim.id())));
        for (dir, p) in moves {
            if let Err(e) = std::fs::write(dir.join("cgroup.procs"), format!("{p}\n")) {
                fail(&mut main, format!("cannot move pid {p} into cgroup {}: {e}", dir.display()));
            }
        }
        // 2. Release it: it chroots and execs /probe serve, which says its pid.
        let io = main.io.get_mut().unwrap_or_else(|e| e.into_inner());
        let released = io.stdin.write_all(b"go\n").and_then(|()| io.stdin.flush());
        let hello = recv_line(&io.lines, STEP_TIMEOUT);
        if released.is_err() || hello.as_deref() != Some(&format!("pid {pid}")) {
            fail(&mut main, format!("probe did not start (got {hello:?}, want \"pid {pid}\")"));
        }
        main.start_time = start_time(pid).unwrap_or_else(|| fail(&mut main, format!("main process {pid} vanished")));
        self.last_pid = pid;
        self.main = Some(main);
    }

    /// Host pid of the container's main process (the last one if stopped, 0
    /// if never launched).
    pub fn pid(&self) -> u32 {
        self.main.as_ref().map_or(self.last_pid, |m| m.pid)
    }

    /// Whether the main process has been launched and not stopped.
    pub fn is_running(&self) -> bool {
        self.main.is_some()
    }

    /// Start time of the main process (field 22 of its `/proc/<pid>/stat`).
    pub fn start_time(&self) -> Option<u64> {
        self.main.as_ref().map(|m| m.start_time)
    }

    /// Pid of the main process's parent (`unshare`, in the conmon cgroup for
    /// CRI-O layouts), while running.
    pub fn shim_pid(&self) -> Option<u32> {
        self.main.as_ref().map(|m| m.shim.id())
    }

    /// The container ID as Kubernetes reports it: `containerd://<id>`,
    /// `cri-o://<id>` or `docker://<id>`.
    pub fn runtime_id(&self) -> String {
        format!("{}://{}", self.layout.scheme(), self.id)
    }

    /// The 64-hex container ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The pod's UID (a random UUID).
    pub fn pod_uid(&self) -> &str {
        &self.pod_uid
    }

    /// The layout it was started with.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The root filesystem on the host (`/tmp/janus-ctr-XXXXXX/rootfs`).
    /// Files written below it appear in the container (except under the
    /// bound host directories).
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// The container's cgroup directory on the host.
    pub fn cgroup_dir(&self) -> &Path {
        &self.cgroups.dir
    }

    /// The container's cgroup path as `/proc/<pid>/cgroup` shows it.
    pub fn cgroup_path(&self) -> String {
        self.cgroup_mount.proc_path(&self.cgroup_rel)
    }

    /// The cgroup hierarchy the container is in.
    pub fn cgroup_mount(&self) -> &CgroupMount {
        &self.cgroup_mount
    }

    /// Sets how long [`TestContainer::op`] waits for an answer.
    pub fn set_op_timeout(&mut self, t: Duration) {
        self.op_timeout = t;
    }

    /// Has the container's main process do `op` on `path` (`open`, `read`,
    /// `exec`, `list`, `spawn-open`, `whoami`, `cgroup`) and returns its
    /// answer (`ok`, `EPERM`, `ENOENT`, ...), `TIMEOUT` if none came in time
    /// (e.g. an opener blocked by a listener; its late answer is skipped),
    /// or `EXITED` if the process is gone. Panics if the container is stopped.
    pub fn op(&self, op: &str, path: &str) -> String {
        assert!(!op.contains([' ', '\n']) && !path.contains('\n'), "bad op {op:?} {path:?}");
        let main = self.main.as_ref().expect("op on a container that is not running");
        let mut guard = main.io.lock().unwrap_or_else(|e| e.into_inner());
        let io = &mut *guard;
        if writeln!(io.stdin, "{op} {path}").and_then(|()| io.stdin.flush()).is_err() {
            return "EXITED".into();
        }
        let end = Instant::now() + self.op_timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match io.lines.recv_timeout(left) {
                Ok(_) if io.stale > 0 => io.stale -= 1,
                Ok(line) => return line,
                Err(RecvTimeoutError::Timeout) => {
                    io.stale += 1;
                    return "TIMEOUT".into();
                }
                Err(RecvTimeoutError::Disconnected) => return "EXITED".into(),
            }
        }
    }

    /// Runs `/probe OP PATH` as a new process in the container (its mount
    /// namespace, root and cgroup) that is not a descendant of the main
    /// process, like `kubectl exec`, and returns its answer. Its parent is
    /// the calling test process. `TIMEOUT` if it ran longer than
    /// [`EXEC_TIMEOUT`]; `ERR:...` if it could not run.
    pub fn exec_op(&self, op: &str, path: &str) -> String {
        let (status, out, err) = wait_with_timeout(self.exec_spawn(&[op, path]), EXEC_TIMEOUT);
        let out = out.trim();
        match status {
            None => "TIMEOUT".into(),
            Some(_) if !out.is_empty() => out.to_string(),
            Some(s) => format!("ERR:{s}: {}", err.trim()),
        }
    }

    /// Starts `/probe ARGS...` as a new process in the container, like
    /// [`TestContainer::exec_op`], without waiting: e.g. `["hammer", "3",
    /// "/data/f"]` for load from inside. stdin is /dev/null, stdout and
    /// stderr are piped. The caller waits for it (the probe's watchdog,
    /// `JANUS_PROBE_WATCHDOG` or 30 s, bounds it); processes still in the
    /// container's cgroup are killed by [`TestContainer::stop`] and on drop.
    pub fn exec_spawn(&self, args: &[&str]) -> Child {
        let main = self.main.as_ref().expect("exec_spawn on a container that is not running");
        Command::new("sh")
            .args([
                "-c",
                r#"procs=$1 target=$2; shift 2
echo $$ > "$procs" && exec nsenter --target "$target" --mount --root --wd -- /probe "$@""#,
                "sh",
            ])
            .arg(self.cgroups.dir.join("cgroup.procs"))
            .arg(main.pid.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run sh: {e}"))
    }

    /// Kills the main process and starts a new one in the same cgroup and
    /// root filesystem (a new pid and start time).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Kills every process in the container (and its monitor) and waits for
    /// them to be gone. The cgroups and files stay until drop. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut main) = self.main.take() {
            self.last_pid = main.pid;
            self.kill_cgroup_members();
            kill_main(&mut main);
        }
        self.kill_cgroup_members();
        let end = Instant::now() + STEP_TIMEOUT;
        while self.cgroup_members().next().is_some() && Instant::now() < end {
            self.kill_cgroup_members();
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn cgroup_members(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(&self.cgroups.dir).chain(self.cgroups.conmon.as_ref()).flat_map(|d| cgroup_pids(d))
    }

    fn kill_cgroup_members(&self) {
        for d in std::iter::once(&self.cgroups.dir).chain(self.cgroups.conmon.as_ref()) {
            // cgroup v2 (Linux 5.14+): kill the whole cgroup at once.
            let _ = std::fs::write(d.join("cgroup.kill"), "1");
            kill_pids(&cgroup_pids(d));
        }
    }

    /// The container's stderr so far (setup errors, probe watchdog).
    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Mount points on the host (this mount namespace) at or below the
    /// container's directory. Always empty: the binds live in the
    /// container's private mount namespace.
    pub fn host_mounts_below(&self) -> Vec<PathBuf> {
        mounts_below(&self.dir)
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        self.stop();
        let failed = self.cgroups.remove();
        if !failed.is_empty() {
            eprintln!("janus-tests: could not remove cgroups: {failed:?}");
        }
        let mounted = mounts_below(&self.dir);
        if mounted.is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("janus-tests: could not remove {}: {e}", self.dir.display());
            }
        } else {
            // Never recurse into a mounted host directory: leave it.
            eprintln!(
                "janus-tests: {} has mounts below it on the host ({mounted:?}); not removing it",
                self.dir.display()
            );
        }
        if !failed.is_empty() && !std::thread::panicking() {
            panic!("test container cleanup failed: {failed:?}");
        }
    }
}

/// Kills the shim and the main process and reaps the shim (bounded wait).
fn kill_main(main: &mut Main) {
    if main.pid != 0 && start_time(main.pid).is_some_and(|t| main.start_time == 0 || t == main.start_time) {
        kill_pids(&[main.pid]);
    }
    let _ = main.shim.kill();
    let end = Instant::now() + STEP_TIMEOUT;
    loop {
        match main.shim.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                eprintln!("janus-tests: unshare (pid {}) did not exit after SIGKILL", main.shim.id());
                break;
            }
        }
    }
    // The main process is reparented and reaped once the shim is gone.
    while main.pid != 0 && start_time(main.pid) == Some(main.start_time) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn recv_line(rx: &Receiver<String>, timeout: Duration) -> Option<String> {
    rx.recv_timeout(timeout).ok()
}

/// Mount points (in this process's mount namespace) at or below `dir`.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mounts = ProcFs::default().mountinfo(Pid::SelfProc).expect("read /proc/self/mountinfo");
    mounts.into_iter().map(|m| m.mount_point).filter(|m| m.starts_with(dir)).collect()
}

/// Creates the root filesystem and returns the shell script that finishes
/// it inside the new mount namespace and starts the probe.
fn build_rootfs(rootfs: &Path, files: &[(&str, &str)]) -> String {
    let mkdir = |p: &Path| std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    let touch = |p: &Path| std::fs::write(p, "").unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    for d in ["etc", "dev", "proc", "tmp"] {
        mkdir(&rootfs.join(d));
    }
    let r = rootfs.to_str().expect("utf-8 temp path");
    let mut script = String::from("set -e\n");
    for host in HOST_DIRS {
        let inside = rootfs.join(host.trim_start_matches('/'));
        match std::fs::symlink_metadata(host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(host).expect("readlink");
                std::os::unix::fs::symlink(&target, &inside).expect("symlink in rootfs");
            }
            Ok(m) if m.is_dir() => {
                mkdir(&inside);
                script.push_str(&format!("mount -o bind,ro {} {}\n", sh_quote(host), sh_quote(&format!("{r}{host}"))));
            }
            _ => {}
        }
    }
    if Path::new("/etc/ld.so.cache").exists() {
        touch(&rootfs.join("etc/ld.so.cache"));
        script.push_str(&format!("mount -o bind,ro /etc/ld.so.cache {}\n", sh_quote(&format!("{r}/etc/ld.so.cache"))));
    }
    // Read-write: Stdio::null() opens it for writing too.
    touch(&rootfs.join("dev/null"));
    script.push_str(&format!("mount -o bind /dev/null {}\n", sh_quote(&format!("{r}/dev/null"))));
    script.push_str(&format!("mount -t proc proc {}\n", sh_quote(&format!("{r}/proc"))));
    let probe = rootfs.join("probe");
    std::fs::copy(crate::probe_bin(), &probe).expect("copy janus-probe into the rootfs");
    for (path, contents) in files {
        assert!(path.starts_with('/'), "container file path {path:?} must be absolute");
        assert!(!path.split('/').any(|c| c == ".."), "container file path {path:?} has '..'");
        crate::write(rootfs.join(path.trim_start_matches('/')), contents);
    }
    // Report the pid (no pid namespace: the host pid), wait to be moved into
    // the cgroup, then become the container's main process.
    script.push_str(&format!("echo \"ready $$\"\nread go\nexec chroot {} /probe serve\n", sh_quote(r)));
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_mountinfo() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";
        let m = parse_cgroup_mounts(text);
        assert_eq!(m.v2.unwrap().mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m.v1["pids"].mount_point, Path::new("/sys/fs/cgroup/pids"));
        assert_eq!(m.v1["cpuacct"].mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m.v1["name=systemd"].mount_point, Path::new("/sys/fs/cgroup/systemd"));
        assert!(!m.v1.contains_key("rw") && !m.v1.contains_key("xattr"));
    }

    #[test]
    fn parses_pure_v2_mountinfo_with_namespace_root() {
        let text = "29 23 0:26 /kubepods.slice /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let m = parse_cgroup_mounts(text);
        let v2 = m.v2.unwrap();
        assert_eq!(v2.mount_point, Path::new("/sys/fs/cgroup x"));
        assert_eq!(v2.proc_path("/a/b"), "/kubepods.slice/a/b");
        assert!(m.v1.is_empty());
        for l in Layout::ALL {
            let id = "ab".repeat(32);
            let p = l.cgroup_path(&id, "0f6c3a8e-5b1d-4c2a-9e7f-1a2b3c4d5e6f");
            assert!(p.starts_with('/') && p.contains(&id), "{l:?}: {p}");
            if let Some(c) = l.conmon_path(&id, "u") {
                assert!(c.contains(&format!("crio-conmon-{id}")), "{c}");
            }
        }
    }

    #[test]
    fn ids() {
        let id = random_hex(32);
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    }
}
