//! Resolving a runtime container ID (`containerd://<id>`) to its processes on
//! this host, by reading /proc.
//!
//! Kubernetes reports a container as `<runtime>://<id>`. Every runtime puts the
//! container's processes in a cgroup whose name carries the ID; only the naming
//! differs by runtime and cgroup driver:
//!
//! | runtime    | systemd driver              | cgroupfs driver                          |
//! |------------|-----------------------------|------------------------------------------|
//! | containerd | `cri-containerd-<id>.scope` | `/kubepods[/<qos>]/pod<uid>/<id>`        |
//! | CRI-O      | `crio-<id>.scope`           | `/kubepods[/<qos>]/pod<uid>/crio-<id>`   |
//! | Docker     | `docker-<id>.scope`         | `/docker/<id>`, `/kubepods/.../<id>`     |
//!
//! The same names appear in the cgroup v2 line (`0::/path`) and in every v1
//! line (`N:ctrl[,ctrl]:/path`, including `N:name=systemd:/path`) of
//! `/proc/<pid>/cgroup`, so every line is checked and any one that names the
//! container is enough (hybrid hosts may have the container only in some
//! hierarchies).
//!
//! A path component must equal one of these names exactly: an ID never
//! matches as a prefix of a longer ID, and CRI-O's monitor (`crio-conmon-<id>`)
//! is not the container. The component may be the last one or a deeper
//! ancestor: crun on cgroup v2 puts the container's processes in
//! `crio-<id>.scope/container`, and a container that creates its own
//! sub-cgroups keeps them under its own. Components are compared literally, so
//! paths relative to a cgroup namespace (`/../../kubepods.slice/...`) work.
//!
//! Of the matching processes, the container's init process is the one whose
//! parent is outside the container (the shim or conmon). `kubectl exec`
//! processes also have an outside parent; they started later, so the lowest
//! start time wins.

use std::path::{Path, PathBuf};

use janus_procfs::{CgroupLine, ProcError, ProcFs, Stat};

pub use janus_api::{ContainerId, ContainerIdError, Runtime};

/// Where a container's processes live in the cgroup tree, by runtime and
/// cgroup driver (see the module docs).
pub trait CgroupMatch {
    /// Whether one component of a cgroup path is this container's cgroup
    /// under any of its runtime's naming schemes (exact match only).
    fn names_cgroup(&self, component: &str) -> bool;

    /// Whether a cgroup path lies in this container's cgroup (or below it).
    fn in_cgroup_path(&self, path: &str) -> bool {
        path.split('/').any(|c| self.names_cgroup(c))
    }

    /// Whether the contents of a `/proc/<pid>/cgroup` file put the process in
    /// this container, in any hierarchy (v2 `0::/path` or v1 `N:ctrls:/path`).
    /// Malformed lines name no container.
    fn in_proc_cgroup(&self, contents: &str) -> bool {
        CgroupLine::parse_all(contents).flatten().any(|line| self.in_cgroup_path(line.path))
    }
}

impl CgroupMatch for ContainerId {
    fn names_cgroup(&self, component: &str) -> bool {
        let id = self.id.as_str();
        let wrapped = |prefix: &str, suffix: &str| {
            component.strip_prefix(prefix).and_then(|r| r.strip_suffix(suffix)).is_some_and(|r| r == id)
        };
        match self.runtime {
            Runtime::Containerd => component == id || wrapped("cri-containerd-", ".scope"),
            // `crio-conmon-<id>...` strips to `conmon-<id>...`, never to the ID.
            Runtime::CriO => wrapped("crio-", ".scope") || wrapped("crio-", ""),
            Runtime::Docker => component == id || wrapped("docker-", ".scope"),
        }
    }
}

/// A process in a container's cgroup, as read from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Process ID (in the namespace of the proc root that was read).
    pub pid: u32,
    /// Parent's process ID (field 4 of `/proc/<pid>/stat`).
    pub ppid: u32,
    /// Start time in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
    pub start_time: u64,
}

