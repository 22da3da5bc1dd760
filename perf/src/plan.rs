//! How much each scenario runs: the `quick` and `full` presets, with
//! command-line overrides.

use std::time::Duration;

use serde::Serialize;

use crate::cli::{BackendArg, RunArgs};

/// Sizes and durations of one harness run.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// `quick` or `full`.
    pub name: &'static str,
    /// Opener thread counts of open-throughput.
    pub threads: Vec<usize>,
    /// Opener thread counts of unguarded-overhead.
    pub unguarded_threads: Vec<usize>,
    /// Repeats of each interleaved comparison.
    pub repeats: usize,
    /// Unmeasured warm-up before each window.
    #[serde(serialize_with = "as_ms", rename = "warmup_ms")]
    pub warmup: Duration,
    /// Measured window of each run.
    #[serde(serialize_with = "as_ms", rename = "duration_ms")]
    pub duration: Duration,
    /// Also run with listener and openers pinned to CPU 0.
    pub pinned: bool,
    /// Files in the bench directory.
    pub files: usize,
    /// Files of first-open (each opened once per run).
    pub first_open_files: usize,
    /// Rule counts of the one-guard decision-scale steps.
    pub scale_rules: Vec<usize>,
    /// Guard counts of the many-guard decision-scale steps.
    pub scale_guards: Vec<usize>,
    /// Rules per guard in the many-guard steps.
    pub rules_per_guard: usize,
    /// Time spent measuring each decision cost.
    #[serde(serialize_with = "as_ms", rename = "decide_budget_ms")]
    pub decide_budget: Duration,
    /// Engine event loop.
    #[serde(skip)]
    pub backend: BackendArg,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Plan {
    /// Every scenario briefly: well under three minutes on two cores.
    pub fn quick(args: &RunArgs) -> Plan {
        Plan {
            name: "quick",
            threads: vec![1, 4],
            unguarded_threads: vec![4],
            repeats: 3,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(400),
            pinned: true,
            files: 64,
            first_open_files: 2000,
            scale_rules: vec![1, 100, 10_000, 100_000],
            scale_guards: vec![1, 100, 1000],
            rules_per_guard: 50,
            decide_budget: Duration::from_millis(100),
            backend: args.backend,
        }
        .with_overrides(args)
    }

    /// Longer windows and more repeats.
    pub fn full(args: &RunArgs) -> Plan {
        Plan {
            name: "full",
            threads: vec![1, 2, 4, 8],
            unguarded_threads: vec![1, 4],
            repeats: 5,
            warmup: Duration::from_millis(300),
            duration: Duration::from_millis(2000),
            decide_budget: Duration::from_millis(500),
            first_open_files: 10_000,
            ..Plan::quick(args)
        }
        .with_overrides(args)
    }

    fn with_overrides(mut self, args: &RunArgs) -> Plan {
        if let Some(r) = args.repeats {
            self.repeats = r.max(1);
        }
        if let Some(ms) = args.duration_ms {
            self.duration = Duration::from_millis(ms.max(10));
        }
        if let Some(t) = &args.threads {
            self.threads = t.iter().copied().filter(|&n| n > 0).collect();
        }
        if args.no_pinned {
            self.pinned = false;
        }
        self
    }

    /// Longest one run may take before its listener is killed.
    pub fn run_budget(&self) -> Duration {
        self.warmup + self.duration + Duration::from_secs(30)
    }
}
