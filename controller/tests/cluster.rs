//! End to end against a real kube-apiserver (ci/k8s), two real agents as two
//! "nodes" on loopback, the controller running with exactly the shipped RBAC
//! role, and real test containers. The test plays the kubelet: it starts a
//! container and sets the pod's status (node, container ID, Running, Ready).
//!
//! Needs root and `JANUS_K8S_ENV` pointing at the `env` file that
//! `ci/k8s/start.sh DIR` writes (ci/test.sh does both).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use janus_controller::crd::JanusGuard;
use janus_proto::v1::janusd_client::JanusdClient;
use janus_tests::container::{Layout, TestContainer};
use janus_tests::pki::Pki;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Config, ResourceExt};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_janus-controller");
const AGENT_NS: &str = "janus-system";

fn env_file() -> BTreeMap<String, String> {
    let path = std::env::var("JANUS_K8S_ENV").unwrap_or_else(|_| {
        panic!("this test needs a kube-apiserver: run `ci/k8s/start.sh DIR` and set JANUS_K8S_ENV=DIR/env (ci/test.sh does)")
    });
    read_env(&path)
}

/// The env file of the real one-node cluster (`ci/k8s/cluster.sh up`).
fn node_env_file() -> BTreeMap<String, String> {
    let path = std::env::var("JANUS_NODE_ENV").unwrap_or_else(|_| {
        panic!(
            "this test needs the real one-node cluster: run `ci/k8s/cluster.sh up` and set JANUS_NODE_ENV=<its dir>/env (ci/test.sh does)"
        )
    });
    read_env(&path)
}

fn read_env(path: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').trim_matches('\'').to_string()))
        .collect()
}

async fn client_from(kubeconfig: &str) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    Client::try_from(cfg).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Applies every document of a manifest file (server-side apply).
async fn apply_file(client: &Client, path: &Path, kinds: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap();
    for doc in text.split("\n---") {
        let v: serde_json::Value = match serde_norway::from_str(doc) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let Some(kind) = v["kind"].as_str() else { continue };
        if !kinds.contains(&kind) {
            continue;
        }
        let gvk = kube::api::GroupVersionKind::try_from(&kube::api::TypeMeta {
            api_version: v["apiVersion"].as_str().unwrap().into(),
            kind: kind.into(),
        })
        .unwrap();
        let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<kube::api::DynamicObject> = match (caps.scope, v["metadata"]["namespace"].as_str()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
            _ => Api::all_with(client.clone(), &ar),
        };
        api.patch(&name, &PatchParams::apply("janus-test").force(), &Patch::Apply(&v)).await.unwrap();
    }
}

struct Agent {
    child: Option<Child>,
    node: String,
    port: u16,
    state: PathBuf,
}

impl Agent {
    fn start(node: &str, pki: &Pki, dir: &Path, port: u16) -> Agent {
        let state = dir.join(format!("{node}-state.json"));
        let mut a = Agent { child: None, node: node.into(), port, state };
        a.spawn(pki);
        a
    }

    fn spawn(&mut self, pki: &Pki) {
        let mut child = Command::new(janus_tests::target_bin("janusd"))
            .args(["serve", "--node-name", &self.node, "--resync", "100ms"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--state-file")
            .arg(&self.state)
            .args(["--tls-cert", pki.server_cert.to_str().unwrap(), "--tls-key", pki.server_key.to_str().unwrap()])
            .args(["--tls-ca", pki.ca.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let node = self.node.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("janusd[{node}]: {l}");
                let _ = tx.send(l);
            }
        });
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(l) if l.contains("janusd serve ready") => break,
                _ if Instant::now() > end => panic!("agent {} did not start", self.node),
                _ => {}
            }
        }
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A controller process and its metrics port.
struct Controller(Child, u16);

impl Controller {
    fn start(env: &BTreeMap<String, String>, pki: &Pki) -> Controller {
        Self::start_with(env, pki, &[])
    }

    fn start_with(env: &BTreeMap<String, String>, pki: &Pki, extra: &[&str]) -> Controller {
        Self::start_via(pki, extra, Path::new(&env["JANUS_K8S_CONTROLLER_KUBECONFIG"]))
    }

    /// The same, reaching the API server through `kubeconfig`.
    fn start_via(pki: &Pki, extra: &[&str], kubeconfig: &Path) -> Controller {
        // The tests' defaults, unless `extra` sets them.
        let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        for (flag, value) in [("--drift-interval", "1"), ("--resync", "5"), ("--push-timeout", "5")] {
            if !extra.contains(&flag) {
                args.extend([flag.to_string(), value.to_string()]);
            }
        }
        let port = free_port();
        let child = Command::new(CONTROLLER)
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .args(["--agent-namespace", AGENT_NS])
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--tls-cert", pki.client_cert.to_str().unwrap(), "--tls-key", pki.client_key.to_str().unwrap()])
            .args(["--tls-ca", pki.ca.to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Controller(child, port)
    }

    /// The reconcile count once it stopped moving (2 s without a change).
    async fn settled_reconciles(&self) -> f64 {
        let mut last = -1.0;
        let end = Instant::now() + T;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = self.counter("janus_controller_reconciles_total", "");
            if now >= 0.0 && now == last {
                return now;
            }
            last = now;
            assert!(Instant::now() < end, "the controller never settled");
        }
    }

    /// A counter from the controller's /metrics (summed over its labels).
    fn counter(&self, name: &str, label: &str) -> f64 {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.1)) else { return -1.0 };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Cluster {
    env: BTreeMap<String, String>,
    admin: Client,
    pki: Pki,
    dir: tempfile::TempDir,
    agents: Vec<Agent>,
    ns: String,
}

impl Cluster {
    /// A cluster fixture using a fresh namespace `<prefix>-<random>`, with
    /// agents for two pretend nodes (the test plays their kubelets).
    async fn new(prefix: &str) -> Cluster {
        Cluster::with(prefix, env_file(), &["node-a", "node-b"]).await
    }

    /// The same on the real one-node cluster: one agent, on the host, for
    /// its node (the kubelet and containerd are real).
    async fn real_node(prefix: &str) -> Cluster {
        let env = node_env_file();
        let node = env.get("JANUS_NODE_NAME").cloned().expect("JANUS_NODE_NAME in the node env file");
        Cluster::with(prefix, env, &[node.as_str()]).await
    }

