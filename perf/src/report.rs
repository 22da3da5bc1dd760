//! The report: per-configuration statistics of the scenarios, the checks
//! against the targets, and JSON output.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::openers::ProbeCount;
use crate::plan::Plan;
use crate::scenario::scale::Scale;
use crate::scenario::{Config, Sample};
use crate::stats::{self, Spread};

/// Sampled open() latency, ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: Option<u32>,
    /// 99th percentile.
    pub p99: Option<u32>,
    /// 99.9th percentile.
    pub p999: Option<u32>,
    /// Timed opens the percentiles come from.
    pub samples: usize,
}

impl Latency {
    /// Percentiles of `samples` (any order).
    pub fn of(mut samples: Vec<u32>) -> Latency {
        samples.sort_unstable();
        Latency {
            p50: stats::percentile(&samples, 0.5),
            p99: stats::percentile(&samples, 0.99),
            p999: stats::percentile(&samples, 0.999),
            samples: samples.len(),
        }
    }
}

/// One configuration's results over the repeats of one comparison.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigStats {
    /// The configuration.
    pub config: Config,
    /// Opens/s over the repeats.
    pub opens_per_s: Spread,
    /// Opens/s of each repeat, in run order.
    pub runs: Vec<f64>,
    /// Median opens/s divided by `none`'s.
    pub ratio_none: Option<f64>,
    /// Sampled latency, all repeats pooled.
    pub latency: Latency,
    /// Listener CPU per answered event over the repeats, ns.
    pub cpu_ns_per_event: Option<Spread>,
    /// Median events the listener answered per run.
    pub events_per_run: Option<f64>,
    /// Mean events per engine read batch, all repeats.
    pub batch_mean: Option<f64>,
    /// Median listener setup time (marks in place), ms.
    pub setup_ms: Option<f64>,
    /// Probe outcomes, all repeats.
    pub probe: ProbeCount,
}

/// Summarizes the samples of each configuration of one comparison.
pub fn summarize(samples: &BTreeMap<Config, Vec<Sample>>) -> Vec<ConfigStats> {
    let rate_median =
        |c: Config| samples.get(&c).and_then(|s| stats::median(&s.iter().map(|x| x.rate).collect::<Vec<_>>()));
    let none = rate_median(Config::None);
    samples
        .iter()
        .map(|(&config, runs)| {
            let rates: Vec<f64> = runs.iter().map(|s| s.rate).collect();
            let spread = Spread::of(&rates).unwrap_or_default();
            let cpu: Vec<f64> = runs.iter().filter_map(Sample::cpu_per_event).collect();
            let done: Vec<_> = runs.iter().filter_map(|s| s.done.as_ref()).collect();
            let events: Vec<f64> = done.iter().map(|d| d.events as f64).collect();
            let (batches, batch_events) =
                done.iter().filter_map(|d| d.counts).fold((0, 0), |(b, e), c| (b + c.batches, e + c.batch_events));
            let setup: Vec<f64> = runs.iter().filter_map(|s| s.ready.as_ref().map(|r| r.setup_ms)).collect();
            let mut probe = ProbeCount::default();
            runs.iter().for_each(|s| probe.add(&s.probe));
            ConfigStats {
                config,
                ratio_none: none.and_then(|n| stats::ratio(spread.median, n)),
                opens_per_s: spread,
                runs: rates,
                latency: Latency::of(runs.iter().flat_map(|s| s.latencies_ns.iter().copied()).collect()),
                cpu_ns_per_event: Spread::of(&cpu).filter(|_| !cpu.is_empty()),
                events_per_run: stats::median(&events),
                batch_mean: stats::ratio(batch_events as f64, batches as f64),
                setup_ms: stats::median(&setup),
                probe,
            }
        })
        .collect()
}

/// A row of open-throughput.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputRow {
    /// Listener and openers pinned to one CPU.
    pub pinned: bool,
    /// Opener threads.
    pub threads: usize,
    /// Results.
    #[serde(flatten)]
    pub stats: ConfigStats,
}

/// One engine configuration against `reference`, for one (pinning,
/// threads) pair.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Pinned.
    pub pinned: bool,
    /// Opener threads.
    pub threads: usize,
    /// The engine configuration.
    pub config: Config,
    /// Its median opens/s divided by `reference`'s.
    pub opens_vs_reference: Option<f64>,
    /// Its median listener CPU per event divided by `reference`'s.
    pub cpu_vs_reference: Option<f64>,
}

impl Comparison {
    /// Compares every engine configuration of one (pinning, threads) pair
    /// with `reference`.
    pub fn of(pinned: bool, threads: usize, rows: &[ConfigStats]) -> Vec<Comparison> {
        let find = |c: Config| rows.iter().find(|r| r.config == c);
        let rate = |c: Config| find(c).map(|r| r.opens_per_s.median);
        let cpu = |c: Config| find(c).and_then(|r| r.cpu_ns_per_event.map(|s| s.median));
        let div = |a: Option<f64>, b: Option<f64>| stats::ratio(a?, b?);
        rows.iter()
            .filter(|r| r.config.is_engine())
            .map(|r| Comparison {
                pinned,
                threads,
                config: r.config,
                opens_vs_reference: div(rate(r.config), rate(Config::Reference)),
                // CPU per event compares like with like only when every open
                // reaches user space.
                cpu_vs_reference: if r.config.all_in_user_space() {
                    div(cpu(r.config), cpu(Config::Reference))
                } else {
                    None
                },
            })
            .collect()
    }
}

/// A row of unguarded-overhead.
#[derive(Clone, Debug, Serialize)]
pub struct UnguardedRow {
    /// Opener threads.
    pub threads: usize,
    /// Results.
    #[serde(flatten)]
    pub stats: ConfigStats,
}

