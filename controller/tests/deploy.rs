//! Tests of what deploy/ ships: the Helm chart, the plain manifests rendered
//! from it, the alert rules and the Grafana dashboard.
//!
//! Tools come from `ci/deploy/install-tools.sh` (helm built from the Go module
//! proxy into /var/cache/janus-tools/bin, Debian's prometheus + promtool); the
//! API server from `ci/k8s` via `JANUS_K8S_ENV` (ci/test.sh exports it). Each
//! test fails with a message naming what is missing.
//!
//! - `rendered_manifests_are_in_sync_with_the_chart`: re-renders and compares.
//! - `generated_files_are_up_to_date`: dashboard JSON and seccomp profile vs their generators.
//! - `helm_lint_is_clean`: `helm lint --strict` for every TLS mode.
//! - `promtool_checks_the_alert_rules`: the rule file and the PrometheusRule's rules.
//! - `manifests_apply_with_server_side_dry_run`: the rendered manifests against a real kube-apiserver.
//! - `prometheus_evaluates_every_dashboard_and_alert_query`: a real Prometheus scrapes
//!   `janusd standalone` under load, `janusd serve` and `janus-controller`;
//!   every PromQL expression of the dashboard and the alerts is evaluated.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_janus-controller");
const INSTALL: &str = "run ci/deploy/install-tools.sh (ci/test.sh does)";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A tool from PATH or the tools cache, or a panic that says how to get it.
fn tool(name: &str) -> PathBuf {
    let cache = std::env::var("JANUS_TOOLS_DIR").unwrap_or_else(|_| "/var/cache/janus-tools".into());
    let mut dirs: Vec<PathBuf> = vec![Path::new(&cache).join("bin")];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("this test needs `{name}`, which is not installed: {INSTALL}"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

/// The YAML documents of a multi-document string, as JSON values.
fn docs(text: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for d in serde_norway::Deserializer::from_str(text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(d).expect("valid YAML");
        if !v.is_null() {
            out.push(v);
        }
    }
    out
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn render_to(dir: &Path) {
    run(Command::new(root().join("ci/deploy/render.sh")).arg(dir).env("HELM", tool("helm")));
}

#[test]
#[ignore = "needs helm (ci/deploy/install-tools.sh)"]
fn rendered_manifests_are_in_sync_with_the_chart() {
    let tmp = tempfile::tempdir().unwrap();
    render_to(tmp.path());
    let r = root();
    for f in ["janus.yaml", "monitoring.yaml", "cert-manager.yaml"] {
        let want = read(tmp.path().join(f));
        let have = read(r.join("deploy/manifests").join(f));
        assert!(want == have, "deploy/manifests/{f} is out of date with deploy/helm/janus: run ci/deploy/render.sh");
    }
    // Inputs of the chart that live elsewhere in deploy/.
    for (copy, orig) in [
        ("deploy/helm/janus/crds/janusguards.yaml", "deploy/crd.yaml"),
        ("deploy/helm/janus/files/alerts.yaml", "deploy/prometheus/alerts.yaml"),
    ] {
        assert!(read(r.join(copy)) == read(r.join(orig)), "{copy} differs from {orig}: run ci/deploy/render.sh");
    }
    // The RBAC the other tests apply (deploy/rbac.yaml) is what the chart ships.
    let shipped = docs(&read(r.join("deploy/rbac.yaml")));
    let rendered = docs(&read(r.join("deploy/manifests/janus.yaml")));
    for kind in ["ClusterRole", "Role"] {
        assert_eq!(
            find(&shipped, kind, "janus-controller")["rules"],
            find(&rendered, kind, "janus-controller")["rules"],
            "{kind} janus-controller: deploy/rbac.yaml and the chart differ"
        );
    }
    for (kind, name) in [
        ("ServiceAccount", "janusd"),
        ("ServiceAccount", "janus-controller"),
        ("ClusterRoleBinding", "janus-controller"),
        ("RoleBinding", "janus-controller"),
    ] {
        let (a, b) = (find(&shipped, kind, name), find(&rendered, kind, name));
        for field in ["roleRef", "subjects", "automountServiceAccountToken"] {
            assert_eq!(a[field], b[field], "{kind} {name}.{field}: deploy/rbac.yaml and the chart differ");
        }
    }
    // The CRD in the plain manifests is the generated one.
    let crd = docs(&read(r.join("deploy/crd.yaml")));
    assert_eq!(&crd[0], find(&rendered, "CustomResourceDefinition", "janusguards.januscontroller.clustergarage.io"));
    // What the issue asks of the agent, checked on the output.
    let ds = find(&rendered, "DaemonSet", "janusd");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["tolerations"], serde_json::json!([{"operator": "Exists"}]));
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "Localhost");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        c["securityContext"]["capabilities"]["add"],
        serde_json::json!(["SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"])
    );
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    let hostpaths: Vec<_> =
        pod["volumes"].as_array().unwrap().iter().filter_map(|v| v["hostPath"]["path"].as_str()).collect();
    assert_eq!(hostpaths, ["/var/lib/janus", "/var/lib/kubelet/seccomp"]);
    // The one privileged container is the node-setup init container: the
    // agent's own binary, installing the profile the agent's pod names, with
    // only kubelet's seccomp directory of the host.
    let init = &pod["initContainers"][0];
    assert_eq!(pod["initContainers"].as_array().unwrap().len(), 1);
    assert_eq!(init["image"], c["image"]);
    assert_eq!(init["command"], serde_json::json!(["/usr/local/bin/janusd", "node-setup"]));
    assert_eq!(init["securityContext"]["privileged"], true);
    let profile = pod["securityContext"]["seccompProfile"]["localhostProfile"].as_str().unwrap();
    assert!(
        init["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == &format!("--seccomp-profile=/host/kubelet-seccomp/{profile}")),
        "{init}"
    );
    assert_eq!(
        init["volumeMounts"],
        serde_json::json!([{"name": "kubelet-seccomp", "mountPath": "/host/kubelet-seccomp"}])
    );
    let svc = find(&rendered, "Service", "janusd");
    assert!(svc["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == "grpc" && p["port"] == 9440));
    let dep = find(&rendered, "Deployment", "janus-controller");
    assert_eq!(dep["spec"]["replicas"], 2);
    let args = dep["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--leader-elect"), "{args}");
    find(&rendered, "PodDisruptionBudget", "janus-controller");
    find(&rendered, "Namespace", "janus-system");
}

#[test]
#[ignore = "needs python3"]
fn generated_files_are_up_to_date() {
    let py = tool("python3");
    run(Command::new(&py).arg(root().join("deploy/grafana/generate.py")).arg("--check"));
    let profile: serde_json::Value = serde_json::from_str(&read(root().join("deploy/seccomp/janusd.json"))).unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO", "the seccomp profile must not default to allow");
    let allowed: BTreeSet<&str> = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
        .flat_map(|r| r["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()))
        .collect();
    for s in
        ["io_uring_setup", "io_uring_enter", "io_uring_register", "fanotify_init", "fanotify_mark", "name_to_handle_at"]
    {
        assert!(allowed.contains(s), "seccomp profile does not allow {s}");
    }
    for s in ["mount", "bpf", "setns", "unshare", "kexec_load", "init_module"] {
        assert!(!allowed.contains(s), "seccomp profile allows {s}");
    }
}

#[test]
#[ignore = "needs helm (ci/deploy/install-tools.sh)"]
fn helm_lint_is_clean() {
    let helm = tool("helm");
    let chart = root().join("deploy/helm/janus");
    for extra in [
        &[][..],
        &["--set", "tls.mode=existingSecret"],
        &["--set", "tls.mode=insecure"],
        &["--set", "tls.mode=generate"],
        &["--set", "tls.mode=certManager"],
        &["--set", "agent.nodeSetup.enabled=false"],
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "createNamespace=true",
        ],
    ] {
        let out =
            run(Command::new(&helm).args(["lint", "--strict", "--kube-version", "v1.37.2"]).arg(&chart).args(extra));
        assert!(out.contains("0 chart(s) failed"), "helm lint {extra:?}:\n{out}");
        assert!(!out.contains("[WARNING]") && !out.contains("[ERROR]"), "helm lint {extra:?}:\n{out}");
    }
    // A wrong TLS mode is refused with a message.
    let out = Command::new(&helm)
        .args(["template", "--kube-version", "v1.37.2"])
        .arg(&chart)
        .args(["--set", "tls.mode=nope"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("tls.mode must be"));
    // tls.mode=auto (the default): the chart's own CA and certificates
    // without cert-manager, cert-manager's when the cluster serves it.
    let kinds = |extra: &[&str]| -> BTreeSet<String> {
        let out = run(Command::new(&helm).args(["template", "--kube-version", "v1.37.2"]).arg(&chart).args(extra));
        docs(&out)
            .iter()
            .map(|d| format!("{}/{}", d["kind"].as_str().unwrap(), d["metadata"]["name"].as_str().unwrap()))
            .collect()
    };
    let plain = kinds(&[]);
    for s in ["Secret/janus-ca", "Secret/janusd-tls", "Secret/janus-controller-tls"] {
        assert!(plain.contains(s), "{s} not made without cert-manager: {plain:?}");
    }
    assert!(!plain.iter().any(|k| k.starts_with("Certificate/")), "{plain:?}");
    let cm = kinds(&["--api-versions", "cert-manager.io/v1"]);
    assert!(cm.contains("Certificate/janusd") && !cm.contains("Secret/janusd-tls"), "{cm:?}");
}

#[test]
#[ignore = "needs promtool (ci/deploy/install-tools.sh)"]
fn promtool_checks_the_alert_rules() {
    let promtool = tool("promtool");
    let out = run(Command::new(&promtool).args(["check", "rules"]).arg(root().join("deploy/prometheus/alerts.yaml")));
    assert!(out.contains("SUCCESS"), "{out}");
    // The PrometheusRule rendered by the chart carries the same rules.
    let mon = docs(&read(root().join("deploy/manifests/monitoring.yaml")));
    let rule = find(&mon, "PrometheusRule", "janus");
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("rules.yaml");
    std::fs::write(&f, serde_json::to_string(&rule["spec"]).unwrap()).unwrap();
    run(Command::new(&promtool).args(["check", "rules"]).arg(&f));
    let plain: serde_json::Value = serde_norway::from_str(&read(root().join("deploy/prometheus/alerts.yaml"))).unwrap();
    assert_eq!(rule["spec"], plain, "the PrometheusRule and deploy/prometheus/alerts.yaml differ");
}

// ---------------------------------------------------------------- API server

fn k8s_env() -> BTreeMap<String, String> {
    let path = std::env::var("JANUS_K8S_ENV").unwrap_or_else(|_| {
        panic!("this test needs a kube-apiserver: run `ci/k8s/start.sh DIR` and set JANUS_K8S_ENV=DIR/env (ci/test.sh does)")
    });
    read(&path)
        .lines()
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').trim_matches('\'').to_string()))
        .collect()
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: String,
}

impl Kubectl {
    fn new(env: &BTreeMap<String, String>) -> Kubectl {
        let bin = env
            .get("JANUS_K8S_BIN")
            .map(|b| Path::new(b).join("kubectl"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| tool("kubectl"));
        Kubectl { bin, kubeconfig: env["JANUS_K8S_ADMIN_KUBECONFIG"].clone() }
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig").arg(&self.kubeconfig).arg("--request-timeout=30s");
        c
    }
    fn run(&self, args: &[&str]) -> String {
        run(self.cmd().args(args))
    }
    /// `kubectl apply --server-side` of YAML text.
    fn apply(&self, yaml: &str, extra: &[&str]) -> String {
        let mut child = self
            .cmd()
            .args(["apply", "--server-side", "--force-conflicts", "--field-manager=janus-deploy-test", "-f", "-"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl apply {extra:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
    /// The shipped CRD and the janus-system namespace, for real (both are
    /// what the other API-server tests create too).
    fn install_crd(&self) {
        self.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: janus-system\n", &[]);
        self.apply(&read(root().join("deploy/crd.yaml")), &[]);
        self.run(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/janusguards.januscontroller.clustergarage.io",
        ]);
    }
}

/// Kinds whose CRDs (Prometheus Operator, cert-manager) are not installed on
/// the test API server: those documents are skipped, and said so.
const FOREIGN_KINDS: [&str; 4] = ["ServiceMonitor", "PrometheusRule", "Certificate", "Issuer"];

#[test]
#[ignore = "needs a kube-apiserver (JANUS_K8S_ENV) and kubectl"]
fn manifests_apply_with_server_side_dry_run() {
    let env = k8s_env();
    let k = Kubectl::new(&env);
    k.install_crd();
    let tmp = tempfile::tempdir().unwrap();
    let certs = run(Command::new(root().join("deploy/gen-certs.sh")).args(["--out-dir"]).arg(tmp.path().join("pki")));
    let mut applied = BTreeSet::new();
    let mut skipped = Vec::new();
    for (file, text) in [
        ("gen-certs.sh output", certs),
        ("deploy/manifests/janus.yaml", read(root().join("deploy/manifests/janus.yaml"))),
        ("deploy/manifests/monitoring.yaml", read(root().join("deploy/manifests/monitoring.yaml"))),
        ("deploy/manifests/cert-manager.yaml", read(root().join("deploy/manifests/cert-manager.yaml"))),
        ("deploy/prometheus/servicemonitor.yaml", read(root().join("deploy/prometheus/servicemonitor.yaml"))),
    ] {
        let mut keep = Vec::new();
        for d in docs(&text) {
            let kind = d["kind"].as_str().unwrap_or_else(|| panic!("{file}: a document without kind")).to_string();
            let name = d["metadata"]["name"].as_str().unwrap().to_string();
            if FOREIGN_KINDS.contains(&kind.as_str()) {
                skipped.push(format!("{file}: {kind}/{name}"));
            } else {
                applied.insert(format!("{kind}/{name}"));
                keep.push(d);
            }
        }
        if keep.is_empty() {
            continue;
        }
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": keep});
        let out = k.apply(&list.to_string(), &["--dry-run=server"]);
        assert!(out.contains("(server dry run)"), "{file}: {out}");
        eprintln!("{file}: server-side dry run ok:\n{out}");
    }
    eprintln!("skipped (CRDs not installed on the test API server): {skipped:#?}");
    for want in [
        "Namespace/janus-system",
        "DaemonSet/janusd",
        "Deployment/janus-controller",
        "Service/janusd",
        "PodDisruptionBudget/janus-controller",
        "Secret/janusd-tls",
        "Secret/janus-controller-tls",
        "CustomResourceDefinition/janusguards.januscontroller.clustergarage.io",
    ] {
        assert!(applied.contains(want), "{want} was not in the manifests: {applied:?}");
    }
    // The kustomization builds to the same objects.
    let out = k.run(&["kustomize", root().join("deploy/manifests").to_str().unwrap()]);
    assert_eq!(docs(&out).len(), docs(&read(root().join("deploy/manifests/janus.yaml"))).len());
}

/// The README's `kubectl apply -f deploy/crd.yaml -f deploy/rbac.yaml`
/// works on a cluster where the namespace does not exist yet: rbac.yaml
/// brings its Namespace first. Applied for real (a dry run cannot create the
/// namespace the objects after it need), with the namespace renamed to a
/// fresh one and only the namespaced objects, so the cluster-wide roles the
/// other tests use stay as they are.
#[test]
#[ignore = "needs a kube-apiserver (JANUS_K8S_ENV) and kubectl"]
fn crd_and_rbac_apply_on_a_fresh_cluster() {
    let env = k8s_env();
    let k = Kubectl::new(&env);
    let text = read(root().join("deploy/rbac.yaml"));
    let all = docs(&text);
    assert_eq!(all[0]["kind"], "Namespace", "deploy/rbac.yaml must bring its namespace first");
    let fresh = format!("janus-fresh-{}", std::process::id());
    let renamed = text.replace("janus-system", &fresh);
    let keep: Vec<_> = docs(&renamed)
        .into_iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Namespace" | "ServiceAccount" | "Role" | "RoleBinding")))
        .collect();
    assert!(keep.len() >= 4, "{keep:?}");
    let yaml: String = keep.iter().map(|d| format!("---\n{}\n", serde_json::to_string(d).unwrap())).collect();
    // Plain `kubectl apply`, objects in file order, as the README says.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &yaml).unwrap();
    let out =
        k.run(&["apply", "-f", root().join("deploy/crd.yaml").to_str().unwrap(), "-f", file.path().to_str().unwrap()]);
    assert!(out.contains(&format!("namespace/{fresh}")), "{out}");
    assert!(out.contains("serviceaccount/janus-controller"), "{out}");
    k.run(&["delete", "namespace", &fresh, "--wait=false"]);
}

// ---------------------------------------------------------------- Prometheus

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Minimal HTTP/1.0 GET; returns (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn wait_http(port: u16, path: &str, what: &str, timeout: Duration) {
    let end = Instant::now() + timeout;
    while !matches!(http_get(port, path), Ok((200, _))) {
        assert!(Instant::now() < end, "{what} did not answer 200 on {path} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process killed (and reaped) on drop; its stderr is forwarded with a prefix.
struct Proc(Child);

impl Proc {
    fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let err = child.stderr.take().unwrap();
        let name = name.to_string();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                // The unreachable agent is on purpose: its warnings are noise here.
                if !l.contains("level=debug") && !l.contains("agent unreachable") {
                    eprintln!("{name}: {l}");
                }
            }
        });
        Proc(child)
    }
    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query(port: u16, expr: &str) -> Result<Vec<serde_json::Value>, String> {
    let (status, body) =
        http_get(port, &format!("/api/v1/query?query={}", urlencode(expr))).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("HTTP {status}: {}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Metric names referenced by a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\b(janus_[a-z0-9_]+|up)\b").unwrap();
    // Label values (inside quotes) are not metric names.
    let unquoted = regex::Regex::new(r#""[^"]*""#).unwrap().replace_all(expr, "\"\"");
    re.find_iter(&unquoted).map(|m| m.as_str().to_string()).collect()
}

/// The name as written in the source (histograms without their series suffix).
fn source_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

/// Metrics recorded only when something fails: with a healthy run they may
/// have no series (the test does provoke push errors, with an unreachable
/// agent). Their expressions must still evaluate, and their names must be the
/// ones the code records (checked against the source).
const ERROR_ONLY: [&str; 3] =
    ["janus_errors_total", "janus_controller_drift_total", "janus_controller_reconcile_errors_total"];

/// True when an empty result is acceptable for this expression.
fn may_be_empty(expr: &str) -> bool {
    expr.contains(r#"code!="OK""#) || metric_names(expr).iter().all(|m| ERROR_ONLY.contains(&source_name(m)))
}

fn dashboard_targets() -> Vec<(String, String)> {
    let dash: serde_json::Value = serde_json::from_str(&read(root().join("deploy/grafana/janus.json"))).unwrap();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("{} / {}", p["title"].as_str().unwrap(), t["legendFormat"]),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(out.len() > 20, "dashboard has only {} queries", out.len());
    out
}

fn alert_exprs() -> Vec<(String, String)> {
    let rules: serde_json::Value = serde_norway::from_str(&read(root().join("deploy/prometheus/alerts.yaml"))).unwrap();
    let mut out = Vec::new();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            out.push((r["alert"].as_str().unwrap().to_string(), r["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// Every Rust source text of the binaries, to check metric names against.
fn sources() -> String {
    let mut all = String::new();
    for dir in ["engine/src", "agent/src", "controller/src", "common/src"] {
        let mut stack = vec![root().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    all.push_str(&read(&p));
                }
            }
        }
    }
    all
}

/// With `$__rate_interval` as Grafana would set it for a 1 s scrape interval.
fn promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "15s")
}

#[test]
#[ignore = "needs root, prometheus (ci/deploy/install-tools.sh) and a kube-apiserver (JANUS_K8S_ENV)"]
fn prometheus_evaluates_every_dashboard_and_alert_query() {
    janus_tests::require_root();
    let prometheus = tool("prometheus");
    let env = k8s_env();
    let k = Kubectl::new(&env);
    let tmp = tempfile::Builder::new().prefix("janus-deploy-").tempdir().unwrap();
    let dir = tmp.path();
    let janusd = janus_tests::target_bin("janusd");
    let suffix = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() ^ std::process::id()
    );

    // 1. janusd standalone on a guarded temp dir, with a separate process opening files.
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("secret")).unwrap();
    std::fs::create_dir_all(data.join("public")).unwrap();
    for i in 0..20 {
        std::fs::write(data.join(format!("secret/s{i}")), "x").unwrap();
        std::fs::write(data.join(format!("public/p{i}")), "x").unwrap();
    }
    let guard = dir.join("guard.yaml");
    let d = data.display();
    std::fs::write(
        &guard,
        format!(
            "apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata: {{name: deploy-test, namespace: default}}\n\
             spec:\n  selector: {{matchLabels: {{app: x}}}}\n  subjects:\n  - deny: [{d}/secret]\n    allow: [{d}/public]\n    events: [all]\n    audit: true\n"
        ),
    )
    .unwrap();
    let standalone_port = free_port();
    let mut standalone = Proc::spawn(
        "janusd standalone",
        Command::new(&janusd)
            .args(["standalone", "--max-fanotify-groups", "0", "-f"])
            .arg(&guard)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{standalone_port}")),
    );
    wait_http(standalone_port, "/metrics", "janusd standalone", Duration::from_secs(30));
    let load = Proc::spawn(
        "load",
        Command::new("sh").arg("-c").arg(format!(
            "while :; do for i in 0 1 2 3 4 5 6 7 8 9; do cat {d}/public/p$i {d}/secret/s$i >/dev/null 2>&1; ls {d}/secret >/dev/null 2>&1; done; sleep 0.05; done"
        )),
    );

    // 2. janusd serve and janus-controller with certificates from deploy/gen-certs.sh.
    let pki = dir.join("pki");
    run(Command::new(root().join("deploy/gen-certs.sh")).arg("--out-dir").arg(&pki));
    let p = |f: &str| pki.join(f).to_str().unwrap().to_string();
    let node = format!("deploy-{suffix}");
    let (grpc_port, agent_http) = (free_port(), free_port());
    let mut agent = Proc::spawn(
        "janusd serve",
        Command::new(&janusd)
            .args(["serve", "--node-name", &node, "--max-fanotify-groups", "0"])
            .arg(format!("--listen=127.0.0.1:{grpc_port}"))
            .arg(format!("--http-addr=127.0.0.1:{agent_http}"))
            .arg("--state-file")
            .arg(dir.join("state.json"))
            .args(["--tls-cert", &p("janusd.crt"), "--tls-key", &p("janusd.key"), "--tls-ca", &p("ca.crt")]),
    );
    wait_http(agent_http, "/readyz", "janusd serve", Duration::from_secs(30));

    k.install_crd();
    let rbac = read(root().join("deploy/rbac.yaml"));
    k.apply(&rbac, &[]);
    let ns = format!("janus-deploy-{suffix}");
    let dead = format!("deploy-dead-{suffix}");
    let bindings = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: janus-controller-deploy-test}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: janus-controller}}\n\
         subjects: [{{kind: User, apiGroup: rbac.authorization.k8s.io, name: janus-controller}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: janus-controller-deploy-test, namespace: janus-system}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: janus-controller}}\n\
         subjects: [{{kind: User, apiGroup: rbac.authorization.k8s.io, name: janus-controller}}]\n"
    );
    k.apply(&bindings, &[]);
    // The agent, and a node whose agent is unreachable (to record push errors).
    let slice = |n: &str, port: u16| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: janusd-{n}, namespace: janus-system, labels: {{kubernetes.io/service-name: janusd}}}}\n\
             addressType: FQDN\nports: [{{name: grpc, port: {port}, protocol: TCP}}]\n\
             endpoints: [{{addresses: [{n}.localhost], nodeName: {n}, conditions: {{ready: true}}}}]\n"
        )
    };
    k.apply(&format!("{}---\n{}", slice(&node, grpc_port), slice(&dead, free_port())), &[]);
    k.apply(
        &format!(
            "apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata: {{name: web, namespace: {ns}}}\n\
             spec:\n  selector: {{matchLabels: {{app: web}}}}\n  subjects:\n  - deny: [/etc/shadow]\n"
        ),
        &[],
    );
    for (pod, n) in [("web-1", &node), ("web-2", &dead)] {
        k.apply(
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{app: web}}}}\n\
                 spec: {{nodeName: {n}, containers: [{{name: app, image: janus-test}}]}}\n"
            ),
            &[],
        );
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = serde_json::json!({"status": {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": [{"name": "app", "image": "janus-test", "imageID": "", "ready": true, "restartCount": 0,
                                   "containerID": format!("containerd://{:064x}", 0xdead_u64), "state": {"running": {"startedAt": now}}}]
        }});
        k.run(&["-n", &ns, "patch", "pod", pod, "--subresource=status", "--type=merge", "-p", &status.to_string()]);
    }
    let controller_http = free_port();
    let mut controller = Proc::spawn(
        "janus-controller",
        Command::new(CONTROLLER)
            .env("KUBECONFIG", &env["JANUS_K8S_CONTROLLER_KUBECONFIG"])
            .env("RUST_LOG", "info,kube=warn")
            .args([
                "--agent-namespace",
                "janus-system",
                "--drift-interval",
                "1",
                "--resync",
                "2",
                "--push-timeout",
                "2",
            ])
            .args([
                "--leader-elect",
                "--lease-name",
                &format!("janus-deploy-test-{suffix}"),
                "--lease-namespace",
                "janus-system",
            ])
            .args(["--identity", "deploy-test"])
            .arg(format!("--http-addr=127.0.0.1:{controller_http}"))
            .args([
                "--tls-cert",
                &p("janus-controller.crt"),
                "--tls-key",
                &p("janus-controller.key"),
                "--tls-ca",
                &p("ca.crt"),
            ]),
    );
    wait_http(controller_http, "/readyz", "janus-controller", Duration::from_secs(30));
    // Dropped before the controller (declared after it), also on failure.
    let _cleanup = Cleanup {
        k: &k,
        ns: ns.clone(),
        slices: vec![format!("janusd-{node}"), format!("janusd-{dead}")],
        lease: format!("janus-deploy-test-{suffix}"),
    };

    // 3. Prometheus, scraping all three every second and evaluating the alert rules.
    let prom_port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{}]\n\
             scrape_configs:\n\
             - job_name: janusd\n  static_configs: [{{targets: ['127.0.0.1:{standalone_port}', '127.0.0.1:{agent_http}']}}]\n\
             - job_name: janus-controller-metrics\n  static_configs: [{{targets: ['127.0.0.1:{controller_http}']}}]\n",
            root().join("deploy/prometheus/alerts.yaml").display()
        ),
    )
    .unwrap();
    let started = std::time::SystemTime::now();
    let _prom = Proc::spawn(
        "prometheus",
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=warn"),
    );
    wait_http(prom_port, "/-/ready", "prometheus", Duration::from_secs(60));

    // 4. Every query: dashboard ones must return data, alert ones must
    // evaluate; every metric they name must be scraped or, for metrics
    // recorded only on failures, be a name the code records.
    let dashboard = dashboard_targets();
    let alerts = alert_exprs();
    let src = sources();
    for (what, expr) in dashboard.iter().chain(&alerts) {
        for m in metric_names(expr) {
            if m != "up" {
                assert!(
                    src.contains(&format!("\"{}\"", source_name(&m))),
                    "{what}: metric {m} is not recorded anywhere in the code ({expr})"
                );
            }
        }
    }
    let end = Instant::now() + Duration::from_secs(120);
    let mut missing: Vec<String>;
    loop {
        assert!(standalone.alive() && agent.alive() && controller.alive(), "a janus process exited during the test");
        let names: BTreeSet<String> = match http_get(prom_port, "/api/v1/label/__name__/values") {
            Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect(),
            _ => BTreeSet::new(),
        };
        missing = Vec::new();
        for (what, expr) in &dashboard {
            match query(prom_port, &promql(expr)) {
                Err(e) => panic!("dashboard {what}: {expr}: {e}"),
                Ok(r) if r.is_empty() && !may_be_empty(expr) => {
                    missing.push(format!("dashboard {what}: no data: {expr}"))
                }
                Ok(_) => {}
            }
        }
        for (what, expr) in &alerts {
            if let Err(e) = query(prom_port, expr) {
                panic!("alert {what}: {expr}: {e}");
            }
            for m in metric_names(expr) {
                if !names.contains(&m) && !ERROR_ONLY.contains(&m.as_str()) {
                    missing.push(format!("alert {what}: metric {m} not scraped"));
                }
            }
        }
        if missing.is_empty() || Instant::now() > end {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(missing.is_empty(), "after 120 s of scraping:\n{}", missing.join("\n"));
    // Prometheus loaded and evaluated every rule without error.
    let (_, body) = http_get(prom_port, "/api/v1/rules").unwrap();
    let rules: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut n = 0;
    for g in rules["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "rule {}: {}", r["name"], r["lastError"]);
            n += 1;
        }
    }
    assert_eq!(n, alerts.len(), "Prometheus loaded {n} rules of {}", alerts.len());
    // The denials the load caused were counted.
    let denies = query(prom_port, r#"sum(janus_events_total{decision="deny"})"#).unwrap();
    let denies: f64 = denies[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(denies > 0.0, "no denial counted");

    // Let the load run a little longer so the kept series show something
    // (JANUS_DEPLOY_SOAK_SECS, default 30 s after Prometheus started).
    let soak = std::env::var("JANUS_DEPLOY_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    while started.elapsed().unwrap_or_default() < Duration::from_secs(soak) {
        assert!(standalone.alive() && agent.alive() && controller.alive(), "a janus process exited during the test");
        std::thread::sleep(Duration::from_millis(500));
    }

    // 5. Keep the dashboard's series for the PNG (ci/deploy/plot-dashboard.py).
    let t0 = started.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let t1 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut series = Vec::new();
    for (what, expr) in &dashboard {
        let path = format!("/api/v1/query_range?query={}&start={t0}&end={t1}&step=1", urlencode(&promql(expr)));
        let (_, body) = http_get(prom_port, &path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        series.push(serde_json::json!({"target": what, "expr": expr, "result": v["data"]["result"]}));
    }
    let out = root().join("target/deploy-test");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("prometheus-data.json"), serde_json::to_string(&series).unwrap()).unwrap();
    eprintln!("dashboard series written to {}", out.join("prometheus-data.json").display());

    drop(load);
    // The rest is dropped in reverse order: the Cleanup (while the controller
    // and the agent still run), then the controller, the agent, janusd standalone.
}

/// Removes what the Prometheus test created on the API server: the guard
/// first, while the controller still runs (it removes its finalizer), then
/// pods, EndpointSlices, the Lease and the test's role bindings.
struct Cleanup<'a> {
    k: &'a Kubectl,
    ns: String,
    slices: Vec<String>,
    lease: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let k = |args: &[&str]| {
            let _ = self.k.cmd().args(args).stdout(Stdio::null()).status();
        };
        // The node whose agent is unreachable goes first: the controller
        // releases a guard only once every agent that had it confirmed.
        k(&["-n", &self.ns, "delete", "pod", "web-2", "--grace-period=0", "--force", "--wait=false"]);
        let mut args = vec!["-n", "janus-system", "delete", "endpointslice", "--ignore-not-found"];
        args.extend(self.slices.iter().skip(1).map(String::as_str));
        k(&args);
        k(&["-n", &self.ns, "delete", "janusguard", "web", "--wait=true", "--timeout=30s"]);
        k(&["-n", &self.ns, "delete", "pod", "web-1", "--grace-period=0", "--force", "--wait=false"]);
        k(&["-n", "janus-system", "delete", "endpointslice", &self.slices[0], "--ignore-not-found"]);
        k(&["-n", "janus-system", "delete", "lease", &self.lease, "--ignore-not-found"]);
        k(&["delete", "clusterrolebinding", "janus-controller-deploy-test", "--ignore-not-found"]);
        k(&["-n", "janus-system", "delete", "rolebinding", "janus-controller-deploy-test", "--ignore-not-found"]);
    }
}