    async fn with(prefix: &str, env: BTreeMap<String, String>, nodes: &[&str]) -> Cluster {
        janus_tests::require_root();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let ns = &format!("{prefix}-{:x}", nanos ^ std::process::id());
        let admin = client_from(&env["JANUS_K8S_ADMIN_KUBECONFIG"]).await;
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        apply_file(&admin, &Path::new(root).join("deploy/crd.yaml"), &["CustomResourceDefinition"]).await;
        // The namespace and exactly the shipped roles, bound to the user the
        // controller runs as.
        let nss: Api<Namespace> = Api::all(admin.clone());
        for n in [AGENT_NS, ns] {
            let _ = nss
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(serde_json::json!({"metadata": {"name": n}})).unwrap(),
                )
                .await;
        }
        apply_file(&admin, &Path::new(root).join("deploy/rbac.yaml"), &["ClusterRole", "Role"]).await;
        let bind = |kind: &str, ns: Option<&str>| {
            let mut v = serde_json::json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                "metadata": {"name": "janus-controller-test-user"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": if kind == "ClusterRoleBinding" { "ClusterRole" } else { "Role" }, "name": "janus-controller"},
                "subjects": [{"kind": "User", "name": "janus-controller", "apiGroup": "rbac.authorization.k8s.io"}]
            });
            if let Some(ns) = ns {
                v["metadata"]["namespace"] = ns.into();
            }
            v
        };
        for (kind, ns) in [("ClusterRoleBinding", None), ("RoleBinding", Some(AGENT_NS))] {
            let v = bind(kind, ns);
            let path = std::env::temp_dir().join(format!("janus-{kind}.yaml"));
            std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
            apply_file(&admin, &path, &[kind]).await;
        }
        // Wait until the CRD serves.
        let guards: Api<JanusGuard> = Api::namespaced(admin.clone(), ns);
        let end = Instant::now() + Duration::from_secs(20);
        while guards.list(&Default::default()).await.is_err() {
            assert!(Instant::now() < end, "JanusGuard API never became available");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        purge_old_test_namespaces(&admin, ns).await;
        let dir = tempfile::Builder::new().prefix("janus-cluster-").tempdir().unwrap();
        let pki = Pki::generate(dir.path());
        let mut c = Cluster { env, admin, pki, dir, agents: Vec::new(), ns: ns.into() };
        for node in nodes {
            let a = Agent::start(node, &c.pki, c.dir.path(), free_port());
            c.publish_agent(&a).await;
            c.agents.push(a);
        }
        c
    }

    /// Publishes an agent through an EndpointSlice of the agent Service.
    async fn publish_agent(&self, a: &Agent) {
        self.publish_agent_labelled(a, "janus-test", "1").await
    }

    /// The same, with one more label on the slice (a change to its object).
    async fn publish_agent_labelled(&self, a: &Agent, key: &str, value: &str) {
        self.publish_agent_at(&a.node, a.port, key, value).await
    }

    /// Publishes `node`'s agent at `port` on loopback (e.g. a proxy's).
    async fn publish_agent_at(&self, node: &str, port: u16, key: &str, value: &str) {
        let slices: Api<EndpointSlice> = Api::namespaced(self.admin.clone(), AGENT_NS);
        let s: EndpointSlice = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("janusd-{node}"), "labels": {"kubernetes.io/service-name": "janusd", key: value}},
            // The API server refuses loopback IPs in EndpointSlices; an FQDN
            // slice with a name under .localhost (RFC 6761) reaches the
            // agents on loopback.
            "addressType": "FQDN",
            "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [format!("{node}.localhost")], "nodeName": node, "conditions": {"ready": true}}]
        }))
        .unwrap();
        slices
            .patch(&format!("janusd-{node}"), &PatchParams::apply("janus-test").force(), &Patch::Apply(&s))
            .await
            .unwrap();
    }

    fn guards(&self) -> Api<JanusGuard> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    async fn apply_guard(&self, name: &str, labels: &str, deny: &[&str]) {
        let yaml = format!(
            "apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {labels}}}\n  subjects:\n  - deny: {}\n",
            serde_json::to_string(deny).unwrap()
        );
        let g: JanusGuard = serde_norway::from_str(&yaml).unwrap();
        self.guards().patch(name, &PatchParams::apply("janus-test").force(), &Patch::Apply(&g)).await.unwrap();
    }

    /// Creates a pod object scheduled to `node`.
    async fn create_pod(&self, name: &str, node: &str, labels: serde_json::Value) -> Pod {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "janus-test"}]}
        }))
        .unwrap();
        self.pods().create(&PostParams::default(), &pod).await.unwrap()
    }

    /// Plays the kubelet: the pod is Running and Ready with this container.
    async fn set_running(&self, name: &str, runtime_id: &str) {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = serde_json::json!({"status": {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": [{"name": "app", "image": "janus-test", "imageID": "", "ready": true, "restartCount": 0,
                                   "containerID": runtime_id, "state": {"running": {"startedAt": now}}}]
        }});
        self.pods().patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    }

    async fn delete_pod(&self, name: &str) {
        let _ = self.pods().delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
    }

    async fn agent_state(&self, node: &str) -> BTreeSet<(String, String)> {
        let st = self.agent_guards(node).await;
        st.guards
            .iter()
            .map(|g| {
                let gr = g.guard.as_ref().unwrap();
                (format!("{}/{}", gr.namespace, gr.name), g.pod.as_ref().unwrap().name.clone())
            })
            .collect()
    }

    /// Pods (by name) whose every container the agent on `node` reports
    /// guarded.
    async fn guarded_pods(&self, node: &str) -> BTreeSet<String> {
        let guarded = janus_proto::v1::ContainerState::Guarded as i32;
        let st = self.agent_guards(node).await;
        st.guards
            .iter()
            .filter(|g| !g.containers.is_empty() && g.containers.iter().all(|c| c.state_kind == guarded))
            .map(|g| g.pod.as_ref().unwrap().name.clone())
            .collect()
    }

    async fn agent_guards(&self, node: &str) -> janus_proto::v1::GuardState {
        let a = self.agents.iter().find(|a| a.node == node).unwrap();
        let tls = ClientTlsConfig::new()
            .domain_name("janusd")
            .ca_certificate(Certificate::from_pem(std::fs::read(&self.pki.ca).unwrap()))
            .identity(Identity::from_pem(
                std::fs::read(&self.pki.client_cert).unwrap(),
                std::fs::read(&self.pki.client_key).unwrap(),
            ));
        let ch = Endpoint::from_shared(format!("https://127.0.0.1:{}", a.port))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        JanusdClient::new(ch)
            .get_guard_state(janus_proto::v1::GetGuardStateRequest::default())
            .await
            .unwrap()
            .into_inner()
    }

    async fn status(&self, guard: &str) -> (i32, i32, String) {
        let g = self.guards().get(guard).await.unwrap();
        let s = g.status.unwrap_or_default();
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone()).unwrap_or_default();
        (s.observable_pods, s.guarded_pods, ready)
    }
}

