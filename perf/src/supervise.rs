//! The parent side of a listener subprocess: spawn it (optionally pinned
//! with `taskset`), wait for `ready`, and on [`Listener::finish`] close its
//! stdin and read `done`. A watchdog thread kills the subprocess when the
//! run's budget is exceeded, and dropping a [`Listener`] kills it too, so a
//! failing run never leaves openers blocked on a listener.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;

use crate::cli::BackendArg;
use crate::listener::{Done, ListenerKind, Ready};

/// Longest wait for `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for `done` after stdin closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How to start a listener subprocess.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    /// Which listener.
    pub kind: ListenerKind,
    /// Directory for the reference listener.
    pub dir: Option<PathBuf>,
    /// Guard manifest for the engine.
    pub guard: Option<PathBuf>,
    /// Root for the engine's guards.
    pub root: Option<PathBuf>,
    /// Pin the subprocess (all its threads) to this CPU.
    pub pin: Option<usize>,
    /// Engine backend.
    pub backend: BackendArg,
    /// The whole run may take at most this long; then the subprocess is killed.
    pub budget: Duration,
    /// Where the subprocess's stderr goes (read back on failure).
    pub stderr: PathBuf,
}

/// A running listener subprocess.
#[derive(Debug)]
pub struct Listener {
    child: Arc<Mutex<Child>>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    disarm: Option<Sender<()>>,
    killed: Arc<AtomicBool>,
    stderr: PathBuf,
    /// What the subprocess reported when ready.
    pub ready: Ready,
}

impl Listener {
    /// Starts the subprocess and waits until its marks are in place.
    pub fn start(spec: &ListenerSpec) -> anyhow::Result<Listener> {
        let exe = std::env::current_exe().context("current_exe")?;
        let mut cmd = match spec.pin {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(["__listener", "--kind", spec.kind.as_str()]);
        cmd.args(["--backend", spec.backend.as_str()]);
        // The subprocess's own watchdog fires a little after ours.
        cmd.args(["--budget-secs", &(spec.budget.as_secs() + 5).to_string()]);
        for (flag, v) in [("--dir", &spec.dir), ("--guard", &spec.guard), ("--root", &spec.root)] {
            if let Some(v) = v {
                cmd.arg(flag).arg(v);
            }
        }
        let err = std::fs::File::create(&spec.stderr).with_context(|| format!("create {}", spec.stderr.display()))?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::from(err));
        let mut child = cmd.spawn().context("spawn listener subprocess")?;
        let stdout = child.stdout.take().context("listener stdout")?;
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new().name("listener-out".into()).spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })?;
        let child = Arc::new(Mutex::new(child));
        let killed = Arc::new(AtomicBool::new(false));
        let (disarm, armed) = mpsc::channel::<()>();
        let budget = spec.budget;
        std::thread::Builder::new().name("run-watchdog".into()).spawn({
            let child = child.clone();
            let killed = killed.clone();
            move || {
                if let Err(RecvTimeoutError::Timeout) = armed.recv_timeout(budget) {
                    killed.store(true, Ordering::SeqCst);
                    let _ = lock(&child).kill();
                }
            }
        })?;
        let mut l = Listener {
            child,
            stdin,
            lines,
            disarm: Some(disarm),
            killed,
            stderr: spec.stderr.clone(),
            ready: Ready::default(),
        };
        l.ready = l.expect("ready", READY_TIMEOUT)?;
        Ok(l)
    }

    /// Reads the next line, which must be `tag <json>`.
    fn expect<T: DeserializeOwned>(&self, tag: &str, timeout: Duration) -> anyhow::Result<T> {
        let line = match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                bail!("listener sent no `{tag}` within {timeout:?}{}", self.tail())
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.reap(Duration::from_secs(2));
                bail!("listener exited before `{tag}`{}{}", self.exit_note(), self.tail())
            }
        };
        let json = line
            .strip_prefix(tag)
            .and_then(|r| r.strip_prefix(' '))
            .with_context(|| format!("listener said {line:?}, expected `{tag} …`"))?;
        serde_json::from_str(json).with_context(|| format!("parse listener line {line:?}"))
    }

    /// Closes the subprocess's stdin, reads its `done` line and reaps it.
    pub fn finish(mut self) -> anyhow::Result<Done> {
        drop(self.stdin.take());
        let done = self.expect::<Done>("done", STOP_TIMEOUT);
        self.reap(Duration::from_secs(5));
        if self.killed.load(Ordering::SeqCst) {
            bail!("listener exceeded its run budget and was killed{}", self.tail());
        }
        done
    }

    /// Waits up to `grace` for the subprocess to exit, then kills it.
    fn reap(&self, grace: Duration) {
        let end = Instant::now() + grace;
        loop {
            let mut c = lock(&self.child);
            if matches!(c.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            if Instant::now() >= end {
                let _ = c.kill();
                let _ = c.wait();
                return;
            }
            drop(c);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn exit_note(&self) -> String {
        match lock(&self.child).try_wait() {
            Ok(Some(s)) => format!(" ({s})"),
            _ => String::new(),
        }
    }

    /// The end of the subprocess's stderr, for error messages.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let text = text.trim();
        if text.is_empty() {
            return String::new();
        }
        let start = text.len().saturating_sub(2000);
        let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        format!("; its stderr:\n{}", &text[start..])
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        drop(self.disarm.take());
        drop(self.stdin.take());
        let mut c = lock(&self.child);
        if !matches!(c.try_wait(), Ok(Some(_))) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn lock(child: &Mutex<Child>) -> std::sync::MutexGuard<'_, Child> {
    child.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `cmd` to completion and returns its stdout; kills it after
/// `timeout`. Fails with its stderr if it exits unsuccessfully.
pub fn output_within(mut cmd: Command, timeout: Duration) -> anyhow::Result<String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
    let read = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = read(child.stdout.take().map(|o| Box::new(o) as _));
    let err = read(child.stderr.take().map(|e| Box::new(e) as _));
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {timeout:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        bail!("{cmd:?} failed ({status}): {}", err.trim());
    }
    Ok(out)
}