/// The churn scenario's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Churn {
    /// Whether it ran.
    pub run: bool,
    /// Why not, or what it found.
    pub note: String,
}

/// Deny-correctness under load: opens of the denied file during engine runs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DenyCheck {
    /// Outcomes, all engine runs.
    #[serde(flatten)]
    pub probe: ProbeCount,
    /// No attempt succeeded (and there were attempts).
    pub passed: bool,
}

impl DenyCheck {
    /// The check over the engine rows of open-throughput.
    pub fn of(rows: &[ThroughputRow]) -> DenyCheck {
        let mut probe = ProbeCount::default();
        rows.iter().filter(|r| r.stats.config.is_engine()).for_each(|r| probe.add(&r.stats.probe));
        DenyCheck { passed: probe.succeeded == 0 && probe.attempts > 0, probe }
    }
}

/// One target of the issue, checked.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    /// What is measured.
    pub name: String,
    /// The figure.
    pub value: Option<f64>,
    /// The goal, in words.
    pub goal: String,
    /// Whether the figure meets the goal (`None`: not measured).
    pub met: Option<bool>,
}

/// Host facts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Host {
    /// `uname -r`.
    pub kernel: String,
    /// CPUs available.
    pub cpus: usize,
    /// The engine's event loop.
    pub engine_backend: Option<String>,
    /// `/proc/loadavg` when the run started (other load makes figures noisy).
    pub loadavg_at_start: String,
}

/// Everything one harness run found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `janus-perf`.
    pub tool: &'static str,
    /// Harness version.
    pub version: &'static str,
    /// Unix time of the start, seconds.
    pub started_unix_s: u64,
    /// Wall time of the whole run, seconds.
    pub wall_s: f64,
    /// Host facts.
    pub host: Host,
    /// What ran.
    pub plan: Plan,
    /// open-throughput rows.
    pub throughput: Vec<ThroughputRow>,
    /// Engine against reference, per (pinning, threads).
    pub comparisons: Vec<Comparison>,
    /// unguarded-overhead rows.
    pub unguarded: Vec<UnguardedRow>,
    /// first-open: one open of each of many files new to the listener.
    pub first_open: Vec<ConfigStats>,
    /// decision-scale.
    pub scale: Scale,
    /// churn.
    pub churn: Churn,
    /// deny-correctness under load.
    pub deny: DenyCheck,
    /// The targets, checked.
    pub targets: Vec<TargetCheck>,
    /// Remarks: skipped steps, limits hit.
    pub notes: Vec<String>,
}

impl Report {
    /// Checks the targets against the figures.
    pub fn check_targets(&mut self) {
        let cmp = |pinned: bool, threads: usize, config: Config| {
            self.comparisons.iter().find(|c| c.pinned == pinned && c.threads == threads && c.config == config)
        };
        let mut t = Vec::new();
        let at_least = |v: Option<f64>, min: f64| v.map(|v| v >= min);
        let at_most = |v: Option<f64>, max: f64| v.map(|v| v <= max);
        for config in [Config::Engine, Config::EngineUncachedNoAudit, Config::EngineUncached] {
            let v = cmp(false, 4, config).and_then(|c| c.opens_vs_reference);
            t.push(TargetCheck {
                name: format!("{}/reference opens/s, 4 openers, unpinned", config.name()),
                value: v,
                goal: ">= 1.0 (aim 1.3)".into(),
                met: at_least(v, 1.0),
            });
        }
        for config in [Config::EngineUncachedNoAudit, Config::EngineUncached] {
            let v = cmp(true, 1, config).and_then(|c| c.cpu_vs_reference);
            t.push(TargetCheck {
                name: format!("{}/reference CPU per event, 1 opener, pinned", config.name()),
                value: v,
                goal: "<= 1.1".into(),
                met: at_most(v, 1.1),
            });
        }
        for r in self.unguarded.iter().filter(|r| r.stats.config == Config::Engine) {
            let v = r.stats.ratio_none;
            t.push(TargetCheck {
                name: format!("unguarded opens/s with engine / none, {} openers", r.threads),
                value: v,
                goal: ">= 0.95 (within 5%)".into(),
                met: at_least(v, 0.95),
            });
        }
        if let Some((from, to, v)) = self.scale.flatness() {
            t.push(TargetCheck {
                name: format!("decision ns/op at {to} rules / at {from} rules"),
                value: Some(v),
                goal: "<= 2.0 (flat: a trie walk, not a scan)".into(),
                met: at_most(Some(v), 2.0),
            });
        }
        self.targets = t;
    }

    /// Writes the report as pretty JSON to `path` (creating its directory).
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        write_file(path, &serde_json::to_string_pretty(self)?)
    }
}

/// Writes `text` to `path`, creating parent directories.
pub fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rate: f64) -> Sample {
        Sample { rate, latencies_ns: vec![100, 200, 300], probe: ProbeCount::default(), ready: None, done: None }
    }

    #[test]
    fn summarize_ratios_to_none() {
        let mut m = BTreeMap::new();
        m.insert(Config::None, vec![sample(100.0), sample(300.0), sample(200.0)]);
        m.insert(Config::Reference, vec![sample(50.0), sample(40.0), sample(60.0)]);
        let rows = summarize(&m);
        assert_eq!(rows[0].config, Config::None);
        assert_eq!(rows[0].ratio_none, Some(1.0));
        assert_eq!(rows[1].opens_per_s.median, 50.0);
        assert_eq!(rows[1].ratio_none, Some(0.25));
        assert_eq!(rows[1].latency.samples, 9);
        assert_eq!(rows[1].latency.p50, Some(200));
        assert!(rows[1].cpu_ns_per_event.is_none());
        assert!(Comparison::of(false, 1, &rows).is_empty());
    }
}