/// Removes what earlier (failed) runs left in `e2e-*` namespaces: guards
/// (finalizers dropped: no controller may be running for them) and pods.
async fn purge_old_test_namespaces(admin: &Client, keep: &str) {
    let nss: Api<Namespace> = Api::all(admin.clone());
    for ns in nss.list(&Default::default()).await.unwrap() {
        let name = ns.metadata.name.unwrap_or_default();
        if !name.starts_with("e2e-") || name == keep {
            continue;
        }
        let guards: Api<JanusGuard> = Api::namespaced(admin.clone(), &name);
        for g in guards.list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
            let n = g.metadata.name.unwrap_or_default();
            let _ = guards
                .patch(
                    &n,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
                )
                .await;
            let _ = guards.delete(&n, &DeleteParams::default()).await;
        }
        let pods: Api<Pod> = Api::namespaced(admin.clone(), &name);
        let _ = pods
            .delete_collection(
                &DeleteParams { grace_period_seconds: Some(0), ..Default::default() },
                &Default::default(),
            )
            .await;
    }
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const T: Duration = Duration::from_secs(30);

/// The tests share one API server, the agent Service's EndpointSlices and
/// the cluster-wide watch of every controller, so they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
#[ignore = "needs root and a kube-apiserver (ci/k8s)"]
fn guard_lifecycle_through_the_api_server() {
    let _serial = serial();
    rt().block_on(async {
        let mut c = Cluster::new("e2e-life").await;
        let _controller = Controller::start(&c.env, &c.pki);
        let web = TestContainer::start(Layout::ContainerdSystemdV2, &[("/data/secret", "s"), ("/data/ok", "o")]);
        let other = TestContainer::start(Layout::CrioSystemdV2, &[("/data/secret", "s")]);
        c.create_pod("web-1", "node-a", serde_json::json!({"app": "web"})).await;
        c.create_pod("db-1", "node-b", serde_json::json!({"app": "db"})).await;
        c.set_running("web-1", &web.runtime_id()).await;
        c.set_running("db-1", &other.runtime_id()).await;

        c.apply_guard("g", "{app: web}", &["/data/secret"]).await;
        eventually("web-1 denied", T, || async { web.op("open", "/data/secret") == "EPERM" }).await;
        assert_eq!(web.op("open", "/data/ok"), "ok");
        assert_eq!(other.op("open", "/data/secret"), "ok", "a pod the guard does not select");
        eventually("status 1/1 Ready", T, || async { c.status("g").await == (1, 1, "True".into()) }).await;

        // Edited guard: new rules enforced.
        c.apply_guard("g", "{app: web}", &["/data/ok"]).await;
        eventually("edit enforced", T, || async { web.op("open", "/data/ok") == "EPERM" }).await;
        assert_eq!(web.op("open", "/data/secret"), "ok");

        // A pod started later is guarded; measure pod Ready -> enforcement.
        let mut took = Vec::new();
        let mut later = Vec::new();
        for i in 0..8 {
            let ct = TestContainer::start(Layout::ContainerdSystemdV2, &[("/data/ok", "o")]);
            let name = format!("web-late-{i}");
            c.create_pod(&name, if i % 2 == 0 { "node-a" } else { "node-b" }, serde_json::json!({"app": "web"})).await;
            let t = Instant::now();
            c.set_running(&name, &ct.runtime_id()).await;
            eventually("late pod denied", T, || async { ct.op("open", "/data/ok") == "EPERM" }).await;
            took.push(t.elapsed());
            later.push((name, ct));
        }
        took.sort();
        eprintln!(
            "pod Ready -> enforcement: median {:?}, max {:?} over {}",
            took[took.len() / 2],
            took[took.len() - 1],
            took.len()
        );
        eventually("status 9/9", T, || async { c.status("g").await.0 == 9 && c.status("g").await.1 == 9 }).await;

        // Agent killed and restarted empty: drift repair brings guards back.
        c.agents[0].kill();
        std::fs::remove_file(&c.agents[0].state).ok();
        assert_eq!(web.op("open", "/data/ok"), "ok", "a dead agent denies nothing");
        c.agents[0].spawn(&c.pki);
        eventually("guards back after agent restart", T, || async { web.op("open", "/data/ok") == "EPERM" }).await;

        // Pod deleted: its guard is destroyed on the agent.
        c.delete_pod("web-1").await;
        let gk = format!("{}/g", c.ns);
        eventually("deleted pod withdrawn", T, || async {
            !c.agent_state("node-a").await.iter().any(|(g, p)| g == &gk && p == "web-1")
        })
        .await;
        assert_eq!(web.op("open", "/data/ok"), "ok");

        // Guard deleted: everything released, finalizer gone.
        c.guards().delete("g", &DeleteParams::default()).await.unwrap();
        eventually("guard deleted", T, || async { c.guards().get_opt("g").await.unwrap().is_none() }).await;
        for node in ["node-a", "node-b"] {
            let left: Vec<_> = c.agent_state(node).await.into_iter().filter(|(g, _)| g == &gk).collect();
            assert!(left.is_empty(), "{node} still enforces {left:?} after the guard was deleted");
        }
        for (_, ct) in &later {
            assert_eq!(ct.op("open", "/data/ok"), "ok");
        }
        for (name, _) in &later {
            c.delete_pod(name).await;
        }
        c.delete_pod("db-1").await;
    });
}

#[test]
#[ignore = "needs root and a kube-apiserver (ci/k8s)"]
fn controller_restart_rebuilds_state_without_duplicates() {
    let _serial = serial();
    rt().block_on(async {
        let c = Cluster::new("e2e-restart").await;
        let controller = Controller::start(&c.env, &c.pki);
        let web = TestContainer::start(Layout::ContainerdSystemdV2, &[("/data/secret", "s")]);
        c.create_pod("web-1", "node-b", serde_json::json!({"app": "web"})).await;
        c.set_running("web-1", &web.runtime_id()).await;
        c.apply_guard("g", "{app: web}", &["/data/secret"]).await;
        eventually("denied", T, || async { web.op("open", "/data/secret") == "EPERM" }).await;
        drop(controller);
        // While the controller is down: the pod goes away, another arrives.
        c.delete_pod("web-1").await;
        let web2 = TestContainer::start(Layout::ContainerdSystemdV2, &[("/data/secret", "s")]);
        c.create_pod("web-2", "node-b", serde_json::json!({"app": "web"})).await;
        c.set_running("web-2", &web2.runtime_id()).await;
        let _controller = Controller::start(&c.env, &c.pki);
        eventually("new pod guarded", T, || async { web2.op("open", "/data/secret") == "EPERM" }).await;
        let want: BTreeSet<(String, String)> = [(format!("{}/g", c.ns), "web-2".to_string())].into();
        eventually("agent state equals the API", T, || async { c.agent_state("node-b").await == want }).await;
        assert_eq!(web.op("open", "/data/secret"), "ok", "the deleted pod's guard was not withdrawn");
        c.guards().delete("g", &DeleteParams::default()).await.unwrap();
        eventually("guard deleted", T, || async { c.guards().get_opt("g").await.unwrap().is_none() }).await;
        c.delete_pod("web-2").await;
    });
}

