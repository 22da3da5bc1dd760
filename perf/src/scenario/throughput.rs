//! open-throughput: opener threads on the guarded bench directory, every
//! configuration interleaved (A B C D A B C D …), unpinned and pinned. The
//! openers also try the denied file now and then (deny-correctness).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Config, Ctx, Target, run_once};
use crate::plan::Plan;
use crate::report::{Comparison, ThroughputRow, summarize};

/// The compared configurations, in run order.
pub const CONFIGS: [Config; 5] =
    [Config::None, Config::Reference, Config::Engine, Config::EngineUncached, Config::EngineUncachedNoAudit];

fn pinnings(plan: &Plan) -> Vec<bool> {
    if plan.pinned { vec![false, true] } else { vec![false] }
}

/// Runs in this scenario.
pub fn steps(plan: &Plan) -> usize {
    pinnings(plan).len() * plan.threads.len() * plan.repeats * CONFIGS.len()
}

/// Runs the scenario.
pub fn run(ctx: &mut Ctx) -> anyhow::Result<(Vec<ThroughputRow>, Vec<Comparison>)> {
    let files = Arc::new(ctx.fixture.files.clone());
    let linked = Some(Arc::new(ctx.fixture.linked_files.clone()));
    let probe = Some(ctx.fixture.denied.clone());
    let (mut rows, mut comparisons) = (Vec::new(), Vec::new());
    let repeats = ctx.plan.repeats;
    for pinned in pinnings(&ctx.plan) {
        for threads in ctx.plan.threads.clone() {
            let target = Target { files: files.clone(), linked: linked.clone(), threads, pinned, probe: probe.clone() };
            let mut samples = BTreeMap::new();
            for rep in 1..=repeats {
                for config in CONFIGS {
                    ctx.progress.step(&format!(
                        "open-throughput {} {threads} thr {} (rep {rep}/{repeats})",
                        if pinned { "pinned" } else { "unpinned" },
                        config.name()
                    ));
                    let s = run_once(ctx, config, &target)?;
                    samples.entry(config).or_insert_with(Vec::new).push(s);
                }
            }
            let stats = summarize(&samples);
            comparisons.extend(Comparison::of(pinned, threads, &stats));
            rows.extend(stats.into_iter().map(|stats| ThroughputRow { pinned, threads, stats }));
        }
    }
    Ok((rows, comparisons))
}
