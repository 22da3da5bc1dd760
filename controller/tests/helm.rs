//! Janus installed as a user installs it, on the real one-node cluster
//! (`ci/k8s/cluster.sh up`: kubelet, containerd, runc, CNI): the images built
//! from the shipped Dockerfiles (`deploy/docker/build.sh`, imported by
//! `up` under the chart's default names), `helm install` of
//! deploy/helm/janus with its defaults, and real pods in a namespace that
//! enforces the `restricted` Pod Security Standard. Everything goes through
//! helm and kubectl; no test plays kubelet and no Janus binary runs on the
//! host.
//!
//! One test walks the whole life of an install, since each step needs the
//! one before (and a second install on the node would fight the first); it
//! prints what it measures (install time, start -> first denial, the
//! unguarded windows of agent upgrades and restarts, controller failover,
//! agent memory and CPU with 50 guarded pods) for docs/performance.md.
//!
//! Needs root and `JANUS_NODE_ENV` (ci/test.sh sets both).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The release namespace: not the docs' `janus-system`, which the
/// host-agent tests in cluster.rs fill with EndpointSlices of their own.
const NS: &str = "janus";
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/helm/janus");
/// Every kubectl or helm call is bounded.
const CALL_TIMEOUT: &str = "120";
const T: Duration = Duration::from_secs(120);

struct Node {
    env: BTreeMap<String, String>,
    helm: PathBuf,
    /// The workload namespace (restricted).
    work: String,
}

impl Node {
    fn new() -> Node {
        janus_tests::require_root();
        let path = std::env::var("JANUS_NODE_ENV").unwrap_or_else(|_| {
            panic!("this test needs the real one-node cluster: run `ci/k8s/cluster.sh up` and set JANUS_NODE_ENV=<its dir>/env (ci/test.sh does)")
        });
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let env = text
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        Node { env, helm: helm_binary(), work: format!("helm-work-{:x}", nanos ^ std::process::id()) }
    }

    fn cmd(&self, bin: &Path, args: &[&str]) -> Result<String, String> {
        let out = Command::new("timeout")
            .arg(CALL_TIMEOUT)
            .arg(bin)
            .args(args)
            .env("KUBECONFIG", &self.env["JANUS_K8S_ADMIN_KUBECONFIG"])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.cmd(&Path::new(&self.env["JANUS_K8S_BIN"]).join("kubectl"), args)
    }