#[test]
#[ignore = "needs root and a kube-apiserver (ci/k8s)"]
fn bad_guard_is_rejected_by_the_api_server() {
    let _serial = serial();
    rt().block_on(async {
        let c = Cluster::new("e2e-bad").await;
        let bad: JanusGuard = serde_norway::from_str(
            "apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata: {name: bad}\nspec:\n  selector: {matchLabels: {a: b}}\n  subjects:\n  - deny: [etc/passwd]\n",
        )
        .unwrap();
        let err = c.guards().create(&PostParams::default(), &bad).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("spec.subjects[0].deny[0]") && msg.contains("etc/passwd"), "{msg}");
        let none: JanusGuard = serde_norway::from_str(
            "apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata: {name: bad2}\nspec:\n  selector: {matchLabels: {a: b}}\n  subjects:\n  - events: [open]\n",
        )
        .unwrap();
        let msg = c.guards().create(&PostParams::default(), &none).await.unwrap_err().to_string();
        assert!(msg.contains("at least one path in allow or deny"), "{msg}");
        let guard = |name: &str, subject: &str| -> JanusGuard {
            serde_norway::from_str(&format!(
                "apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{a: b}}}}\n  subjects:\n  - {subject}\n"
            ))
            .unwrap()
        };
        let pattern = guard("bad3", "{deny: [/s], allowProcesses: [/usr/bin/*]}");
        let msg = c.guards().create(&PostParams::default(), &pattern).await.unwrap_err().to_string();
        assert!(msg.contains("spec.subjects[0].allowProcesses[0]"), "{msg}");
        let no_deny = guard("bad4", "{allow: [/a], allowProcesses: [/usr/sbin/nginx]}");
        let msg = c.guards().create(&PostParams::default(), &no_deny).await.unwrap_err().to_string();
        assert!(msg.contains("allowProcesses only changes deny rules"), "{msg}");
        let good = guard("procs", "{deny: [/s], allowProcesses: [/usr/sbin/nginx, /bin/.x]}");
        c.guards().create(&PostParams::default(), &good).await.expect("a valid allowProcesses must apply");
        c.guards().delete("procs", &DeleteParams::default()).await.unwrap();
        let original = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/original-nginx-janus-guard.yaml")).unwrap();
        let g: JanusGuard = serde_norway::from_str(&original).unwrap();
        c.guards().create(&PostParams::default(), &g).await.expect("the original Janus example must apply unchanged");
        c.guards().delete("nginx-janus-guard", &DeleteParams::default()).await.unwrap();
    });
}

#[test]
#[ignore = "needs root and a kube-apiserver (ci/k8s)"]
fn churn_final_state_matches_the_api() {
    let _serial = serial();
    rt().block_on(async {
        let c = Cluster::new("e2e-churn").await;
        let _controller = Controller::start(&c.env, &c.pki);
        c.apply_guard("churn", "{app: churn}", &["/data/secret"]).await;
        let start = Instant::now();
        let mut alive: BTreeSet<String> = BTreeSet::new();
        let mut created = 0;
        let mut deleted = 0;
        for burst in 0..6 {
            // Create a burst of pods (containers that never start: the
            // agents keep them Pending), then delete a part of them.
            let names: Vec<String> = (0..50).map(|i| format!("p-{burst}-{i}")).collect();
            for (i, n) in names.iter().enumerate() {
                let node = if i % 2 == 0 { "node-a" } else { "node-b" };
                c.create_pod(n, node, serde_json::json!({"app": "churn"})).await;
                let id: String = format!("{:064x}", (burst * 1000 + i) as u128 * 7919 + 1);
                c.set_running(n, &format!("containerd://{}", &id[id.len() - 64..])).await;
                alive.insert(n.clone());
                created += 1;
            }
            for n in names.iter().step_by(3) {
                c.delete_pod(n).await;
                alive.remove(n);
                deleted += 1;
            }
        }
        let want: BTreeSet<(String, String)> = alive.iter().map(|p| (format!("{}/churn", c.ns), p.clone())).collect();
        eventually("agents match the API", Duration::from_secs(90), || async {
            let mut have = c.agent_state("node-a").await;
            have.extend(c.agent_state("node-b").await);
            have == want
        })
        .await;
        eprintln!(
            "churn: {created} pods created, {deleted} deleted in bursts of 50; agents matched the API ({} guarded pods) {:?} after the first pod",
            want.len(),
            start.elapsed()
        );
        c.guards().delete("churn", &DeleteParams::default()).await.unwrap();
        eventually("guard deleted", Duration::from_secs(60), || async { c.guards().get_opt("churn").await.unwrap().is_none() }).await;
        for p in alive {
            c.delete_pod(&p).await;
        }
    });
}

#[test]
#[ignore = "needs root and a kube-apiserver (ci/k8s)"]
fn two_replicas_elect_one_leader_and_fail_over() {
    use k8s_openapi::api::coordination::v1::Lease;
    let _serial = serial();
    rt().block_on(async {
        let c = Cluster::new("e2e-leader").await;
        let lease_name = format!("janus-controller-{}", c.ns);
        let args = |id: &'static str| {
            [
                "--leader-elect",
                "--identity",
                id,
                "--lease-name",
                Box::leak(lease_name.clone().into_boxed_str()),
                "--lease-duration",
                "3",
            ]
        };
        let first = Controller::start_with(&c.env, &c.pki, &args("replica-1"));
        let leases: Api<Lease> = Api::namespaced(c.admin.clone(), AGENT_NS);
        let holder = || async { leases.get_opt(&lease_name).await.unwrap().and_then(|l| l.spec?.holder_identity) };
        eventually("replica-1 leads", T, || async { holder().await.as_deref() == Some("replica-1") }).await;
        let second = Controller::start_with(&c.env, &c.pki, &args("replica-2"));
        let web = TestContainer::start(Layout::ContainerdSystemdV2, &[("/data/secret", "s")]);
        c.create_pod("web-1", "node-a", serde_json::json!({"app": "web"})).await;
        c.set_running("web-1", &web.runtime_id()).await;
        c.apply_guard("g", "{app: web}", &["/data/secret"]).await;
        eventually("denied", T, || async { web.op("open", "/data/secret") == "EPERM" }).await;
        assert_eq!(
            holder().await.as_deref(),
            Some("replica-1"),
            "the follower must not take the lease while the leader renews"
        );
        drop(first);
        eventually("replica-2 takes over", T, || async { holder().await.as_deref() == Some("replica-2") }).await;
        // The new leader acts: an edit is enforced.
        c.apply_guard("g", "{app: web}", &["/data/other"]).await;
        eventually("edit enforced by the new leader", T, || async { web.op("open", "/data/secret") == "ok" }).await;
        // A leader stopped by SIGTERM (a rollout, a deleted pod) releases the
        // lease before it exits: read right after the exit, no one or the
        // follower holds it, never the replica that is gone (before, it was
        // held until its duration ran out).
        let mut second = second;
        let third = Controller::start_with(&c.env, &c.pki, &args("replica-3"));
        let pid = second.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let end = Instant::now() + T;
        while second.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "replica-2 did not exit on SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = holder().await;
        assert_ne!(after.as_deref(), Some("replica-2"), "the stopped leader still holds the lease");
        eventually("replica-3 takes over", T, || async { holder().await.as_deref() == Some("replica-3") }).await;
        c.guards().delete("g", &DeleteParams::default()).await.unwrap();
        eventually("guard deleted", T, || async { c.guards().get_opt("g").await.unwrap().is_none() }).await;
        c.delete_pod("web-1").await;
        drop(third);
    });
}