/// A container's init process: where its files are reached from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerProcess {
    /// Process ID.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: with `pid`, identifies this run of
    /// the container; a restart (or a reused pid) has another start time.
    pub start_time: u64,
    /// `<proc_root>/<pid>/root`: the container's root directory.
    pub root: PathBuf,
}

impl ContainerProcess {
    /// Whether the process still exists and is the same process (same start
    /// time), i.e. the container has not stopped or restarted since.
    pub fn still_running(&self, proc_root: &Path) -> bool {
        ProcFs::new(proc_root).stat(self.pid).is_ok_and(|s| s.start_time == self.start_time)
    }
}

/// Finds the init process of container `c` by scanning `<proc_root>/<pid>`.
///
/// Returns `Ok(None)` when no process is in the container's cgroup (not
/// started yet, or gone). Processes that exit during the scan are skipped.
/// Fails only when `proc_root` cannot be listed, or when nothing matched and
/// some process could not be read for another reason (so "not running" is not
/// reported when it could not be checked).
///
/// A process that is in the cgroup but still has the node's root (or the
/// agent's) as its root directory is not the container yet: runtimes move
/// `runc init` into the cgroup *before* it pivots into the container's root
/// filesystem. Guarding it then would mark the node's own files, so it is
/// reported as not started (`Ok(None)`) and resolved again later.
pub fn resolve(proc_root: &Path, c: &ContainerId) -> Result<Option<ContainerProcess>, ProcError> {
    let procs = processes(proc_root, c)?;
    let Some(p) = pick_init(&procs) else {
        return Ok(None);
    };
    let root = proc_root.join(p.pid.to_string()).join("root");
    if !in_own_root(proc_root, &root) {
        tracing::debug!(pid = p.pid, container = %c, "process has not entered its root filesystem yet");
        return Ok(None);
    }
    Ok(Some(ContainerProcess { pid: p.pid, start_time: p.start_time, root }))
}

/// Whether `root` (a `<pid>/root` link) is a directory other than the node's
/// root (`<proc_root>/1/root`) and the agent's own root. A root that cannot
/// be read (the process is gone) is not. A reference that cannot be read
/// (fixtures without those links) is not compared against.
fn in_own_root(proc_root: &Path, root: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(own) = std::fs::metadata(root) else {
        return false;
    };
    let same = |other: &Path| std::fs::metadata(other).is_ok_and(|m| m.dev() == own.dev() && m.ino() == own.ino());
    !same(&proc_root.join("1/root")) && !same(&proc_root.join("self/root")) && !same(Path::new("/"))
}