    /// kubectl that must succeed.
    fn k(&self, args: &[&str]) -> String {
        self.kubectl(args).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    fn helm(&self, args: &[&str]) -> Result<String, String> {
        self.cmd(&self.helm, args)
    }

    fn apply(&self, yaml: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), yaml).unwrap();
        self.k(&["apply", "-f", file.path().to_str().unwrap()]);
    }

    /// `cat PATH` in a pod of the workload namespace through `kubectl exec`:
    /// the file's text, or the error (`Operation not permitted`).
    fn cat(&self, pod: &str, path: &str) -> String {
        match self.kubectl(&["-n", &self.work, "exec", pod, "--", "cat", path]) {
            Ok(s) => s,
            Err(e) => e,
        }
    }

    fn ctr(&self, args: &[&str]) -> String {
        let ctr = Path::new(&self.env["JANUS_CLUSTER_DIR"]).join("bin/ctr");
        let sock = &self.env["JANUS_CONTAINERD_SOCK"];
        let out = Command::new(&ctr).args(["--address", sock, "-n", "k8s.io"]).args(args).output().unwrap();
        assert!(out.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The agent pods' names (one per node: one here).
    fn agent_pod_names(&self) -> String {
        self.k(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=agent",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
    }

    /// The agent's process on the host (hostPID: the node sees it).
    fn agent_pids(&self) -> Vec<u32> {
        let proc = janus_procfs::ProcFs::default();
        proc.pids()
            .unwrap()
            .filter_map(Result::ok)
            .filter(|&p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.starts_with(b"/usr/local/bin/janusd\0serve\0"))
            })
            .collect()
    }

    /// A pod in the workload namespace that meets the `restricted` standard,
    /// labelled `app: APP`, running `script` with sh.
    fn pod(&self, name: &str, app: &str, script: &str) {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.work, "labels": {"app": app}},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "app", "image": "janus.local/busybox:1", "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
                }]
            }
        });
        self.apply(&pod.to_string());
    }

    fn guard(&self, name: &str, app: &str, subject: serde_json::Value) {
        let g = serde_json::json!({
            "apiVersion": "januscontroller.clustergarage.io/v1alpha1", "kind": "JanusGuard",
            "metadata": {"name": name, "namespace": self.work},
            "spec": {"selector": {"matchLabels": {"app": app}}, "subjects": [subject]}
        });
        self.apply(&g.to_string());
    }

    fn wait_ready(&self, what: &[&str]) {
        self.k(&[&["-n", &self.work, "wait", "--for=condition=Ready", "--timeout=120s"], what].concat());
    }

    /// The pod's own record of its first denied open (see `START_PROBE`).
    fn start_probe(&self, pod: &str) -> Option<(f64, f64, u64)> {
        let log = self.kubectl(&["-n", &self.work, "logs", pod]).ok()?;
        let l = log.lines().find(|l| l.starts_with("start="))?;
        let f: BTreeMap<&str, &str> = l.split_whitespace().filter_map(|kv| kv.split_once('=')).collect();
        Some((f["start"].parse().ok()?, f["denied"].parse().ok()?, f["reads"].parse().ok()?))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Whatever happened: guards first (their finalizers need the
        // controller), then the release, then the namespaces.
        let readme = format!("{}-readme", self.work);
        for ns in [&self.work, &readme] {
            let _ = self.kubectl(&["delete", "janusguards", "--all", "-n", ns, "--wait", "--timeout=60s"]);
        }
        let _ = self.helm(&["uninstall", "janus", "-n", NS, "--wait", "--timeout", "90s"]);
        let _ = self.kubectl(&["delete", "ns", &self.work, &readme, NS, "janus-psa-probe", "--wait=false"]);
    }
}

fn helm_binary() -> PathBuf {
    let cache = std::env::var("JANUS_TOOLS_DIR").unwrap_or_else(|_| "/var/cache/janus-tools".into());
    let mut dirs = vec![Path::new(&cache).join("bin")];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    dirs.into_iter().map(|d| d.join("helm")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("this test needs helm, which is not installed: run ci/deploy/install-tools.sh (ci/test.sh does)")
    })
}

