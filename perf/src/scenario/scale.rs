//! decision-scale: one guard of 1 … 100,000 rules, and 1 … 1,000 guards:
//! compile time, memory and decision cost per event (`Policy::decide`, one
//! trie walk). Each step runs in a fresh subprocess (`janus-perf __scale`)
//! so that its RSS growth is not hidden by memory an earlier step freed. The
//! many-guard steps also apply the guards to an engine in that subprocess
//! when the fanotify group limit allows it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use janus_engine::policy::{Policy, Scratch};
use janus_engine::{Backend, Engine, EngineConfig, GuardTarget, TargetInfo};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::Ctx;
use crate::fixture::{scale_path, scale_paths, scale_spec};
use crate::plan::Plan;
use crate::procfs;
use crate::stats;
use crate::supervise::output_within;

/// Distinct paths each decision measurement cycles through.
const PATHS: usize = 1024;
/// fanotify groups each engine guard instance holds (permission + watcher).
const GROUPS_PER_GUARD: usize = 2;
/// Groups left for everything else on the machine.
const GROUP_MARGIN: usize = 32;
/// Smallest rule count the flatness check starts from.
pub const FLAT_FROM: usize = 100;
/// Longest one step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

/// Results of decision-scale.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Scale {
    /// One guard, growing rule count.
    pub rules: Vec<RulesRow>,
    /// Growing guard count.
    pub guards: Vec<GuardsRow>,
}

impl Scale {
    /// Decision cost at the most rules divided by that at the fewest rules
    /// of at least [`FLAT_FROM`] (below that, most measured paths leave the
    /// trie at its first level, which is not the same work): `(from, to,
    /// ratio)`.
    pub fn flatness(&self) -> Option<(usize, usize, f64)> {
        let first = self.rules.iter().find(|r| r.rules >= FLAT_FROM).or(self.rules.first())?;
        let last = self.rules.last()?;
        Some((first.rules, last.rules, stats::ratio(last.decide_ns, first.decide_ns)?))
    }
}

/// One guard of `rules` rules.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RulesRow {
    /// Rules in the guard.
    pub rules: usize,
    /// `Policy::compile`, ms.
    pub compile_ms: f64,
    /// RSS growth while the policy is alive, KiB.
    pub rss_delta_kib: i64,
    /// `Policy::decide` (trie walk), ns per decision.
    pub decide_ns: f64,
    /// `Policy::decide_by_scan` (every rule), ns per decision, for contrast.
    pub scan_ns: f64,
}

/// `guards` guards of `rules_per_guard` rules each.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuardsRow {
    /// Guards.
    pub guards: usize,
    /// Rules in each.
    pub rules_per_guard: usize,
    /// Compiling all of them, ms.
    pub compile_ms: f64,
    /// RSS growth while they are alive, KiB.
    pub rss_delta_kib: i64,
    /// ns per decision, each event decided by its own guard's policy.
    pub decide_ns: f64,
    /// Applying them to an engine, when it ran.
    pub apply: Option<ApplyRow>,
    /// Why the engine apply did not run.
    pub apply_note: Option<String>,
}

/// Applying guards to a running engine (in the step's subprocess, on empty
/// roots).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyRow {
    /// Guard instances applied.
    pub applied: usize,
    /// All applies, ms.
    pub total_ms: f64,
    /// Per guard, ms.
    pub per_guard_ms: f64,
    /// Marks placed.
    pub marks: usize,
    /// Open fds the engine added.
    pub fds_delta: i64,
    /// RSS the engine added, KiB.
    pub rss_delta_kib: i64,
}

/// What one `__scale` subprocess measures.
#[derive(Clone, Debug)]
pub enum Step {
    /// One guard of this many rules.
    Rules(usize),
    /// This many guards of `per` rules, applied to an engine on roots under
    /// `apply_dir` if given.
    Guards {
        /// Guards.
        count: usize,
        /// Rules per guard.
        per: usize,
        /// Where to make the guards' roots for the engine apply.
        apply_dir: Option<PathBuf>,
        /// Engine backend.
        backend: Option<Backend>,
    },
}

