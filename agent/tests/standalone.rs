//! `janusd standalone` as a user runs it: a real process, real signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const JANUSD: &str = env!("CARGO_BIN_EXE_janusd");

fn manifest(body: &str) -> String {
    format!(
        "apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata:\n  name: t\nspec:\n{body}"
    )
}

/// Runs `janusd standalone -f` on `yaml` and expects a start-up failure.
fn start_error(yaml: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guard.yaml");
    if let Some(y) = yaml {
        std::fs::write(&file, y).unwrap();
    }
    let out = Command::new(JANUSD).args(["standalone", "-f"]).arg(&file).output().unwrap();
    assert!(!out.status.success(), "janusd accepted bad input: {yaml:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_at_start_names_the_field() {
    let unknown = start_error(Some(&manifest("  subjects:\n  - deny: [/x]\n    colour: red\n")));
    assert!(unknown.contains("spec.subjects[0].colour") && unknown.contains("unknown field"), "{unknown}");
    let relative = start_error(Some(&manifest("  subjects:\n  - deny: [/ok, etc/x]\n")));
    assert!(relative.contains("spec.subjects[0].deny[1]") && relative.contains("absolute"), "{relative}");
    let pattern = start_error(Some(&manifest("  subjects:\n  - allow: [/a/b**]\n")));
    assert!(pattern.contains("spec.subjects[0].allow[0]") && pattern.contains("'**'"), "{pattern}");
    let event = start_error(Some(&manifest("  subjects:\n  - deny: [/x]\n    events: [open, write]\n")));
    assert!(event.contains("spec.subjects[0].events[1]") && event.contains("unknown variant `write`"), "{event}");
    let missing = start_error(None);
    assert!(missing.contains("cannot read"), "{missing}");
    let dup = start_error(Some(&format!(
        "{}---\n{}",
        manifest("  subjects:\n  - deny: [/x]\n"),
        manifest("  subjects:\n  - deny: [/y]\n")
    )));
    assert!(dup.contains("appears twice"), "{dup}");
}

struct Janusd {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

impl Janusd {
    fn start(file: &Path, extra: &[&str]) -> Janusd {
        let mut child = Command::new(JANUSD)
            .args(["standalone", "-f"])
            .arg(file)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let j = Janusd { child, stdout, stderr };
        j.wait_log("janusd standalone ready");
        j
    }

    fn wait_log(&self, needle: &str) -> String {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("janusd never logged {needle:?}");
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }
}

impl Drop for Janusd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens `path` with `cat` (a process other than janusd): "ok" or "EPERM".
fn cat(path: &Path) -> &'static str {
    let out = Command::new("timeout").args(["10", "cat"]).arg(path).output().unwrap();
    if out.status.success() {
        "ok"
    } else if String::from_utf8_lossy(&out.stderr).contains("Operation not permitted") {
        "EPERM"
    } else {
        panic!("cat {}: {:?} {}", path.display(), out.status, String::from_utf8_lossy(&out.stderr))
    }
}

#[test]
#[ignore = "needs root"]
fn enforces_reloads_and_stops_cleanly() {
    janus_tests::require_root();
    let dir = tempfile::Builder::new().prefix("janus-standalone-").tempdir().unwrap();
    let d = dir.path();
    janus_tests::write(d.join("secret"), "s");
    janus_tests::write(d.join("other"), "o");
    let file = d.join("guard.yaml");
    let guard = |deny: &str| manifest(&format!("  subjects:\n  - deny: [\"{}/{deny}\"]\n", d.display()));
    std::fs::write(&file, guard("secret")).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let j = Janusd::start(&file, &["--metrics-addr", &addr]);
    assert_eq!(cat(&d.join("secret")), "EPERM");
    assert_eq!(cat(&d.join("other")), "ok");
    let line = j.stdout.recv_timeout(Duration::from_secs(5)).expect("an audit line on stdout");
    let rec: serde_json::Value = serde_json::from_str(&line).expect("JSON audit line");
    assert_eq!(rec["decision"], "deny");
    assert_eq!(rec["path"], d.join("secret").display().to_string());
    assert_eq!(rec["process"], "cat");

    // Metrics: counters and real histogram buckets.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.contains("janus_events_total{"), "{body}");
    assert!(body.contains(r#"decision="deny""#), "{body}");
    assert!(body.contains("janus_decision_seconds_bucket"), "no histogram buckets:\n{body}");

    // A bad reload keeps the previous policy.
    std::fs::write(&file, manifest("  subjects:\n  - deny: [relative/path]\n")).unwrap();
    j.signal("-HUP");
    let l = j.wait_log("reload failed");
    assert!(l.contains("spec.subjects[0].deny[0]"), "{l}");
    assert_eq!(cat(&d.join("secret")), "EPERM", "previous policy must stay");
    // A good reload swaps it.
    std::fs::write(&file, guard("other")).unwrap();
    j.signal("-HUP");
    j.wait_log("reloaded");
    assert_eq!(cat(&d.join("other")), "EPERM");
    assert_eq!(cat(&d.join("secret")), "ok");

    // SIGTERM: exit 0, nothing guarded any more.
    j.signal("-TERM");
    let mut j = j;
    let status = j.child.wait().unwrap();
    assert!(status.success(), "janusd exit status {status:?}");
    assert_eq!(cat(&d.join("other")), "ok");
}
