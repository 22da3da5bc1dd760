//! first-open: the cost of the first open of each file on a guarded
//! filesystem (outside every guarded path), with no listener and with the
//! engine. The engine marks the whole mount holding a guarded tree, so the
//! first open of every file there is one round trip to user space (decided
//! by path, then cached in the kernel); this measures that round trip.
//! Each engine run is a new guard instance, so every file is new to it;
//! the files are opened once beforehand with no listener, so the page and
//! dentry caches are equally warm for every configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use super::{Config, Ctx, Sample, start_listener};
use crate::openers::ProbeCount;
use crate::plan::Plan;
use crate::report::{ConfigStats, summarize};

/// The compared configurations, in run order.
pub const CONFIGS: [Config; 2] = [Config::None, Config::Engine];

/// Runs in this scenario.
pub fn steps(plan: &Plan) -> usize {
    plan.repeats * CONFIGS.len()
}

/// Opens and closes each of `files` once, timing each.
fn open_each(files: &[PathBuf]) -> anyhow::Result<(f64, Vec<u32>)> {
    let mut latencies = Vec::with_capacity(files.len());
    let start = Instant::now();
    for f in files {
        let t = Instant::now();
        drop(std::fs::File::open(f).with_context(|| format!("open {}", f.display()))?);
        latencies.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
    }
    Ok((files.len() as f64 / start.elapsed().as_secs_f64(), latencies))
}

/// Runs the scenario.
pub fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<ConfigStats>> {
    let files = ctx.fixture.fresh_files("first", ctx.plan.first_open_files).context("create first-open files")?;
    open_each(&files)?;
    let repeats = ctx.plan.repeats;
    let mut samples: BTreeMap<Config, Vec<Sample>> = BTreeMap::new();
    for rep in 1..=repeats {
        for config in CONFIGS {
            ctx.progress.step(&format!("first-open {} files {} (rep {rep}/{repeats})", files.len(), config.name()));
            let listener = start_listener(ctx, config, None)?;
            let measured = open_each(&files);
            let (ready, done) = match listener {
                Some(l) => {
                    let ready = l.ready.clone();
                    (Some(ready), Some(l.finish().with_context(|| format!("stop {} listener", config.name()))?))
                }
                None => (None, None),
            };
            let (rate, latencies_ns) = measured?;
            let probe = ProbeCount::default();
            samples.entry(config).or_default().push(Sample { rate, latencies_ns, probe, ready, done });
        }
    }
    Ok(summarize(&samples))
}