/// Steps of this scenario.
pub fn steps(plan: &Plan) -> usize {
    plan.scale_rules.len() + plan.scale_guards.len()
}

/// Runs the scenario, one subprocess per step.
pub fn run(ctx: &mut Ctx) -> anyhow::Result<Scale> {
    let mut scale = Scale::default();
    let budget_ms = ctx.plan.decide_budget.as_millis().to_string();
    let exe = std::env::current_exe()?;
    let base = |cmd: &mut Command| {
        cmd.args(["__scale", "--budget-ms", &budget_ms]);
    };
    for n in ctx.plan.scale_rules.clone() {
        ctx.progress.step(&format!("decision-scale one guard of {n} rules"));
        let mut cmd = Command::new(&exe);
        base(&mut cmd);
        cmd.args(["--rules", &n.to_string()]);
        scale.rules.push(step_output(cmd)?);
    }
    let max_groups = procfs::fanotify_max_groups().unwrap_or(128);
    let per = ctx.plan.rules_per_guard;
    for g in ctx.plan.scale_guards.clone() {
        ctx.progress.step(&format!("decision-scale {g} guards of {per} rules"));
        let mut cmd = Command::new(&exe);
        base(&mut cmd);
        cmd.args(["--guards", &g.to_string(), "--per", &per.to_string()]);
        cmd.args(["--backend", ctx.plan.backend.as_str()]);
        let fits = GROUPS_PER_GUARD * g + GROUP_MARGIN <= max_groups;
        if fits {
            cmd.arg("--apply-dir").arg(ctx.fixture.subdir(&format!("scale-{g}"))?);
        }
        let mut row: GuardsRow = step_output(cmd)?;
        if !fits {
            row.apply_note = Some(format!(
                "engine apply skipped for {g} guards: each guard instance holds {GROUPS_PER_GUARD} fanotify groups and fs.fanotify.max_user_groups is {max_groups}"
            ));
        }
        scale.guards.push(row);
    }
    Ok(scale)
}

fn step_output<T: DeserializeOwned>(cmd: Command) -> anyhow::Result<T> {
    let out = output_within(cmd, STEP_TIMEOUT)?;
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("row "))
        .with_context(|| format!("no `row` line from __scale: {out:?}"))?;
    serde_json::from_str(line).with_context(|| format!("parse {line:?}"))
}

/// The subprocess side: measures one step and prints `row <json>`.
pub fn serve(step: Step, budget: Duration) -> anyhow::Result<()> {
    let line = match step {
        Step::Rules(n) => serde_json::to_string(&measure_rules(n, budget)?)?,
        Step::Guards { count, per, apply_dir, backend } => {
            serde_json::to_string(&measure_guards(count, per, budget, apply_dir.as_deref(), backend)?)?
        }
    };
    println!("row {line}");
    Ok(())
}

