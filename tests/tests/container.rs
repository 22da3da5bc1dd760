//! Test containers (`janus_tests::container`) as root: every layout starts a
//! real process in its own mount namespace, root and cgroup; the agent's
//! resolver finds it from the container ID alone.

use std::path::Path;

use janus_agent::containers::{ContainerId, resolve};
use janus_tests::container::{Layout, TestContainer};
use janus_tests::require_root;

fn available(layout: Layout) -> bool {
    if layout.available() {
        return true;
    }
    eprintln!("skipping {layout:?}: its cgroup hierarchy is not mounted on this host");
    false
}

/// The line of `/proc/<pid>/cgroup` that puts `pid` in the container's cgroup.
fn cgroup_line(pid: u32, c: &TestContainer) -> Option<String> {
    let mut buf = String::new();
    let lines = janus_procfs::ProcFs::default().cgroups(pid, &mut buf).ok()?;
    let want = c.cgroup_path();
    lines.iter().find(|l| l.path == want).map(|l| format!("{}:{}:{}", l.hierarchy, l.controllers, l.path))
}

fn exercise(layout: Layout) {
    require_root();
    if !available(layout) {
        return;
    }
    let mut c = TestContainer::start(layout, &[("/data/secret", "s"), ("/data/sub/other", "o")]);
    let (dir, cgroup_dir) = (c.rootfs().parent().unwrap().to_path_buf(), c.cgroup_dir().to_path_buf());
    let pid = c.pid();
    assert!(c.runtime_id().starts_with(&format!("{}://", layout.scheme())));
    assert_eq!(c.runtime_id(), format!("{}://{}", layout.scheme(), c.id()));
    assert!(c.cgroup_path().contains(c.id()));

    // The main process is in the container's cgroup, and only it (and none of
    // the test's own cgroups changed).
    assert!(cgroup_line(pid, &c).is_some(), "{layout:?}: /proc/{pid}/cgroup lacks {}", c.cgroup_path());
    assert_eq!(std::fs::read_to_string(cgroup_dir.join("cgroup.procs")).unwrap().trim(), pid.to_string());
    assert!(cgroup_line(std::process::id(), &c).is_none());

    // Its own root: files are there, the host's are not.
    assert_eq!(c.op("open", "/data/secret"), "ok");
    assert_eq!(c.op("read", "/data/sub/other"), "ok");
    assert_eq!(c.op("list", "/data"), "ok");
    assert_eq!(c.op("open", "/data/missing"), "ENOENT");
    assert_eq!(c.op("open", dir.join("rootfs/data/secret").to_str().unwrap()), "ENOENT");
    assert_eq!(c.op("exec", "/bin/true"), "ok", "dynamically linked host binary runs inside");
    assert_eq!(c.op("spawn-open", "/data/secret"), "ok");
    assert_eq!(c.op("whoami", ""), format!("pid={pid} ppid={}", c.shim_pid().unwrap()));
    assert!(c.op("cgroup", "").contains(&c.cgroup_path()), "the container sees its cgroup via its /proc");
    assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/root/data/secret")).unwrap(), "s");
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        std::fs::read_link("/proc/self/root").unwrap(),
        "the main process is chrooted"
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(),
        std::fs::read_link("/proc/self/ns/mnt").unwrap(),
        "the main process has its own mount namespace"
    );
    assert!(c.host_mounts_below().is_empty(), "binds leaked to the host: {:?}", c.host_mounts_below());
    // A file written from the host later is visible inside.
    janus_tests::write(c.rootfs().join("data/late"), "l");
    assert_eq!(c.op("open", "/data/late"), "ok");

    // `kubectl exec`: a new process, in the cgroup and root, not below pid.
    assert_eq!(c.exec_op("open", "/data/secret"), "ok");
    assert_eq!(c.exec_op("open", "/data/missing"), "ENOENT");
    let who = c.exec_op("whoami", "");
    let epid: u32 =
        who.strip_prefix("pid=").and_then(|r| r.split(' ').next()).and_then(|p| p.parse().ok()).expect(&who);
    assert!(who.ends_with(&format!(" ppid={}", std::process::id())), "{who}");
    assert_ne!(epid, pid);
    let ecg = c.exec_op("cgroup", "");
    assert!(ecg.contains(&c.cgroup_path()), "exec'd process not in the container's cgroup: {ecg}");
    // The exec'd process is gone; the main one is still the only member.
    assert_eq!(std::fs::read_to_string(cgroup_dir.join("cgroup.procs")).unwrap().trim(), pid.to_string());

    // Restart: a new main process in the same cgroup and root.
    let t0 = c.start_time().unwrap();
    c.restart();
    let pid2 = c.pid();
    assert_ne!(pid2, pid);
    assert!(c.start_time().unwrap() >= t0);
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "old main process still exists");
    assert!(cgroup_line(pid2, &c).is_some());
    assert_eq!(c.op("open", "/data/secret"), "ok");
    assert_eq!(c.exec_op("open", "/data/late"), "ok");

    // Stop, then drop: processes, cgroup and directory are gone.
    c.stop();
    assert!(!Path::new(&format!("/proc/{pid2}")).exists());
    c.stop(); // idempotent
    drop(c);
    assert!(!cgroup_dir.exists(), "{} still exists", cgroup_dir.display());
    assert!(!cgroup_dir.parent().unwrap().exists() || layout == Layout::DockerCgroupfsV1, "pod cgroup still exists");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