/// The controller's own status writes trigger no reconcile: a guard that
/// selects nothing is reconciled twice (one adds the finalizer, one pushes
/// and writes "0 of 0"), and its status write is not a third. Before, every
/// status patch came back as an event and reconciled the guard again.
#[test]
#[ignore = "needs root and a kube-apiserver (ci/k8s)"]
fn status_writes_trigger_no_reconcile() {
    let _serial = serial();
    rt().block_on(async {
        let c = Cluster::new("e2e-gen").await;
        let ctl = Controller::start_with(&c.env, &c.pki, &["--resync", "300"]);
        let reconciles = || ctl.counter("janus_controller_reconciles_total", "");
        // Settle: guards left by other tests in other namespaces are
        // reconciled once at start.
        let last = ctl.settled_reconciles().await;
        c.apply_guard("lonely", "{app: nobody}", &["/data/secret"]).await;
        eventually("status written", T, || async { c.status("lonely").await == (0, 0, "True".into()) }).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let n = reconciles() - last;
        eprintln!("reconciles of a new guard that selects nothing: {n}");
        assert_eq!(n, 2.0, "reconciles for one new guard (finalizer, apply), none for its own status write");
        // A spec change is reconciled again.
        c.apply_guard("lonely", "{app: nobody}", &["/data/other"]).await;
        eventually("the edit reconciled", T, || async { reconciles() - last >= 3.0 }).await;
        c.guards().delete("lonely", &DeleteParams::default()).await.unwrap();
        eventually("guard deleted", T, || async { c.guards().get_opt("lonely").await.unwrap().is_none() }).await;
    });
}

/// A change of one node's agent (its EndpointSlice) reconciles only the
/// guards with pods on that node: 1 of 3 guards here. Before, every guard
/// was reconciled on every slice change (a DaemonSet rollout: guards x nodes).
#[test]
#[ignore = "needs root and a kube-apiserver (ci/k8s)"]
fn an_agent_change_reconciles_only_the_guards_on_its_node() {
    let _serial = serial();
    rt().block_on(async {
        let c = Cluster::new("e2e-slices").await;
        let ctl = Controller::start_with(&c.env, &c.pki, &["--resync", "300"]);
        let a = TestContainer::start(Layout::ContainerdSystemdV2, &[("/data/secret", "s")]);
        let b = TestContainer::start(Layout::ContainerdSystemdV2, &[("/data/secret", "s")]);
        c.create_pod("on-a", "node-a", serde_json::json!({"app": "a"})).await;
        c.set_running("on-a", &a.runtime_id()).await;
        c.create_pod("on-b", "node-b", serde_json::json!({"app": "b"})).await;
        c.set_running("on-b", &b.runtime_id()).await;
        c.apply_guard("ga", "{app: a}", &["/data/secret"]).await;
        c.apply_guard("gb", "{app: b}", &["/data/secret"]).await;
        c.apply_guard("gnone", "{app: nobody}", &["/data/secret"]).await;
        for g in ["ga", "gb"] {
            eventually("guarded", T, || async { c.status(g).await == (1, 1, "True".into()) }).await;
        }
        let reconciles = || ctl.counter("janus_controller_reconciles_total", "");
        let last = ctl.settled_reconciles().await;
        // node-a's agent changes (as a rollout changes its slice entry).
        c.publish_agent_labelled(&c.agents[0], "rollout", "1").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let n = reconciles() - last;
        eprintln!("reconciles after node-a's EndpointSlice changed: {n}");
        assert_eq!(n, 1.0, "only ga has a pod on node-a");
        for g in ["ga", "gb", "gnone"] {
            c.guards().delete(g, &DeleteParams::default()).await.unwrap();
        }
        for g in ["ga", "gb", "gnone"] {
            eventually("guard deleted", T, || async { c.guards().get_opt(g).await.unwrap().is_none() }).await;
        }
        c.delete_pod("on-a").await;
        c.delete_pod("on-b").await;
    });
}

/// What 1,000 pods cost the controller's pod cache: pods as real ones are
/// (an applied-configuration annotation, env, managed fields the API server
/// adds), watched by a running controller; its RSS before and after. The
/// cache keeps only what the controller reads (desired::strip).
#[test]
#[ignore = "needs root and a kube-apiserver (ci/k8s)"]
fn pod_cache_memory_per_thousand_pods() {
    const PODS: usize = 1000;
    let _serial = serial();
    rt().block_on(async {
        let c = Cluster::new("e2e-memory").await;
        let ctl = Controller::start_with(&c.env, &c.pki, &["--resync", "300"]);
        let procfs = janus_procfs::ProcFs::default();
        let rss = || procfs.status(ctl.0.id()).ok().and_then(|s| s.vm_rss_kib).unwrap_or(0);
        eventually("controller up", T, || async { ctl.counter("janus_controller_reconciles_total", "") >= 0.0 }).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = rss();
        let filler = "x".repeat(2048);
        let mut made = 0;
        let api = c.pods();
        for chunk in (0..PODS).collect::<Vec<_>>().chunks(50) {
            let creates = chunk.iter().map(|i| {
                let api = api.clone();
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("m-{i:04}"), "labels": {"app": "memory", "tier": "web"},
                                 "annotations": {"kubectl.kubernetes.io/last-applied-configuration": filler}},
                    "spec": {"nodeName": "node-a", "containers": [{
                        "name": "app", "image": "registry.example/team/app:1.2.3",
                        "env": [{"name": "CONFIG", "value": filler}],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}
                    }]}
                }))
                .unwrap();
                async move { api.create(&PostParams::default(), &pod).await.is_ok() }
            });
            made += futures::future::join_all(creates).await.into_iter().filter(|ok| *ok).count();
        }
        assert_eq!(made, PODS, "pods created");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = rss();
        let per_pod = (after.saturating_sub(before)) as f64 * 1024.0 / PODS as f64;
        eprintln!(
            "controller RSS {} MiB -> {} MiB with {PODS} more pods watched: {:.1} KiB per pod ({:.1} MiB per 1,000)",
            before / 1024,
            after / 1024,
            per_pod / 1024.0,
            per_pod * 1000.0 / 1024.0 / 1024.0
        );
        // Measured here: about 22 KiB of RSS per pod with whole pods cached,
        // 4.5 KiB stripped (the rest is the watch's decoding and the
        // allocator). The bound sits between the two.
        assert!(per_pod < 10.0 * 1024.0, "{per_pod} bytes per pod: the cache keeps whole pods");
        let _ = c.pods().delete_collection(&DeleteParams::default(), &Default::default()).await;
    });
}