fn eventually(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < timeout, "{what}: not true after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

fn pct(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// A container whose first action is to open the denied file, over and
/// over until that fails: it prints when it started and when the first
/// open was denied (seconds of /proc/uptime: the clock kubelet, the
/// runtime and the agent share) and how many opens got through before.
const START_PROBE: &str = "s=$(cut -d' ' -f1 /proc/uptime); n=0; \
    while cat /data/secret/key >/dev/null 2>&1; do n=$((n+1)); done; \
    echo start=$s denied=$(cut -d' ' -f1 /proc/uptime) reads=$n; exec sleep 3600";

/// A main process that opens the denied file every 10 ms for ever and
/// prints the uptime of each open that got through: the unguarded window of
/// an agent restart, seen from inside a guarded container.
const WINDOW_PROBE: &str = "while :; do if cat /data/secret/key >/dev/null 2>&1; then \
    echo open $(cut -d' ' -f1 /proc/uptime); fi; sleep 0.01; done";

/// The opens the window probe saw get through after uptime `since`:
/// (count, first, last).
fn window(node: &Node, since: f64) -> (usize, f64, f64) {
    let log = node.k(&["-n", &node.work, "logs", "probe"]);
    let t: Vec<f64> =
        log.lines().filter_map(|l| l.strip_prefix("open ")?.parse().ok()).filter(|&t| t > since).collect();
    (t.len(), t.first().copied().unwrap_or(0.0), t.last().copied().unwrap_or(0.0))
}

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
#[ignore = "needs root, helm and the real one-node cluster (ci/k8s/cluster.sh)"]
fn helm_install_guards_real_pods_until_uninstalled() {
    let node = Node::new();
    let chart = Path::new(CHART);

    // A namespace of an earlier run may still be terminating.
    for ns in [NS, "janus-psa-probe"] {
        let _ = node.kubectl(&["wait", "--for=delete", &format!("namespace/{ns}"), "--timeout=180s"]);
        assert!(node.kubectl(&["get", "ns", ns]).is_err(), "namespace {ns} of an earlier run is still there");
    }

    // ---- Pod Security: a namespace that enforces less than the agent
    // needs is refused up front, with the fix in the message.
    let _ = node.kubectl(&["create", "ns", "janus-psa-probe"]);
    node.k(&["label", "ns", "janus-psa-probe", "pod-security.kubernetes.io/enforce=restricted", "--overwrite"]);
    let err = node
        .helm(&["install", "janus", chart.to_str().unwrap(), "-n", "janus-psa-probe", "--dry-run=server"])
        .expect_err("helm install into a restricted namespace");
    assert!(
        err.contains("enforces the \"restricted\" Pod Security Standard")
            && err.contains("kubectl label namespace janus-psa-probe pod-security.kubernetes.io/enforce=privileged"),
        "{err}"
    );

    // The host-agent tests (cluster.rs) apply deploy/rbac.yaml's cluster
    // roles by hand on this cluster; Helm refuses to adopt objects it did
    // not make, as it would on a user's cluster.
    node.k(&[
        "delete",
        "clusterrole,clusterrolebinding",
        "--field-selector=metadata.name=janus-controller",
        "-l",
        "app.kubernetes.io/managed-by!=Helm",
        "--ignore-not-found",
    ]);

    // ---- Install with the defaults, and time it to every pod Ready.
    let t = Instant::now();
    let out = node
        .helm(&[
            "install",
            "janus",
            chart.to_str().unwrap(),
            "-n",
            NS,
            "--create-namespace",
            "--wait",
            "--timeout",
            "300s",
        ])
        .unwrap_or_else(|e| panic!("helm install: {e}"));
    let helm_returned = t.elapsed();
    assert!(out.contains("the chart made its own CA"), "no cert-manager here: the chart's own CA\n{out}");
    node.k(&["-n", NS, "rollout", "status", "ds/janusd", "--timeout=300s"]);
    node.k(&["-n", NS, "rollout", "status", "deploy/janus-controller", "--timeout=300s"]);
    let all_ready = t.elapsed();
    eprintln!(
        "helm install: returned after {helm_returned:?}; agent and both controller replicas Ready after {all_ready:?}"
    );
    let setup = node.k(&["-n", NS, "logs", "ds/janusd", "-c", "node-setup"]);
    assert!(setup.contains("seccomp profile"), "node-setup: {setup}");
    let installed = Path::new(&node.env["JANUS_KUBELET_ROOT"]).join("seccomp/janus/janusd.json");
    assert_eq!(
        std::fs::read_to_string(&installed).unwrap_or_else(|e| panic!("{}: {e}", installed.display())),
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/seccomp/janusd.json")).unwrap(),
        "the profile node-setup installed is the shipped one"
    );
    let agent_log = node.k(&["-n", NS, "logs", "ds/janusd", "-c", "janusd"]);
    assert!(agent_log.contains("backend=\"io_uring\""), "the agent's seccomp profile allows io_uring:\n{agent_log}");
    assert_eq!(node.agent_pids().len(), 1, "one agent process on the node");

    // ---- The README's walk-through, as written there (a namespace without
    // Pod Security labels: `kubectl run` makes a root pod).
    let readme = format!("{}-readme", node.work);
    node.k(&["create", "ns", &readme]);
    node.k(&[
        "-n",
        &readme,
        "run",
        "web",
        "--image=janus.local/busybox:1",
        "--image-pull-policy=Never",
        "-l",
        "app=web",
        "--command",
        "--",
        "sleep",
        "3600",
    ]);
    node.k(&["-n", &readme, "wait", "--for=condition=Ready", "pod/web", "--timeout=120s"]);
    node.k(&[
        "-n",
        &readme,
        "apply",
        "-f",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/real-node-guard.yaml"),
    ]);
    eventually("the README's guard denies", T, || {
        node.kubectl(&["-n", &readme, "exec", "web", "--", "cat", "/data/secret/key"])
            .is_err_and(|e| e.contains("can't open '/data/secret/key': Operation not permitted"))
    });
    eventually("the README's kubectl get jg", T, || {
        node.k(&["-n", &readme, "get", "jg", "--no-headers"]).split_whitespace().take(3).collect::<Vec<_>>()
            == ["web", "1", "1"]
    });
    node.k(&["-n", &readme, "delete", "jg", "web", "--wait", "--timeout=60s"]);
    node.k(&["delete", "ns", &readme, "--wait=false"]);

    // ---- A guarded pod in a restricted namespace, through the API only.
    node.k(&["create", "ns", &node.work]);
    node.k(&["label", "ns", &node.work, "pod-security.kubernetes.io/enforce=restricted"]);
    // The main process reads the denied file every 200 ms and keeps what it got.
    node.pod(
        "web",
        "web",
        "while :; do if cat /data/secret/key >/tmp/o 2>&1; then :; fi; mv /tmp/o /tmp/owner; sleep 0.2; done",
    );
    node.wait_ready(&["pod/web"]);
    assert_eq!(node.cat("web", "/data/secret/key"), "top secret", "control: unguarded");
    node.guard(
        "web",
        "web",
        serde_json::json!({"deny": ["/data/secret", "/var/run/secrets/token"], "audit": true, "autoAllowOwner": true}),
    );
    let took = eventually("the guard enforced in the real pod", T, || {
        node.cat("web", "/data/secret/key").contains("Operation not permitted")
    });
    eprintln!("guard created -> first denial through kubectl exec: {took:?}");
    assert_eq!(node.cat("web", "/data/open/greeting"), "hello", "an allowed file reads");
    for p in ["/var/run/secrets/token", "/run/secrets/token"] {
        let out = node.cat("web", p);
        assert!(out.contains("Operation not permitted"), "{p}, through the image's /var/run symlink: {out}");
    }
    // autoAllowOwner: the container's own processes still read it.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(node.cat("web", "/tmp/owner"), "top secret", "the main process is the owner");
    eventually("kubectl get jg: 1 observable, 1 guarded", T, || {
        node.k(&["-n", &node.work, "get", "jg", "web", "--no-headers"]).split_whitespace().take(3).collect::<Vec<_>>()
            == ["web", "1", "1"]
    });
    let state = node.k(&[
        "-n",
        NS,
        "exec",
        "ds/janusd",
        "-c",
        "janusd",
        "--",
        "janusctl",
        "--tls-cert",
        "/etc/janus/tls/tls.crt",
        "--tls-key",
        "/etc/janus/tls/tls.key",
        "--tls-ca",
        "/etc/janus/tls/ca.crt",
        "state",
    ]);
    assert!(
        state.lines().any(|l| l.contains(&format!("{}/web", node.work)) && l.contains("Guarded")),
        "janusctl state in the agent pod:\n{state}"
    );
    eventually("the audit record of the denial", T, || {
        node.k(&["-n", NS, "logs", "ds/janusd", "-c", "janusd"]).lines().any(|l| {
            l.contains("\"decision\":\"deny\"")
                && l.contains(&format!("\"namespace\":\"{}\"", node.work))
                && l.contains("\"pod\":\"web\"")
                && l.contains("\"container\":\"app\"")
                && l.contains("\"process\":\"cat\"")
                && l.contains("\"path\":\"/data/secret/key\"")
        })
    });

    // ---- An init container (run to completion) is guarded too: it waits
    // until its open of the denied file fails, so the pod only starts when
    // the guard reached the init container.
    node.guard("init", "init", serde_json::json!({"deny": ["/data/secret"]}));
    let init = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "init", "namespace": node.work, "labels": {"app": "init"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{
                "name": "setup", "image": "janus.local/busybox:1", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "while cat /data/secret/key >/dev/null 2>&1; do sleep 0.05; done; cat /data/secret/key; exit 0"],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
            }],
            "containers": [{
                "name": "app", "image": "janus.local/busybox:1", "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
            }]
        }
    });
    node.apply(&init.to_string());
    node.wait_ready(&["pod/init"]);
    let setup = node.k(&["-n", &node.work, "logs", "init", "-c", "setup"]);
    assert!(setup.contains("Operation not permitted"), "the init container was denied: {setup}");
    assert!(node.cat("init", "/data/secret/key").contains("Operation not permitted"), "and then the app");
    node.k(&["-n", &node.work, "delete", "pod", "init", "--wait=false"]);

    // ---- Container start -> first denied open, over many pod starts, with
    // the guard in place first (the path a new pod takes today).
    node.guard("start", "start", serde_json::json!({"deny": ["/data/secret"]}));
    const STARTS: usize = 30;
    let mut windows = Vec::new();
    let mut reads = Vec::new();
    for batch in 0..STARTS / 5 {
        let names: Vec<String> = (0..5).map(|i| format!("start-{}", batch * 5 + i)).collect();
        for n in &names {
            node.pod(n, "start", START_PROBE);
        }
        for n in &names {
            let mut got = None;
            eventually(&format!("pod {n} recorded its first denial"), T, || {
                got = node.start_probe(n);
                got.is_some()
            });
            let (start, denied, r) = got.unwrap();
            windows.push(denied - start);
            reads.push(r as f64);
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        node.k(&[&["-n", &node.work, "delete", "pod", "--wait=false"], &refs[..]].concat());
    }
    let max_reads = reads.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "container start -> first denied open, {STARTS} pod starts: p50 {:.2} s, p99 {:.2} s; opens that got through before it: p50 {}, max {}",
        pct(&mut windows, 50),
        pct(&mut windows, 99),
        pct(&mut reads, 50),
        max_reads
    );

    // ---- The unguarded window of agent restarts, seen by a guarded
    // container that tries every 10 ms.
    node.guard("probe", "probe", serde_json::json!({"deny": ["/data/secret"]}));
    node.pod("probe", "probe", WINDOW_PROBE);
    node.wait_ready(&["pod/probe"]);
    eventually("the probe pod guarded", T, || {
        let since = uptime() - 0.3;
        std::thread::sleep(Duration::from_millis(500));
        window(&node, since).0 == 0
    });
    // A rolling update to a new image tag (the same image, tagged anew).
    let version =
        node.k(&["-n", NS, "get", "ds", "janusd", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]);
    let (repo, _) = version.rsplit_once(':').unwrap();
    let ctl = version.replace("/janusd:", "/janus-controller:");
    node.ctr(&["images", "tag", "--force", &version, &format!("{repo}:upgrade")]);
    node.ctr(&["images", "tag", "--force", &ctl, &format!("{}:upgrade", ctl.rsplit_once(':').unwrap().0)]);
    let old_pid = node.agent_pids();
    let since = uptime();
    let t = Instant::now();
    node.helm(&[
        "upgrade",
        "janus",
        chart.to_str().unwrap(),
        "-n",
        NS,
        "--reuse-values",
        "--set",
        "image.tag=upgrade",
        "--wait",
        "--timeout",
        "300s",
    ])
    .unwrap_or_else(|e| panic!("helm upgrade: {e}"));
    node.k(&["-n", NS, "rollout", "status", "ds/janusd", "--timeout=300s"]);
    let rolled = t.elapsed();
    eventually("the new agent enforces", T, || {
        let s = uptime() - 0.3;
        std::thread::sleep(Duration::from_millis(500));
        window(&node, s).0 == 0
    });
    assert_ne!(node.agent_pids(), old_pid, "a new agent process");
    let (n, first, last) = window(&node, since);
    eprintln!(
        "agent rolling update (new image tag; rollout {rolled:?}): {n} opens got through, unguarded for {:.2} s",
        if n > 0 { last - first + 0.01 } else { 0.0 }
    );
    let out = node.cat("probe", "/data/secret/key");
    assert!(out.contains("Operation not permitted"), "after the upgrade: {out}");
    // `kubectl delete pod` of the agent: the DaemonSet makes a new one.
    let agent = node.agent_pod_names();
    let since = uptime();
    node.k(&["-n", NS, "delete", "pod", &agent, "--wait=true"]);
    eventually("a new agent pod Ready", T, || {
        node.kubectl(&["-n", NS, "rollout", "status", "ds/janusd", "--timeout=5s"]).is_ok()
            && node.agent_pod_names() != agent
    });
    eventually("the replacement agent enforces", T, || {
        let s = uptime() - 0.3;
        std::thread::sleep(Duration::from_millis(500));
        window(&node, s).0 == 0
    });
    let (n, first, last) = window(&node, since);
    eprintln!(
        "agent pod deleted: {n} opens got through, unguarded for {:.2} s",
        if n > 0 { last - first + 0.01 } else { 0.0 }
    );

    // ---- Controller failover: delete the leader's pod; the other replica
    // takes the Lease and a guard created meanwhile is enforced.
    // (After the upgrade the Lease may still name a replica that is gone
    // until it expires: wait for a live leader.)
    let holder = || node.k(&["-n", NS, "get", "lease", "janus-controller", "-o", "jsonpath={.spec.holderIdentity}"]);
    let replicas = || {
        node.k(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=controller",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
    };
    eventually("a running replica holds the Lease", T, || replicas().split_whitespace().any(|p| p == holder()));
    let leader = holder();
    let t = Instant::now();
    node.k(&["-n", NS, "delete", "pod", &leader, "--wait=false"]);
    // The deleted leader finishes the reconciles it runs, starts none, and
    // gives the Lease up. A guard created from then on can only be pushed by
    // the other replica (created at once, the old leader could still push
    // it before SIGTERM reached it, which proves nothing about failover).
    eventually("the deleted leader gave the Lease up", T, || holder() != leader);
    let released = t.elapsed();
    node.guard("failover", "web", serde_json::json!({"deny": ["/data/open"]}));
    let took = eventually("the guard created during failover enforced", Duration::from_secs(180), || {
        node.cat("web", "/data/open/greeting").contains("Operation not permitted")
    });
    let now_leader = holder();
    assert_ne!(now_leader, leader, "another replica leads");
    assert!(replicas().split_whitespace().any(|p| p == now_leader), "{now_leader:?} is a running replica");
    eprintln!(
        "controller leader pod deleted: Lease given up after {released:?}; a guard created then was enforced {took:?} later (by {now_leader})"
    );

    // ---- 50 guarded pods on the node: the agent's memory and CPU.
    node.guard("fifty", "fifty", serde_json::json!({"deny": ["/data/secret"]}));
    let names: Vec<String> = (0..50).map(|i| format!("fifty-{i:02}")).collect();
    for n in &names {
        node.pod(n, "fifty", "exec sleep 3600");
    }
    eventually("50 pods guarded", Duration::from_secs(600), || {
        node.k(&["-n", &node.work, "get", "jg", "fifty", "--no-headers"]).split_whitespace().nth(2) == Some("50")
    });
    std::thread::sleep(Duration::from_secs(2));
    let pid = node.agent_pids()[0];
    let procfs = janus_procfs::ProcFs::default();
    let ticks = |p| procfs.stat(p).map(|s| s.utime + s.stime).unwrap();
    let (c0, t0) = (ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let cpu = (ticks(pid) - c0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
    let rss = procfs.status(pid).unwrap().vm_rss_kib.unwrap_or(0);
    let guarded: u64 = node
        .k(&["-n", &node.work, "get", "jg", "-o", "jsonpath={.items[*].status.guardedPods}"])
        .split_whitespace()
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    eprintln!(
        "agent with {guarded} guarded pods (50 of them idle): RSS {} MiB, idle CPU {:.1}% of one core",
        rss / 1024,
        cpu * 100.0
    );
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    node.k(&[&["-n", &node.work, "delete", "pod", "--wait=false"], &refs[..]].concat());

    // ---- Uninstall: guards first (as docs/install.md says), then the
    // chart: every mark released, nothing blocks.
    node.k(&["delete", "janusguards", "--all", "-n", &node.work, "--wait", "--timeout=120s"]);
    assert_eq!(node.cat("web", "/data/secret/key"), "top secret", "deleted guards are released");
    let t = Instant::now();
    node.helm(&["uninstall", "janus", "-n", NS, "--wait", "--timeout", "120s"])
        .unwrap_or_else(|e| panic!("helm uninstall: {e}"));
    eventually("the agent process gone", T, || node.agent_pids().is_empty());
    eprintln!("helm uninstall: agent gone after {:?}", t.elapsed());
    let held = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_dir(e.ok()?.path().join("fd")).ok())
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().contains("fanotify"))
        .count();
    assert_eq!(held, 0, "fanotify groups left on the node after uninstall");
    assert_eq!(node.cat("probe", "/data/secret/key"), "top secret", "nothing guards or blocks after uninstall");
}
