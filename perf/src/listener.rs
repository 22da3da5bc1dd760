//! The listener subprocess (`janus-perf __listener`): starts one listener,
//! says `ready <json>` on stdout once its marks are in place, and when its
//! stdin closes says `done <json>` with the CPU time it used and the events
//! it answered, then stops. Openers must run in another process: the engine
//! always allows its own process's accesses.
//!
//! A watchdog ends the process when its budget runs out, so a stuck listener
//! never outlives a run (the kernel allows pending events when the group
//! closes).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use janus_api::GuardManifest;
use janus_engine::policy::Policy;
use janus_engine::{Backend, Engine, EngineConfig, GuardTarget, TargetInfo};
use serde::{Deserialize, Serialize};

use crate::counting::{self, CountSnapshot};
use crate::procfs;

/// Which listener to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerKind {
    /// `janus_engine::reference::run`: blocking read, one write per event,
    /// allow all.
    Reference,
    /// The engine with the guards of a manifest file.
    Engine,
}

impl ListenerKind {
    /// Command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Reference => "reference",
            ListenerKind::Engine => "engine",
        }
    }
}

/// What the listener subprocess is asked to do.
#[derive(Debug, Clone)]
pub struct ListenerOpts {
    /// Which listener.
    pub kind: ListenerKind,
    /// Directory the reference listener marks.
    pub dir: Option<PathBuf>,
    /// Manifest file of the engine's guards.
    pub guard: Option<PathBuf>,
    /// Root the engine's guards apply under.
    pub root: Option<PathBuf>,
    /// Engine backend; `None`: the engine's choice.
    pub backend: Option<Backend>,
    /// Hard limit on the subprocess's life.
    pub budget: Duration,
}

/// First line of the subprocess: marks are in place.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ready {
    /// `reference`, or the engine's backend (`io_uring`, `plain`).
    pub backend: String,
    /// Permission marks placed.
    pub marks: usize,
    /// Time to place the marks (engine: compile + apply), ms.
    pub setup_ms: f64,
}

/// Last line of the subprocess: what it used while the openers ran.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Done {
    /// CPU time of the listener process between `ready` and stdin EOF, ns.
    pub cpu_ns: u64,
    /// Permission events answered.
    pub events: u64,
    /// Engine counters (engine only).
    pub counts: Option<CountSnapshot>,
    /// Resident memory at the end, KiB.
    pub rss_kib: u64,
}

/// Runs the subprocess side. Returns when stdin reaches EOF.
pub fn serve(opts: ListenerOpts) -> anyhow::Result<()> {
    let budget = opts.budget;
    std::thread::Builder::new().name("watchdog".into()).spawn(move || {
        std::thread::sleep(budget);
        eprintln!("janus-perf listener: budget of {budget:?} exceeded, exiting");
        std::process::exit(3);
    })?;
    match opts.kind {
        ListenerKind::Reference => serve_reference(&opts),
        ListenerKind::Engine => serve_engine(&opts),
    }
}

fn say(tag: &str, value: &impl Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{tag} {}", serde_json::to_string(value)?)?;
    out.flush()?;
    Ok(())
}

fn wait_for_eof() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

fn serve_reference(opts: &ListenerOpts) -> anyhow::Result<()> {
    let dir = opts.dir.clone().context("--dir is required for reference")?;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let thread = std::thread::Builder::new().name("reference".into()).spawn({
        let stop = stop.clone();
        move || janus_engine::reference::run(&dir, stop)
    })?;
    // `reference::run` marks and then loops: ready once the mark shows.
    while !procfs::fanotify_has_marks() {
        if thread.is_finished() {
            let r = thread.join().map_err(|_| anyhow::anyhow!("reference panicked"))?;
            bail!("reference listener ended before marking: {r:?}");
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("reference listener placed no mark within 10 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ready = Ready { backend: "reference".into(), marks: 1, setup_ms: t0.elapsed().as_secs_f64() * 1e3 };
    let cpu0 = procfs::CpuSample::now()?;
    say("ready", &ready)?;
    wait_for_eof();
    let cpu_ns = procfs::CpuSample::now()?.since(&cpu0);
    stop.store(true, Ordering::Relaxed);
    let events = thread.join().map_err(|_| anyhow::anyhow!("reference panicked"))?.context("reference listener")?;
    say("done", &Done { cpu_ns, events, counts: None, rss_kib: procfs::vm_rss_kib()? })
}

fn serve_engine(opts: &ListenerOpts) -> anyhow::Result<()> {
    let guard = opts.guard.as_ref().context("--guard is required for engine")?;
    let root = opts.root.clone().context("--root is required for engine")?;
    let counts = counting::install()?;
    let t0 = Instant::now();
    let engine = Engine::start(EngineConfig {
        backend: opts.backend,
        // Audit lines are rendered as in a deployment, then discarded.
        audit_out: Some(Box::new(std::io::sink())),
        ..Default::default()
    })
    .context("start engine")?;
    let yaml = std::fs::read_to_string(guard).with_context(|| format!("read {guard:?}"))?;
    let mut ready = Ready { backend: engine.backend().as_str().into(), ..Default::default() };
    for m in GuardManifest::parse_all(&yaml)? {
        let policy = Arc::new(Policy::compile(&m.spec)?);
        let name = m.qualified_name();
        let report = engine
            .apply(GuardTarget {
                id: name.clone(),
                info: TargetInfo {
                    guard: name,
                    namespace: m.metadata.namespace.clone().unwrap_or_default(),
                    pod: "perf".into(),
                    container: "bench".into(),
                    node: "perf-node".into(),
                },
                policy,
                root: root.clone(),
                owner_pids: Vec::new(),
            })
            .context("apply guard")?;
        ready.marks += report.marks;
    }
    ready.setup_ms = t0.elapsed().as_secs_f64() * 1e3;
    let cpu0 = procfs::CpuSample::now()?;
    let before = counts.snapshot();
    say("ready", &ready)?;
    wait_for_eof();
    let cpu_ns = procfs::CpuSample::now()?.since(&cpu0);
    let mut after = counts.snapshot();
    after.allowed -= before.allowed;
    after.denied -= before.denied;
    after.would_deny -= before.would_deny;
    let rss_kib = procfs::vm_rss_kib()?;
    engine.stop();
    say("done", &Done { cpu_ns, events: after.events(), counts: Some(after), rss_kib })
}
