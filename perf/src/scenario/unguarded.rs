//! unguarded-overhead: opens of files on the same filesystem outside every
//! guarded path, with no listener and with the engine's guard active.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Config, Ctx, Target, run_once};
use crate::plan::Plan;
use crate::report::{UnguardedRow, summarize};

/// The compared configurations, in run order.
pub const CONFIGS: [Config; 2] = [Config::None, Config::Engine];

/// Runs in this scenario.
pub fn steps(plan: &Plan) -> usize {
    plan.unguarded_threads.len() * plan.repeats * CONFIGS.len()
}

/// Runs the scenario.
pub fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<UnguardedRow>> {
    let files = Arc::new(ctx.fixture.outside_files.clone());
    let repeats = ctx.plan.repeats;
    let mut rows = Vec::new();
    for threads in ctx.plan.unguarded_threads.clone() {
        let target = Target { files: files.clone(), linked: None, threads, pinned: false, probe: None };
        let mut samples = BTreeMap::new();
        for rep in 1..=repeats {
            for config in CONFIGS {
                ctx.progress.step(&format!("unguarded-overhead {threads} thr {} (rep {rep}/{repeats})", config.name()));
                let s = run_once(ctx, config, &target)?;
                samples.entry(config).or_insert_with(Vec::new).push(s);
            }
        }
        rows.extend(summarize(&samples).into_iter().map(|stats| UnguardedRow { threads, stats }));
    }
    Ok(rows)
}