/// Deleting a guard never waits for an agent that does not answer, and the
/// agent, back with the deleted guard in its state file, has it withdrawn by
/// drift repair. Before, the finalizer held the deletion until the agent
/// answered (for ever, for a node that is gone).
#[test]
#[ignore = "needs root and a kube-apiserver (ci/k8s)"]
fn deleting_a_guard_never_waits_for_an_unreachable_agent() {
    let _serial = serial();
    rt().block_on(async {
        let mut c = Cluster::new("e2e-gone").await;
        let _controller = Controller::start(&c.env, &c.pki);
        let web = TestContainer::start(Layout::ContainerdSystemdV2, &[("/data/secret", "s")]);
        c.create_pod("web-1", "node-a", serde_json::json!({"app": "web"})).await;
        c.set_running("web-1", &web.runtime_id()).await;
        c.apply_guard("g", "{app: web}", &["/data/secret"]).await;
        eventually("denied", T, || async { web.op("open", "/data/secret") == "EPERM" }).await;
        // node-a's agent stops answering (its EndpointSlice stays: as for a
        // node that is NotReady or partitioned).
        c.agents[0].kill();
        c.guards().delete("g", &DeleteParams::default()).await.unwrap();
        eventually("the guard deleted while node-a's agent is down", T, || async {
            c.guards().get_opt("g").await.unwrap().is_none()
        })
        .await;
        // The agent comes back and restores the deleted guard from its state
        // file; drift repair withdraws it.
        let pki = c.pki.clone();
        c.agents[0].spawn(&pki);
        eventually("drift repair withdrew the deleted guard", T, || async {
            c.agent_state("node-a").await.is_empty() && web.op("open", "/data/secret") == "ok"
        })
        .await;
        c.delete_pod("web-1").await;
    });
}

/// An agent that stops answering costs one timeout, not one per push: it is
/// marked unreachable and pushes to it fail at once until a drift check
/// reaches it again, and then its guards are pushed. Before, every
/// reconcile of every guard with a pod on its node waited out the timeout.
#[test]
#[ignore = "needs root and a kube-apiserver (ci/k8s)"]
fn an_unreachable_agent_is_not_called_again_until_it_answers() {
    const GUARDS: usize = 5;
    let _serial = serial();
    rt().block_on(async {
        let c = Cluster::new("e2e-dead").await;
        // node-b's agent through a proxy that stops forwarding: calls hang
        // until the push timeout (2 s here).
        let proxy = Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], c.agents[1].port)));
        c.publish_agent_at("node-b", proxy.port, "janus-test", "1").await;
        proxy.cut();
        let ctl = Controller::start_with(&c.env, &c.pki, &["--push-timeout", "2", "--drift-interval", "3"]);
        for i in 0..GUARDS {
            let name = format!("b-{i}");
            c.create_pod(&name, "node-b", serde_json::json!({"app": name})).await;
            c.set_running(&name, &format!("containerd://{i:064x}")).await;
            c.apply_guard(&name, &format!("{{app: {name}}}"), &["/data/secret"]).await;
        }
        // Retries with backoff (0.5 s, 1 s, 2 s, 4 s, ...): about four per guard
        // in 10 s.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let called = ctl.counter("janus_controller_push_errors_total", "CreateGuard");
        let skipped = ctl.counter("janus_controller_push_skipped_total", "");
        eprintln!("{GUARDS} guards on a dead agent, 10 s: {called} calls timed out, {skipped} skipped");
        assert!(called <= GUARDS as f64, "{called} CreateGuard calls waited out the timeout (at most one round)");
        assert!(skipped >= GUARDS as f64, "{skipped} pushes skipped");
        // The agent answers again: a drift check finds it and the guards
        // are pushed.
        drop(proxy);
        let proxy_gone_port = c.agents[1].port;
        c.publish_agent_at("node-b", proxy_gone_port, "janus-test", "2").await;
        eventually("every guard pushed once the agent answers", T, || async {
            c.agent_state("node-b").await.len() == GUARDS
        })
        .await;
        for i in 0..GUARDS {
            c.guards().delete(&format!("b-{i}"), &DeleteParams::default()).await.unwrap();
        }
        for i in 0..GUARDS {
            let name = format!("b-{i}");
            eventually("guard deleted", T, || async { c.guards().get_opt(&name).await.unwrap().is_none() }).await;
            c.delete_pod(&name).await;
        }
    });
}