fn resolves(layout: Layout) {
    require_root();
    if !available(layout) {
        return;
    }
    let mut c = TestContainer::start(layout, &[("/data/secret", "s")]);
    let r = ContainerId::parse(&c.runtime_id()).unwrap();
    let proc = Path::new("/proc");
    let found = resolve(proc, &r).unwrap().expect("container resolved");
    assert_eq!(found.pid, c.pid(), "{layout:?}: resolved the wrong process (shim is {:?})", c.shim_pid());
    assert_eq!(Some(found.start_time), c.start_time());
    assert_eq!(found.root, Path::new(&format!("/proc/{}/root", c.pid())));
    assert_eq!(std::fs::read_to_string(found.root.join("data/secret")).unwrap(), "s");
    assert!(found.still_running(proc));
    // A running spawn-open child or exec'd process does not change the answer.
    assert_eq!(c.op("spawn-open", "/data/secret"), "ok");
    assert_eq!(c.exec_op("open", "/data/secret"), "ok");
    assert_eq!(resolve(proc, &r).unwrap().map(|p| p.pid), Some(c.pid()));

    // A `kubectl exec` process running alongside (its parent is outside the
    // container too, but it started later).
    let hammer = c.exec_spawn(&["hammer", "1", "/data/secret"]);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_to_string(c.cgroup_dir().join("cgroup.procs")).unwrap().lines().count() < 2 {
        assert!(std::time::Instant::now() < end, "exec_spawn process never joined the cgroup");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(resolve(proc, &r).unwrap().map(|p| p.pid), Some(c.pid()));
    let out = hammer.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(counts["/data/secret"][0].as_u64().unwrap() > 0, "{counts}");

    c.restart();
    assert!(!found.still_running(proc));
    let again = resolve(proc, &r).unwrap().expect("restarted container resolved");
    assert_eq!(again.pid, c.pid());
    assert_ne!(again.pid, found.pid);

    c.stop();
    assert_eq!(resolve(proc, &r).unwrap(), None, "stopped container still resolves");
}

macro_rules! per_layout {
    ($($name:ident, $resolve:ident => $layout:expr;)*) => {$(
        #[test]
        #[ignore = "needs root"]
        fn $name() {
            exercise($layout);
        }

        #[test]
        #[ignore = "needs root"]
        fn $resolve() {
            resolves($layout);
        }
    )*};
}

per_layout! {
    containerd_systemd_v2, resolve_containerd_systemd_v2 => Layout::ContainerdSystemdV2;
    containerd_cgroupfs_v2, resolve_containerd_cgroupfs_v2 => Layout::ContainerdCgroupfsV2;
    containerd_systemd_v1, resolve_containerd_systemd_v1 => Layout::ContainerdSystemdV1;
    containerd_cgroupfs_v1, resolve_containerd_cgroupfs_v1 => Layout::ContainerdCgroupfsV1;
    crio_systemd_v2, resolve_crio_systemd_v2 => Layout::CrioSystemdV2;
    crio_cgroupfs_v1, resolve_crio_cgroupfs_v1 => Layout::CrioCgroupfsV1;
    docker_systemd_v2, resolve_docker_systemd_v2 => Layout::DockerSystemdV2;
    docker_cgroupfs_v1, resolve_docker_cgroupfs_v1 => Layout::DockerCgroupfsV1;
}

#[test]
#[ignore = "needs root"]
fn some_layouts_are_available() {
    require_root();
    let avail: Vec<Layout> = Layout::ALL.into_iter().filter(|l| l.available()).collect();
    eprintln!("available layouts: {avail:?}");
    assert!(avail.len() >= 4, "neither cgroup v2 nor v1 found in /proc/self/mountinfo");
}

#[test]
#[ignore = "needs root"]
fn many_containers_at_once_share_ancestors() {
    require_root();
    let layouts: Vec<Layout> = [Layout::ContainerdSystemdV2, Layout::CrioSystemdV2, Layout::ContainerdCgroupfsV1]
        .into_iter()
        .filter(|l| l.available())
        .collect();
    let mut cs: Vec<TestContainer> =
        layouts.iter().chain(layouts.iter()).map(|&l| TestContainer::start(l, &[("/x", "x")])).collect();
    for c in &mut cs {
        assert_eq!(c.op("open", "/x"), "ok");
        let r = ContainerId::parse(&c.runtime_id()).unwrap();
        assert_eq!(resolve(Path::new("/proc"), &r).unwrap().map(|p| p.pid), Some(c.pid()));
    }
    // Dropping in creation order: later containers still work.
    let dirs: Vec<_> = cs.iter().map(|c| c.cgroup_dir().to_path_buf()).collect();
    while !cs.is_empty() {
        drop(cs.remove(0));
        for c in &mut cs {
            assert_eq!(c.op("open", "/x"), "ok");
        }
    }
    for d in dirs {
        assert!(!d.exists(), "{}", d.display());
    }
}

#[test]
#[ignore = "needs root"]
fn op_timeout_does_not_desync() {
    require_root();
    let layout = Layout::ALL.into_iter().find(|l| l.available()).expect("a layout");
    let mut c = TestContainer::start(layout, &[("/x", "x")]);
    // A FIFO with no writer: open blocks until the host opens it for writing.
    let fifo = c.rootfs().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    c.set_op_timeout(std::time::Duration::from_millis(300));
    assert_eq!(c.op("open", "/fifo"), "TIMEOUT");
    // Unblock it: the late "ok" is skipped, not taken as the next answer.
    let _w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    c.set_op_timeout(std::time::Duration::from_secs(10));
    assert_eq!(c.op("open", "/missing"), "ENOENT");
    assert_eq!(c.op("open", "/x"), "ok");
}

#[test]
#[ignore = "needs root"]
fn prepared_container_resolves_only_after_launch() {
    require_root();
    let layout = Layout::ALL.into_iter().find(|l| l.available()).expect("a layout");
    let mut c = TestContainer::prepare(layout, &[("/x", "x")]);
    let r = ContainerId::parse(&c.runtime_id()).unwrap();
    assert!(!c.is_running());
    assert!(c.cgroup_dir().is_dir());
    assert_eq!(resolve(Path::new("/proc"), &r).unwrap(), None);
    c.launch();
    assert!(c.is_running());
    assert_eq!(resolve(Path::new("/proc"), &r).unwrap().map(|p| p.pid), Some(c.pid()));
    assert_eq!(c.op("open", "/x"), "ok");
    c.stop();
    assert!(!c.is_running());
    c.launch();
    assert_eq!(c.op("open", "/x"), "ok");
}