fn rss() -> i64 {
    procfs::vm_rss_kib().map_or(0, |k| k as i64)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Windows each decision-cost budget is split into; the fastest window
/// counts, which discounts preemption by other load on the machine.
const WINDOWS: u32 = 10;

/// ns per call of `op(i)` for i = 0, 1, 2, …: the budget is split into
/// [`WINDOWS`] windows (each at least one `chunk` of calls, the clock read
/// after every chunk) and the fastest window's mean is returned. One chunk
/// runs unmeasured first.
fn ns_per_op(budget: Duration, chunk: usize, mut op: impl FnMut(usize)) -> f64 {
    (0..chunk).for_each(&mut op);
    let window = budget / WINDOWS;
    let mut n = 0;
    let mut best = f64::INFINITY;
    for _ in 0..WINDOWS {
        let (t0, n0) = (Instant::now(), n);
        while n == n0 || t0.elapsed() < window {
            for _ in 0..chunk {
                op(n);
                n += 1;
            }
        }
        best = best.min(t0.elapsed().as_nanos() as f64 / (n - n0) as f64);
    }
    best
}

fn measure_rules(n: usize, budget: Duration) -> anyhow::Result<RulesRow> {
    let spec = scale_spec(n, "");
    let paths = scale_paths(n, "", PATHS);
    let rss0 = rss();
    let t0 = Instant::now();
    let policy = Policy::compile(&spec)?;
    let compile_ms = ms(t0);
    let rss_delta_kib = rss() - rss0;
    let mut scratch = Scratch::default();
    let decide_ns = ns_per_op(budget, PATHS, |i| {
        std::hint::black_box(policy.decide(&paths[i % PATHS], false, &mut scratch));
    });
    let scan_ns = ns_per_op(budget / 4, 1, |i| {
        std::hint::black_box(policy.decide_by_scan(&paths[i % PATHS], false));
    });
    Ok(RulesRow { rules: n, compile_ms, rss_delta_kib, decide_ns, scan_ns })
}

fn measure_guards(
    g: usize,
    per: usize,
    budget: Duration,
    apply_dir: Option<&std::path::Path>,
    backend: Option<Backend>,
) -> anyhow::Result<GuardsRow> {
    let g = g.max(1);
    let prefixes: Vec<String> = (0..g).map(|i| format!("/g{i}")).collect();
    let specs: Vec<_> = prefixes.iter().map(|p| scale_spec(per, p)).collect();
    // Event k comes from guard (k * 7919) % g.
    let events: Vec<(usize, Vec<u8>)> = (0..PATHS)
        .map(|k| {
            let gi = (k * 7919) % g;
            (gi, scale_path(per, &prefixes[gi], k))
        })
        .collect();
    let rss0 = rss();
    let t0 = Instant::now();
    let policies = specs.iter().map(|s| Policy::compile(s).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
    let compile_ms = ms(t0);
    let rss_delta_kib = rss() - rss0;
    let mut scratch = Scratch::default();
    let decide_ns = ns_per_op(budget, PATHS, |i| {
        let (gi, path) = &events[i % PATHS];
        std::hint::black_box(policies[*gi].decide(path, false, &mut scratch));
    });
    let apply = match apply_dir {
        Some(dir) => Some(apply_engine(&policies, dir, backend)?),
        None => None,
    };
    Ok(GuardsRow { guards: g, rules_per_guard: per, compile_ms, rss_delta_kib, decide_ns, apply, apply_note: None })
}

/// Applies every policy to a fresh engine, each on its own empty root under
/// `dir` (nothing opens there while it runs), and stops it.
fn apply_engine(policies: &[Arc<Policy>], dir: &std::path::Path, backend: Option<Backend>) -> anyhow::Result<ApplyRow> {
    let roots = (0..policies.len())
        .map(|i| {
            let p = dir.join(format!("g{i}"));
            std::fs::create_dir_all(&p).map(|_| p)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fds0 = procfs::open_fds()? as i64;
    let rss0 = rss();
    let engine = Engine::start(EngineConfig { backend, ..Default::default() })?;
    let t0 = Instant::now();
    let mut marks = 0;
    for (i, (policy, root)) in policies.iter().zip(roots).enumerate() {
        let report = engine.apply(GuardTarget {
            id: format!("g{i}"),
            info: TargetInfo { guard: format!("perf/g{i}"), namespace: "perf".into(), ..Default::default() },
            policy: policy.clone(),
            root,
            owner_pids: Vec::new(),
        })?;
        marks += report.marks;
    }
    let total_ms = ms(t0);
    let row = ApplyRow {
        applied: policies.len(),
        total_ms,
        per_guard_ms: total_ms / policies.len().max(1) as f64,
        marks,
        fds_delta: procfs::open_fds()? as i64 - fds0,
        rss_delta_kib: rss() - rss0,
    };
    engine.stop();
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_per_op_takes_the_fastest_window() {
        let mut calls = 0usize;
        let ns = ns_per_op(Duration::from_millis(20), 8, |_| {
            calls += 1;
            std::hint::black_box(calls);
        });
        assert!(ns > 0.0 && ns < 1_000_000.0, "{ns}");
        assert!(calls >= 8 * (WINDOWS as usize + 1));
    }
}