/// A TCP proxy to the API server that can be cut: from then on it forwards
/// nothing in either direction and closes nothing, so every request through
/// it hangs (a network partition, not a refused connection).
struct Proxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    fn start(upstream: std::net::SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = std::net::TcpStream::connect(upstream) else { continue };
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            while flag.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(50)); // hold, forward nothing
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Proxy { port, cut }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Let held connections go (they fail once their peers are gone).
        self.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A leader cut off from the API server (its requests hang, as in a
/// partition) while a second replica runs: it steps down, and it has exited
/// before the second replica takes the lease, so the two never lead at the
/// same time. Before: a renew that never returned kept the old leader
/// running (and pushing) for ever after the follower took over.
#[test]
#[ignore = "needs root and a kube-apiserver (ci/k8s)"]
fn a_leader_cut_off_from_the_api_server_steps_down_before_another_leads() {
    use k8s_openapi::api::coordination::v1::Lease;
    let _serial = serial();
    rt().block_on(async {
        let c = Cluster::new("e2e-partition").await;
        let lease_name = format!("janus-controller-{}", c.ns);
        let server = c.env["JANUS_K8S_SERVER"].clone();
        let upstream: std::net::SocketAddr = server.trim_start_matches("https://").parse().unwrap();
        let proxy = Proxy::start(upstream);
        let kubeconfig = c.dir.path().join("through-proxy.kubeconfig");
        let text = std::fs::read_to_string(&c.env["JANUS_K8S_CONTROLLER_KUBECONFIG"]).unwrap();
        assert!(text.contains(&server), "the controller's kubeconfig names {server}");
        std::fs::write(&kubeconfig, text.replace(&server, &format!("https://127.0.0.1:{}", proxy.port))).unwrap();
        let args = |id: &'static str| {
            [
                "--leader-elect",
                "--identity",
                id,
                "--lease-name",
                Box::leak(lease_name.clone().into_boxed_str()),
                "--lease-duration",
                "3",
            ]
        };
        let mut first = Controller::start_via(&c.pki, &args("replica-1"), &kubeconfig);
        let leases: Api<Lease> = Api::namespaced(c.admin.clone(), AGENT_NS);
        let holder = || async { leases.get_opt(&lease_name).await.unwrap().and_then(|l| l.spec?.holder_identity) };
        eventually("replica-1 leads", T, || async { holder().await.as_deref() == Some("replica-1") }).await;
        let second = Controller::start_with(&c.env, &c.pki, &args("replica-2"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(holder().await.as_deref(), Some("replica-1"), "the follower waits while the leader renews");
        proxy.cut();
        let cut_at = Instant::now();
        let mut first_exited = None;
        loop {
            if first_exited.is_none() && first.0.try_wait().unwrap().is_some() {
                first_exited = Some(cut_at.elapsed());
            }
            if holder().await.as_deref() == Some("replica-2") {
                // Checked after seeing the new holder: the old leader must
                // be gone already.
                if first_exited.is_none() && first.0.try_wait().unwrap().is_some() {
                    first_exited = Some(cut_at.elapsed());
                }
                let exited = first_exited.unwrap_or_else(|| {
                    panic!("replica-2 leads {:?} after the cut while replica-1 still runs", cut_at.elapsed())
                });
                eprintln!(
                    "partitioned leader exited {exited:?} after the cut; replica-2 led at {:?}",
                    cut_at.elapsed()
                );
                break;
            }
            assert!(cut_at.elapsed() < T, "replica-2 never took over");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(second);
    });
}

/// A container `name` of the test image built by ci/k8s/images.sh running
/// `command` (the image is imported, never pulled).
fn busybox_container(name: &str, command: &[&str]) -> k8s_openapi::api::core::v1::Container {
    serde_json::from_value(serde_json::json!({
        "name": name, "image": "janus.local/busybox:1", "imagePullPolicy": "Never", "command": command
    }))
    .unwrap()
}

/// A pod `name` labelled `app: APP` on the real node, its container `app`
/// running `command`; stopped at once when deleted.
fn busybox_pod(name: &str, node: &str, app: &str, command: &[&str]) -> Pod {
    let mut pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": []}
    }))
    .unwrap();
    pod.spec.as_mut().unwrap().containers = vec![busybox_container("app", command)];
    pod
}

/// `kubectl exec POD -- ARGS` in the fixture's namespace: stdout, or the
/// error text (`Operation not permitted`) when the command fails.
fn kubectl_exec(c: &Cluster, pod: &str, args: &[&str]) -> String {
    kubectl(c, &[&["exec", pod, "--"], args].concat())
}

/// `kubectl -n NS ARGS` as the cluster admin: stdout, or `failed: <stderr>`.
fn kubectl(c: &Cluster, args: &[&str]) -> String {
    let kubectl = Path::new(&c.env["JANUS_K8S_BIN"]).join("kubectl");
    let out = Command::new("timeout")
        .arg("60")
        .arg(&kubectl)
        .env("KUBECONFIG", &c.env["JANUS_K8S_ADMIN_KUBECONFIG"])
        .args(["-n", &c.ns])
        .args(args)
        .output()
        .expect("run kubectl");
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim())
    }
}

