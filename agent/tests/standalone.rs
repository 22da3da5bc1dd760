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
        Janusd::start_with(file, extra, &[])
    }

    fn start_with(file: &Path, extra: &[&str], env: &[(&str, &str)]) -> Janusd {
        let mut child = Command::new(JANUSD)
            .args(["standalone", "-f"])
            .arg(file)
            .args(extra)
            .envs(env.iter().copied())
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
    let dir = janus_tests::GuardedDir::new("janus-standalone-");
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

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

fn metrics(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// Sum of a counter's samples in a Prometheus text body (0 when absent).
fn counter(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A temp dir with `secret` (denied) and `files/f0..f9` (allowed, every
/// open audited, so every open is decided in user space), and its guard.
fn audited_dir() -> (janus_tests::GuardedDir, std::path::PathBuf) {
    janus_tests::require_root();
    let dir = janus_tests::GuardedDir::new("janus-standalone-");
    let d = dir.path();
    janus_tests::write(d.join("secret"), "s");
    for i in 0..10 {
        janus_tests::write(d.join(format!("files/f{i}")), "x");
    }
    let file = d.join("guard.yaml");
    std::fs::write(
        &file,
        manifest(&format!(
            "  subjects:\n  - deny: [\"{0}/secret\"]\n  - allow: [\"{0}/files\"]\n    audit: true\n",
            d.display()
        )),
    )
    .unwrap();
    (dir, file)
}

/// `rounds` times: open each allowed file (must succeed) and the denied
/// one (must fail), from short-lived processes, under a 60 s watchdog.
/// Returns the shell's exit code: 0 all as expected, 3 an allowed open
/// failed, 4 a denied open succeeded, 124 something hung.
fn hammer(d: &Path, rounds: u32) -> i32 {
    let script = format!(
        "for i in $(seq {rounds}); do for f in {0}/files/*; do cat \"$f\" >/dev/null || exit 3; done; \
         if cat {0}/secret 2>/dev/null; then exit 4; fi; done",
        d.display()
    );
    Command::new("timeout").args(["60", "sh", "-c", &script]).status().unwrap().code().unwrap_or(-1)
}

/// The ring refuses every fourth submission (fault injection): reads are
/// re-armed later and responses written directly, so every open is still
/// answered, correctly.
#[test]
#[ignore = "needs root"]
fn injected_submission_failures_leave_no_opener_unanswered() {
    let (dir, file) = audited_dir();
    let addr = free_addr();
    let j = Janusd::start_with(
        &file,
        &["--backend", "io-uring", "--metrics-addr", &addr],
        &[("JANUS_FAULT_INJECT", "ring-push-fail:4")],
    );
    assert_eq!(hammer(dir.path(), 30), 0, "an open was answered wrongly or never");
    let body = metrics(&addr);
    assert!(counter(&body, "janus_submit_errors_total") > 10.0, "no submission failed:\n{body}");
    assert!(counter(&body, "janus_groups_failed_total") == 0.0, "a group was given up:\n{body}");
    let mut j = j;
    assert!(j.child.try_wait().unwrap().is_none(), "janusd exited");
}

/// A panic on the enforcement thread aborts janusd: the kernel then lets
/// every waiting opener through instead of leaving them blocked.
#[test]
#[ignore = "needs root"]
fn a_panic_on_the_enforcement_thread_aborts_and_releases_openers() {
    use std::os::unix::process::ExitStatusExt;
    let (dir, file) = audited_dir();
    let mut j = Janusd::start_with(&file, &[], &[("JANUS_FAULT_INJECT", "panic-after-events:20")]);
    // Openers run until janusd dies; none may hang (the watchdog says 124).
    let script =
        format!("for i in $(seq 200); do cat {0}/files/f1 {0}/secret >/dev/null 2>&1; done", dir.path().display());
    let code = Command::new("timeout").args(["60", "sh", "-c", &script]).status().unwrap().code();
    assert_ne!(code, Some(124), "an opener hung after the enforcement thread panicked");
    let status = j.child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "janusd should abort, got {status:?}");
    j.wait_log("aborting so the kernel releases every guarded opener");
    assert_eq!(cat(&dir.path().join("secret")), "ok", "nothing is guarded once janusd is gone");
}

/// Out of file descriptors: janusd raised its soft limit at start; when it
/// still runs out, each event it cannot take an fd for is denied by the
/// kernel, counted, and janusd backs off (up to 100 ms) instead of spinning, and answers
/// again as soon as fds are available.
#[test]
#[ignore = "needs root"]
fn fd_exhaustion_is_counted_and_survived() {
    for backend in ["io-uring", "plain"] {
        fd_exhaustion(backend);
    }
}

fn fd_exhaustion(backend: &str) {
    let (dir, file) = audited_dir();
    let d = dir.path();
    let addr = free_addr();
    let j = Janusd::start_with(&file, &["--metrics-addr", &addr, "--backend", backend], &[]);
    let pid = j.child.id().to_string();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile: Vec<&str> =
        limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().collect();
    assert_eq!(nofile[3], nofile[4], "soft RLIMIT_NOFILE not raised to the hard limit: {limits}");
    assert_eq!(hammer(d, 2), 0);
    // Leave janusd no free fd at all: the limit is on fd numbers, so it is
    // set to the lowest free one.
    let fds: Vec<u32> = janus_procfs::ProcFs::default().fds(j.child.id()).unwrap().collect::<Result<_, _>>().unwrap();
    let open = (0..).find(|n| !fds.contains(n)).unwrap() as usize;
    // Only the soft limit moves (raising a hard limit needs CAP_SYS_RESOURCE).
    let hard = nofile[4].to_string();
    let set = |n: &str| {
        let ok = Command::new("prlimit").args(["--pid", &pid, &format!("--nofile={n}:{hard}")]).status().unwrap();
        assert!(ok.success(), "prlimit failed");
    };
    set(&open.to_string());
    let script = format!("for i in $(seq 20); do cat {}/files/f2 >/dev/null 2>&1 && exit 5; done; exit 0", d.display());
    let code = Command::new("timeout").args(["60", "sh", "-c", &script]).status().unwrap().code();
    assert_eq!(
        code,
        Some(0),
        "with no fd for the event an open must be denied, never hang or pass (5: passed, 124: hung)"
    );
    set(&hard);
    // Backing off at most 100 ms, then answering again.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hammer(d, 2), 0, "{backend}: janusd did not recover");
    let body = metrics(&addr);
    assert!(
        counter(&body, "janus_read_errors_total{errno=\"EMFILE\"}") >= 1.0,
        "{backend}: EMFILE not counted:\n{body}"
    );
}

/// A stuck enforcement thread (fault injection: it stops answering) makes
/// `/healthz` fail within its 10 s limit, so a liveness probe restarts
/// janusd; killing it releases the opener it held.
#[test]
#[ignore = "needs root"]
fn a_stuck_enforcement_thread_fails_healthz() {
    let (dir, file) = audited_dir();
    let addr = free_addr();
    let j = Janusd::start_with(&file, &["--metrics-addr", &addr], &[("JANUS_FAULT_INJECT", "stall-after-events:1")]);
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    assert!(get("/healthz").starts_with("HTTP/1.0 200"), "healthy at start");
    // This opener is never answered while janusd lives.
    let mut opener = Command::new("cat").arg(dir.path().join("files/f0")).stdout(Stdio::null()).spawn().unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        let b = get("/healthz");
        if b.starts_with("HTTP/1.0 503") {
            break b;
        }
        assert!(std::time::Instant::now() < end, "/healthz still healthy with the enforcement thread stuck: {b}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(body.contains("enforcement thread has not run"), "{body}");
    drop(j); // killed: the kernel lets the opener through
    let status = opener.wait().unwrap();
    assert!(status.success(), "the opener should complete once janusd is gone: {status:?}");
}
