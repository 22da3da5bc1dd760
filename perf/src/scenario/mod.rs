//! The scenarios, and the one measured run they share: start a listener
//! subprocess for a configuration, drive openers, stop the listener.

pub mod churn;
pub mod first_open;
pub mod scale;
pub mod throughput;
pub mod unguarded;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use crate::fixture::Fixture;
use crate::listener::{Done, ListenerKind, Ready};
use crate::openers::{self, Load, ProbeCount};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::supervise::{Listener, ListenerSpec};

/// The CPU pinned runs use.
pub const PIN_CPU: usize = 0;

/// A listener configuration compared in a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Config {
    /// No listener.
    None,
    /// The reference listener: blocking read, one write per event, allow all.
    Reference,
    /// The engine on the realistic guard; the bench files are allowed
    /// without audit, so the engine caches them in the kernel.
    Engine,
    /// The same guard with the bench files in an `audit: true` subject:
    /// every open is decided in user space and writes an audit record.
    EngineUncached,
    /// The `engine` guard on bench files that have a second name (hard
    /// link), which the engine never caches in the kernel: every open is
    /// decided in user space, without audit.
    EngineUncachedNoAudit,
}

impl Config {
    /// Name in tables and reports.
    pub fn name(self) -> &'static str {
        match self {
            Config::None => "none",
            Config::Reference => "reference",
            Config::Engine => "engine",
            Config::EngineUncached => "engine-uncached",
            Config::EngineUncachedNoAudit => "engine-uncached-noaudit",
        }
    }

    /// Whether every open should reach the listener in user space.
    pub fn all_in_user_space(self) -> bool {
        matches!(self, Config::Reference | Config::EngineUncached | Config::EngineUncachedNoAudit)
    }

    /// Whether the engine runs (the probe file must be denied).
    pub fn is_engine(self) -> bool {
        matches!(self, Config::Engine | Config::EngineUncached | Config::EngineUncachedNoAudit)
    }
}

/// Shared state of a harness run.
#[derive(Debug)]
pub struct Ctx {
    /// Sizes and durations.
    pub plan: Plan,
    /// Files and guards.
    pub fixture: Fixture,
    /// The progress line.
    pub progress: Progress,
    /// Remarks for the report (skipped steps, oddities).
    pub notes: Vec<String>,
    /// The engine's event loop, as its listener reported it.
    pub engine_backend: Option<String>,
    runs: usize,
}

impl Ctx {
    /// A context for `plan` with its fixture.
    pub fn new(plan: Plan, fixture: Fixture, total_steps: usize) -> Ctx {
        Ctx { plan, fixture, progress: Progress::new(total_steps), notes: Vec::new(), engine_backend: None, runs: 0 }
    }
}

/// One measured run.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Opens per second in the window.
    pub rate: f64,
    /// Timed opens, ns.
    pub latencies_ns: Vec<u32>,
    /// Probe outcomes.
    pub probe: ProbeCount,
    /// The listener's report at start (not for `none`).
    pub ready: Option<Ready>,
    /// The listener's report at the end (not for `none`).
    pub done: Option<Done>,
}

impl Sample {
    /// Listener CPU per answered event, ns, if it answered any.
    pub fn cpu_per_event(&self) -> Option<f64> {
        let d = self.done.as_ref()?;
        (d.events > 0).then(|| d.cpu_ns as f64 / d.events as f64)
    }
}

/// What to open in a run.
#[derive(Clone, Debug)]
pub struct Target {
    /// Files opened round-robin.
    pub files: Arc<Vec<PathBuf>>,
    /// Files with a second name, opened instead by
    /// [`Config::EngineUncachedNoAudit`].
    pub linked: Option<Arc<Vec<PathBuf>>>,
    /// Opener threads.
    pub threads: usize,
    /// Pin listener and openers to [`PIN_CPU`].
    pub pinned: bool,
    /// File to try to open now and then (engine configurations deny it).
    pub probe: Option<PathBuf>,
}

/// Starts the listener of `config` (none for [`Config::None`]).
fn start_listener(ctx: &mut Ctx, config: Config, pin: Option<usize>) -> anyhow::Result<Option<Listener>> {
    ctx.runs += 1;
    let fx = &ctx.fixture;
    let (kind, dir, guard, root) = match config {
        Config::None => (None, None, None, None),
        Config::Reference => (Some(ListenerKind::Reference), Some(&fx.bench), None, None),
        Config::Engine | Config::EngineUncachedNoAudit => {
            (Some(ListenerKind::Engine), None, Some(&fx.guard_cached), Some(&fx.root))
        }
        Config::EngineUncached => (Some(ListenerKind::Engine), None, Some(&fx.guard_uncached), Some(&fx.root)),
    };
    let listener = match kind {
        Some(kind) => Some(
            Listener::start(&ListenerSpec {
                kind,
                dir: dir.cloned(),
                guard: guard.cloned(),
                root: root.cloned(),
                pin,
                backend: ctx.plan.backend,
                budget: ctx.plan.run_budget(),
                stderr: fx.base.join(format!("listener-{}.err", ctx.runs)),
            })
            .with_context(|| format!("start {} listener", config.name()))?,
        ),
        None => None,
    };
    Ok(listener)
}

/// Runs configuration `config` once against `target`.
pub fn run_once(ctx: &mut Ctx, config: Config, target: &Target) -> anyhow::Result<Sample> {
    let pin = target.pinned.then_some(PIN_CPU);
    let listener = start_listener(ctx, config, pin)?;
    let files = match config {
        Config::EngineUncachedNoAudit => target.linked.clone().context("no linked files")?,
        _ => target.files.clone(),
    };
    let load = Load {
        files,
        threads: target.threads,
        warmup: ctx.plan.warmup,
        duration: ctx.plan.duration,
        pin,
        probe: target.probe.clone(),
    };
    let result = openers::run(&load);
    let (ready, done) = match listener {
        Some(l) => {
            let ready = l.ready.clone();
            if config.is_engine() {
                ctx.engine_backend = Some(ready.backend.clone());
            }
            let done = l.finish().with_context(|| format!("stop {} listener", config.name()))?;
            (Some(ready), Some(done))
        }
        None => (None, None),
    };
    let result = result?;
    if result.errors > 0 {
        anyhow::bail!(
            "{}: {} opens of allowed files failed during the run (first: {})",
            config.name(),
            result.errors,
            result.first_error.unwrap_or_default()
        );
    }
    if config.all_in_user_space()
        && let Some(d) = &done
        && (d.events as f64) < 0.9 * result.opens as f64
    {
        let note = format!(
            "{}: the listener answered fewer events ({}) than there were opens in the measured window ({}): opens were answered in the kernel",
            config.name(),
            d.events,
            result.opens
        );
        if !ctx.notes.iter().any(|n| n.starts_with(config.name())) {
            ctx.notes.push(note);
        }
    }
    Ok(Sample { rate: result.rate(), latencies_ns: result.latencies_ns, probe: result.probe, ready, done })
}