/// A real pod on the real node (kubelet, containerd, runc, an overlayfs
/// root from an image built here, a pid namespace): guarded through the API
/// only, checked with `kubectl exec`.
#[test]
#[ignore = "needs root and the real one-node cluster (ci/k8s/cluster.sh)"]
fn real_pod_is_guarded_through_kubectl_exec() {
    let _serial = serial();
    rt().block_on(async {
        let c = Cluster::real_node("e2e-node").await;
        let node = c.env["JANUS_NODE_NAME"].clone();
        let _controller = Controller::start(&c.env, &c.pki);
        // Exits when told (a pid namespace's init ignores kill); kubelet
        // then restarts it (restartPolicy Always, the default).
        let web = busybox_pod("web", &node, "web", &["sh", "-c", "while [ ! -e /tmp/stop ]; do sleep 0.1; done"]);
        c.pods().create(&PostParams::default(), &web).await.unwrap();
        eventually("pod web Running", Duration::from_secs(120), || async {
            c.pods().get("web").await.ok().and_then(|p| p.status?.phase).as_deref() == Some("Running")
        })
        .await;
        assert_eq!(kubectl_exec(&c, "web", &["cat", "/data/secret/key"]), "top secret", "control: unguarded");
        // In-cluster clients reach the API server through the "kubernetes"
        // Service (kube-proxy), as the chart's pods will.
        let svc = kubectl_exec(&c, "web", &["sh", "-c", "nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null && echo connected"]);
        assert_eq!(svc, "connected", "the API server through its Service");
        // /var/run is a symlink to /run in the image: the rule is enforced
        // at its target inside the container.
        c.apply_guard("g", "{app: web}", &["/data/secret", "/var/run/secrets/token"]).await;
        let t = Instant::now();
        eventually("the real container's file denied", T, || async {
            kubectl_exec(&c, "web", &["cat", "/data/secret/key"]).contains("Operation not permitted")
        })
        .await;
        eprintln!("guard created -> first denial seen through kubectl exec: {:?}", t.elapsed());
        assert_eq!(kubectl_exec(&c, "web", &["cat", "/data/open/greeting"]), "hello", "an allowed file reads");
        let token = kubectl_exec(&c, "web", &["cat", "/var/run/secrets/token"]);
        assert!(token.contains("Operation not permitted"), "rule through the image's /var/run symlink: {token}");
        let token = kubectl_exec(&c, "web", &["cat", "/run/secrets/token"]);
        assert!(token.contains("Operation not permitted"), "the symlink's target: {token}");
        eventually("status 1/1 Ready", T, || async { c.status("g").await == (1, 1, "True".into()) }).await;
        // The container dies and kubelet starts a new one, with a new
        // container ID: guarded again. Measured from the new ID appearing in
        // the pod's status to the first denial seen through kubectl exec.
        let container_id = |p: Pod| -> Option<String> {
            p.status?.container_statuses?.into_iter().next()?.container_id
        };
        let first = container_id(c.pods().get("web").await.unwrap()).expect("a container ID");
        let _ = kubectl_exec(&c, "web", &["touch", "/tmp/stop"]);
        let end = Instant::now() + Duration::from_secs(120);
        let second = loop {
            let id = c.pods().get("web").await.ok().and_then(container_id);
            if let Some(id) = id.filter(|id| id != &first) {
                break id;
            }
            assert!(Instant::now() < end, "kubelet did not restart the container with a new ID");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let t = Instant::now();
        let mut unguarded = 0;
        loop {
            let out = kubectl_exec(&c, "web", &["cat", "/data/secret/key"]);
            if out.contains("Operation not permitted") {
                break;
            }
            if out == "top secret" {
                unguarded += 1;
            }
            assert!(t.elapsed() < T, "the restarted container {second} was never guarded: {out}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "container restarted ({first} -> {second}): denied again {:?} after the new ID was seen ({unguarded} reads got through meanwhile)",
            t.elapsed()
        );
        // A native sidecar (an init container that keeps running) and an
        // ephemeral container (`kubectl debug`) are guarded like the app.
        let mut side = busybox_pod("side", &node, "web", &["sleep", "3600"]);
        let mut sidecar = busybox_container("sidecar", &["sleep", "3600"]);
        sidecar.restart_policy = Some("Always".into());
        side.spec.as_mut().unwrap().init_containers = Some(vec![sidecar]);
        c.pods().create(&PostParams::default(), &side).await.unwrap();
        eventually("the sidecar denied", Duration::from_secs(120), || async {
            kubectl(&c, &["exec", "side", "-c", "sidecar", "--", "cat", "/data/secret/key"]).contains("Operation not permitted")
        })
        .await;
        assert!(kubectl(&c, &["exec", "side", "-c", "app", "--", "cat", "/data/secret/key"]).contains("Operation not permitted"));
        let debug = kubectl(
            &c,
            &["debug", "web", "--image=janus.local/busybox:1", "--image-pull-policy=Never", "-c", "dbg", "--", "sleep", "3600"],
        );
        assert!(!debug.starts_with("failed"), "kubectl debug: {debug}");
        eventually("the ephemeral container denied", Duration::from_secs(120), || async {
            kubectl(&c, &["exec", "web", "-c", "dbg", "--", "cat", "/data/secret/key"]).contains("Operation not permitted")
        })
        .await;
        // Deleted: released.
        c.guards().delete("g", &DeleteParams::default()).await.unwrap();
        eventually("guard deleted", T, || async { c.guards().get_opt("g").await.unwrap().is_none() }).await;
        eventually("released", T, || async { kubectl_exec(&c, "web", &["cat", "/data/secret/key"]) == "top secret" })
            .await;
        assert_eq!(kubectl(&c, &["exec", "side", "-c", "sidecar", "--", "cat", "/data/secret/key"]), "top secret");
        c.delete_pod("web").await;
        c.delete_pod("side").await;
    });
}

/// 100 pods created in a burst on the real node, a guard selecting them all
/// already in place: every one is guarded. Prints creation -> enforcement
/// (the agent reports every container guarded) p50/p99, and the agent's
/// memory and CPU with them all guarded.
#[test]
#[ignore = "needs root and the real one-node cluster (ci/k8s/cluster.sh)"]
fn real_node_burst_of_pods_all_guarded() {
    const PODS: usize = 100;
    let _serial = serial();
    rt().block_on(async {
        let c = Cluster::real_node("e2e-burst").await;
        let node = c.env["JANUS_NODE_NAME"].clone();
        let _controller = Controller::start(&c.env, &c.pki);
        c.apply_guard("g", "{app: burst}", &["/data/secret"]).await;
        let mut created = BTreeMap::new();
        for i in 0..PODS {
            let name = format!("b-{i:03}");
            let pod = busybox_pod(&name, &node, "burst", &["sleep", "3600"]);
            c.pods().create(&PostParams::default(), &pod).await.unwrap();
            created.insert(name, Instant::now());
        }
        let mut took: BTreeMap<String, Duration> = BTreeMap::new();
        // When the pod's status first showed its container running (kubelet
        // and the runtime), to tell their part from the agent's.
        let mut running: BTreeMap<String, Instant> = BTreeMap::new();
        let mut after_running: Vec<Duration> = Vec::new();
        let end = Instant::now() + Duration::from_secs(600);
        while took.len() < PODS {
            for p in c.pods().list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
                let up = p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| {
                    cs.iter().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()) && c.container_id.is_some())
                });
                if up {
                    running.entry(p.name_any()).or_insert_with(Instant::now);
                }
            }
            for p in c.guarded_pods(&node).await {
                if let Some(t) = created.get(&p)
                    && !took.contains_key(&p)
                {
                    took.insert(p.clone(), t.elapsed());
                    if let Some(r) = running.get(&p) {
                        after_running.push(r.elapsed());
                    }
                }
            }
            assert!(Instant::now() < end, "only {} of {PODS} pods guarded after 10 minutes", took.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut d: Vec<Duration> = took.values().copied().collect();
        d.sort();
        after_running.sort();
        let pct = |v: &[Duration], p: usize| v.get((v.len() * p / 100).min(v.len().saturating_sub(1))).copied().unwrap_or_default();
        eprintln!(
            "{PODS} pods in a burst: status shows the container running -> every container guarded p50 {:?}, p99 {:?} (over {} pods seen running first)",
            pct(&after_running, 50),
            pct(&after_running, 99),
            after_running.len()
        );
        let agent = janus_procfs::ProcFs::default();
        let pid = c.agents[0].child.as_ref().unwrap().id();
        let rss = agent.status(pid).ok().and_then(|s| s.vm_rss_kib).unwrap_or(0);
        let cpu = agent.stat(pid).map(|s| s.utime + s.stime).unwrap_or(0);
        eprintln!(
            "{PODS} pods in a burst: creation -> every container guarded p50 {:?}, p99 {:?}, max {:?}; agent RSS {} MiB, CPU {} ticks so far",
            d[d.len() / 2],
            d[d.len() * 99 / 100],
            d[d.len() - 1],
            rss / 1024,
            cpu
        );
        assert!(kubectl_exec(&c, "b-000", &["cat", "/data/secret/key"]).contains("Operation not permitted"));
        assert!(kubectl_exec(&c, &format!("b-{:03}", PODS - 1), &["cat", "/data/secret/key"]).contains("Operation not permitted"));
        c.guards().delete("g", &DeleteParams::default()).await.unwrap();
        eventually("guard deleted", T, || async { c.guards().get_opt("g").await.unwrap().is_none() }).await;
        for name in created.keys() {
            c.delete_pod(name).await;
        }
        eventually("burst pods gone", Duration::from_secs(300), || async {
            c.pods().list(&Default::default()).await.map(|l| l.items.is_empty()).unwrap_or(false)
        })
        .await;
    });
}