/// Every process in container `c`'s cgroup (or below it), in /proc order.
/// Same error rules as [`resolve`].
pub fn processes(proc_root: &Path, c: &ContainerId) -> Result<Vec<ProcessInfo>, ProcError> {
    let proc = ProcFs::new(proc_root);
    let mut out = Vec::new();
    let mut first_error: Option<ProcError> = None;
    let mut buf = String::new();
    for pid in proc.pids()? {
        match scan_one(&proc, pid?, c, &mut buf) {
            Ok(Some(info)) => out.push(info),
            Ok(None) | Err(ProcError::Gone { .. }) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if out.is_empty() => Err(e),
        _ => Ok(out),
    }
}

/// The init process among a container's processes: the one whose parent is
/// not in the container; if several (exec'd processes), the earliest
/// started, then the lowest pid. If every parent is inside (cannot happen
/// short of a race), the earliest started overall.
pub fn pick_init(procs: &[ProcessInfo]) -> Option<&ProcessInfo> {
    let mut pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    pids.sort_unstable();
    let key = |p: &&ProcessInfo| (p.start_time, p.pid);
    procs
        .iter()
        .filter(|p| pids.binary_search(&p.ppid).is_err())
        .min_by_key(key)
        .or_else(|| procs.iter().min_by_key(key))
}

/// Reads `<pid>/cgroup` and, if it names the container, `<pid>/stat`.
fn scan_one(proc: &ProcFs, pid: u32, c: &ContainerId, buf: &mut String) -> Result<Option<ProcessInfo>, ProcError> {
    proc.read_into(pid, "cgroup", buf)?;
    if !c.in_proc_cgroup(buf) {
        return Ok(None);
    }
    proc.read_into(pid, "stat", buf)?;
    // A stat we cannot parse is a process we cannot place; skip it like one
    // that exited (an exiting process can show a truncated file).
    Ok(Stat::parse(buf).ok().map(|s| ProcessInfo { pid, ppid: s.ppid, start_time: s.start_time }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3b1f0c2d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcdef";
    const OTHER: &str = "3b1f0c2d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcde0";
    const UID: &str = "0f6c3a8e-5b1d-4c2a-9e7f-1a2b3c4d5e6f";
    const UID_: &str = "0f6c3a8e_5b1d_4c2a_9e7f_1a2b3c4d5e6f";
    /// The runtime shim (or conmon): outside every container.
    const SHIM: u32 = 900;

    /// A fake /proc: `<dir>/<pid>/{cgroup,stat}`.
    struct FakeProc {
        dir: tempfile::TempDir,
    }

    impl FakeProc {
        fn new() -> FakeProc {
            let fp = FakeProc { dir: tempfile::tempdir().expect("tempdir") };
            // Non-process entries that a real /proc has.
            std::fs::create_dir(fp.dir.path().join("self")).unwrap();
            std::fs::create_dir(fp.dir.path().join("sys")).unwrap();
            std::fs::write(fp.dir.path().join("uptime"), "1.0 1.0\n").unwrap();
            // Unrelated processes: host init, the shim, a process in another container.
            fp.add(1, 0, 5, "0::/init.scope\n");
            fp.add(SHIM, 1, 50, "0::/system.slice/containerd.service\n");
            fp.add(
                950,
                SHIM,
                60,
                &format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{OTHER}.scope\n"),
            );
            fp
        }

        fn root(&self) -> &Path {
            self.dir.path()
        }

        fn add(&self, pid: u32, ppid: u32, start: u64, cgroup: &str) {
            let d = self.dir.path().join(pid.to_string());
            std::fs::create_dir_all(d.join("root")).unwrap();
            std::fs::write(d.join("cgroup"), cgroup).unwrap();
            // A command name with spaces and a ')' to check parsing after the last ')'.
            let mut stat = format!("{pid} (my (odd) cmd) S {ppid}");
            for f in 5..=21 {
                stat.push_str(&format!(" {}", if f == 20 { 1 } else { 0 }));
            }
            stat.push_str(&format!(" {start} 1234567 89 18446744073709551615 0 0 0 0\n"));
            std::fs::write(d.join("stat"), stat).unwrap();
        }

        /// A process whose /proc entry has a cgroup file but whose stat is
        /// gone (exited during the scan).
        fn add_half_gone(&self, pid: u32, cgroup: &str) {
            let d = self.dir.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cgroup"), cgroup).unwrap();
        }

        fn resolve(&self, s: &str) -> Option<ContainerProcess> {
            resolve(self.root(), &ContainerId::parse(s).unwrap()).expect("resolve")
        }

        fn resolve_pid(&self, s: &str) -> Option<u32> {
            self.resolve(s).map(|p| p.pid)
        }
    }

    /// A v1 hybrid-host file: the same path in several hierarchies.
    fn v1_all(path: &str) -> String {
        format!(
            "12:pids:{path}\n11:cpu,cpuacct:{path}\n10:memory:{path}\n3:net_cls,net_prio:{path}\n1:name=systemd:{path}\n0::/\n"
        )
    }

    fn v2(path: &str) -> String {
        format!("0::{path}\n")
    }

    fn containerd_systemd() -> String {
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope")
    }

    // ---- layouts ----

    #[test]
    fn containerd_systemd_v2() {
        let fp = FakeProc::new();
        fp.add(1000, SHIM, 100, &v2(&containerd_systemd()));
        assert_eq!(fp.resolve_pid(&format!("containerd://{ID}")), Some(1000));
    }

    #[test]
    fn containerd_systemd_v1_hybrid() {
        let fp = FakeProc::new();
        fp.add(1000, SHIM, 100, &v1_all(&containerd_systemd()));
        assert_eq!(fp.resolve_pid(&format!("containerd://{ID}")), Some(1000));
        // Only in the name=systemd hierarchy (e.g. controllers elsewhere).
        let fp = FakeProc::new();
        fp.add(1000, SHIM, 100, &format!("4:pids:/\n1:name=systemd:{}\n0::/\n", containerd_systemd()));
        assert_eq!(fp.resolve_pid(&format!("containerd://{ID}")), Some(1000));
    }

    #[test]
    fn containerd_cgroupfs_every_qos_class_v1_and_v2() {
        for qos in ["/burstable", "/besteffort", ""] {
            let path = format!("/kubepods{qos}/pod{UID}/{ID}");
            for contents in [v1_all(&path), v2(&path)] {
                let fp = FakeProc::new();
                fp.add(1000, SHIM, 100, &contents);
                assert_eq!(fp.resolve_pid(&format!("containerd://{ID}")), Some(1000), "{contents}");
            }
        }
    }

    #[test]
    fn crio_systemd_v2_and_v1_excludes_conmon() {
        let scope = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice");
        for wrap in [v2 as fn(&str) -> String, v1_all] {
            let fp = FakeProc::new();
            // conmon started first and is the container init's parent.
            fp.add(990, 1, 90, &wrap(&format!("{scope}/crio-conmon-{ID}.scope")));
            fp.add(1000, 990, 100, &wrap(&format!("{scope}/crio-{ID}.scope")));
            assert_eq!(fp.resolve_pid(&format!("cri-o://{ID}")), Some(1000));
        }
    }

    #[test]
    fn crio_conmon_alone_is_not_the_container() {
        let fp = FakeProc::new();
        fp.add(990, 1, 90, &v2(&format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope")));
        fp.add(991, 1, 91, &v1_all(&format!("/kubepods/pod{UID}/crio-conmon-{ID}")));
        assert_eq!(fp.resolve_pid(&format!("cri-o://{ID}")), None);
    }

    #[test]
    fn crio_cgroupfs_v1_and_v2() {
        for qos in ["/burstable", ""] {
            for wrap in [v2 as fn(&str) -> String, v1_all] {
                let fp = FakeProc::new();
                fp.add(990, 1, 90, &wrap(&format!("/kubepods{qos}/pod{UID}/crio-conmon-{ID}")));
                fp.add(1000, 990, 100, &wrap(&format!("/kubepods{qos}/pod{UID}/crio-{ID}")));
                assert_eq!(fp.resolve_pid(&format!("cri-o://{ID}")), Some(1000));
            }
        }
    }

    #[test]
    fn crio_with_crun_container_subgroup() {
        let fp = FakeProc::new();
        fp.add(1000, SHIM, 100, &v2(&format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope/container")));
        assert_eq!(fp.resolve_pid(&format!("cri-o://{ID}")), Some(1000));
    }

    #[test]
    fn docker_systemd_and_cgroupfs() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/kubepods/burstable/pod{UID}/{ID}"),
        ] {
            for contents in [v1_all(&path), v2(&path)] {
                let fp = FakeProc::new();
                fp.add(1000, SHIM, 100, &contents);
                assert_eq!(fp.resolve_pid(&format!("docker://{ID}")), Some(1000), "{contents}");
            }
        }
    }

    #[test]
    fn cgroup_namespace_relative_paths() {
        let fp = FakeProc::new();
        fp.add(1000, SHIM, 100, &v2(&format!("/../../kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope")));
        assert_eq!(fp.resolve_pid(&format!("containerd://{ID}")), Some(1000));
    }

    #[test]
    fn runtime_naming_is_not_mixed_up() {
        let fp = FakeProc::new();
        fp.add(1000, SHIM, 100, &v2(&containerd_systemd()));
        assert_eq!(fp.resolve_pid(&format!("cri-o://{ID}")), None);
        assert_eq!(fp.resolve_pid(&format!("docker://{ID}")), None);
        let fp = FakeProc::new();
        fp.add(1000, SHIM, 100, &v2(&format!("/kubepods/pod{UID}/crio-{ID}")));
        assert_eq!(fp.resolve_pid(&format!("containerd://{ID}")), None);
    }

    #[test]
    fn exact_id_not_prefix() {
        let fp = FakeProc::new();
        fp.add(1000, SHIM, 100, &v2(&containerd_systemd()));
        fp.add(1001, SHIM, 101, &v1_all(&format!("/kubepods/burstable/pod{UID}/{ID}")));
        // Shorter IDs that are prefixes of ID match neither layout.
        assert_eq!(fp.resolve_pid(&format!("containerd://{}", &ID[..12])), None);
        assert_eq!(fp.resolve_pid(&format!("containerd://{}", &ID[..63])), None);
        // OTHER differs from ID only in the last digit: the fixture's process
        // 950 is in OTHER and must not be taken for ID.
        assert_eq!(fp.resolve_pid(&format!("containerd://{OTHER}")), Some(950));
        // An ID is not matched as a prefix of a longer component either.
        let fp = FakeProc::new();
        fp.add(1000, SHIM, 100, &v2(&format!("/kubepods/pod{UID}/{ID}0")));
        fp.add(1001, SHIM, 101, &v2(&format!("/kubepods/pod{UID}/x{ID}")));
        fp.add(1002, SHIM, 102, &v2(&format!("/kubepods.slice/cri-containerd-{ID}.scope.bak")));
        assert_eq!(fp.resolve_pid(&format!("containerd://{ID}")), None);
    }

    #[test]
    fn pod_uid_component_does_not_match() {
        // A pod directory is `pod<uid>`; a container ID equal to the uid's
        // hex digits must not match the pod.
        let fp = FakeProc::new();
        fp.add(1000, SHIM, 100, &v2("/kubepods/pod0123456789abcdef/fedcba9876543210"));
        assert_eq!(fp.resolve_pid("containerd://0123456789abcdef"), None);
        assert_eq!(fp.resolve_pid("containerd://fedcba9876543210"), Some(1000));
    }

    // ---- init selection ----

    #[test]
    fn init_is_the_process_whose_parent_is_outside() {
        let fp = FakeProc::new();
        let cg = v2(&containerd_systemd());
        // Children listed (and numbered) before the init: pid wrap-around.
        fp.add(300, 1000, 150, &cg);
        fp.add(301, 300, 160, &cg);
        fp.add(1000, SHIM, 100, &cg);
        // A `kubectl exec` process: parent is the shim too, but later.
        fp.add(2000, SHIM, 500, &cg);
        fp.add(2001, 2000, 510, &cg);
        let p = fp.resolve(&format!("containerd://{ID}")).unwrap();
        assert_eq!(p, ContainerProcess { pid: 1000, start_time: 100, root: fp.root().join("1000/root") });
        let all = processes(fp.root(), &ContainerId::parse(&format!("containerd://{ID}")).unwrap()).unwrap();
        let mut pids: Vec<u32> = all.iter().map(|p| p.pid).collect();
        pids.sort();
        assert_eq!(pids, [300, 301, 1000, 2000, 2001]);
    }

    #[test]
    fn init_ties_on_start_time_go_to_lowest_pid() {
        let procs = [
            ProcessInfo { pid: 7, ppid: 1, start_time: 10 },
            ProcessInfo { pid: 5, ppid: 1, start_time: 10 },
            ProcessInfo { pid: 3, ppid: 5, start_time: 1 },
        ];
        assert_eq!(pick_init(&procs).map(|p| p.pid), Some(5));
        // Every parent inside (a race): earliest started overall.
        let cycle = [ProcessInfo { pid: 7, ppid: 8, start_time: 10 }, ProcessInfo { pid: 8, ppid: 7, start_time: 9 }];
        assert_eq!(pick_init(&cycle).map(|p| p.pid), Some(8));
        assert_eq!(pick_init(&[]), None);
    }

    #[test]
    fn after_restart_the_new_init_is_found() {
        let fp = FakeProc::new();
        fp.add(1000, SHIM, 100, &v2(&containerd_systemd()));
        let first = fp.resolve(&format!("containerd://{ID}")).unwrap();
        assert!(first.still_running(fp.root()));
        // Same pid reused by a different run: not the same process.
        fp.add(1000, SHIM, 700, &v2(&containerd_systemd()));
        assert!(!first.still_running(fp.root()));
        let second = fp.resolve(&format!("containerd://{ID}")).unwrap();
        assert_eq!(second.start_time, 700);
        std::fs::remove_dir_all(fp.root().join("1000")).unwrap();
        assert!(!second.still_running(fp.root()));
    }

    // ---- robustness ----

    #[test]
    fn a_process_still_at_the_node_root_is_not_the_container_yet() {
        let fp = FakeProc::new();
        let id = format!("containerd://{ID}");
        fp.add(1000, 1, 100, &v1_all(&format!("/kubepods/pod{UID}/{ID}")));
        assert_eq!(fp.resolve_pid(&id), Some(1000));
        // Like `runc init` before pivot_root: its root is the node's root.
        let root = fp.root().join("1000/root");
        std::fs::remove_dir(&root).unwrap();
        std::os::unix::fs::symlink("/", &root).unwrap();
        assert_eq!(fp.resolve_pid(&id), None);
    }

    #[test]
    fn not_running_is_none() {
        let fp = FakeProc::new();
        assert_eq!(fp.resolve(&format!("containerd://{ID}")), None);
        // A process of the container that is already gone: listed, but its
        // files are not there any more.
        std::fs::create_dir(fp.root().join("4242")).unwrap();
        fp.add_half_gone(4243, &v2(&containerd_systemd()));
        assert_eq!(fp.resolve(&format!("containerd://{ID}")), None);
    }

    #[test]
    fn vanished_processes_are_skipped() {
        let fp = FakeProc::new();
        fp.add_half_gone(999, &v2(&containerd_systemd()));
        std::fs::create_dir(fp.root().join("998")).unwrap();
        fp.add(1000, SHIM, 100, &v2(&containerd_systemd()));
        assert_eq!(fp.resolve_pid(&format!("containerd://{ID}")), Some(1000));
    }

    #[test]
    fn malformed_files_are_not_matches() {
        let fp = FakeProc::new();
        fp.add(1000, SHIM, 100, &format!("garbage {ID}\n{ID}\n::\n"));
        // Matching cgroup, truncated stat.
        fp.add(1001, SHIM, 100, &v2(&containerd_systemd()));
        std::fs::write(fp.root().join("1001/stat"), "1001 (x) S 900 1").unwrap();
        assert_eq!(fp.resolve(&format!("containerd://{ID}")), None);
    }

    #[test]
    fn unreadable_proc_root_is_an_error() {
        let fp = FakeProc::new();
        let missing = fp.root().join("nope");
        let err = resolve(&missing, &ContainerId::parse(&format!("containerd://{ID}")).unwrap()).unwrap_err();
        assert!(matches!(err, ProcError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn unreadable_process_entry_is_an_error_only_without_a_match() {
        let fp = FakeProc::new();
        // A directory where the cgroup file should be: EISDIR, not "gone".
        std::fs::create_dir_all(fp.root().join("1234/cgroup")).unwrap();
        let c = ContainerId::parse(&format!("containerd://{ID}")).unwrap();
        let err = resolve(fp.root(), &c).unwrap_err();
        assert!(err.to_string().contains("1234"), "{err}");
        fp.add(1000, SHIM, 100, &v2(&containerd_systemd()));
        assert_eq!(resolve(fp.root(), &c).unwrap().map(|p| p.pid), Some(1000));
    }

    #[test]
    fn real_proc_is_readable() {
        // Runs unprivileged: a random ID is not running; our own process is
        // readable by the same parser.
        let c = ContainerId::parse(&format!("containerd://{ID}")).unwrap();
        assert_eq!(resolve(Path::new("/proc"), &c).unwrap(), None);
        let me = std::process::id();
        let start = ProcFs::default().stat(me).expect("own stat").start_time;
        let p = ContainerProcess { pid: me, start_time: start, root: PathBuf::new() };
        assert!(p.still_running(Path::new("/proc")));
        assert!(!ContainerProcess { start_time: start + 1, ..p }.still_running(Path::new("/proc")));
    }
}
