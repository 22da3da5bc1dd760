//! Command line: `quick`, `full`, and the hidden `__listener` subprocess.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use janus_engine::Backend;

use crate::listener::{self, ListenerKind, ListenerOpts};
use crate::plan::Plan;
use crate::scenario::scale::{self, Step};

/// Janus benchmark harness: side-by-side throughput, latency, scale and
/// deny-correctness of the engine against no listener and a reference
/// listener. Runs as root; marks only directories it creates under /tmp.
#[derive(Debug, Parser)]
#[command(name = "janus-perf", version)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every scenario briefly (a few minutes at most); fails only on an error
    /// or a denied file that opened.
    Quick(RunArgs),
    /// Longer runs and more repeats: the numbers to quote.
    Full(RunArgs),
    /// Internal: one listener subprocess.
    #[command(name = "__listener", hide = true)]
    Listener(ListenerArgs),
    /// Internal: one decision-scale step.
    #[command(name = "__scale", hide = true)]
    Scale(ScaleArgs),
}

/// Options of `quick` and `full`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory for report.json and throughput.svg.
    #[arg(long, default_value = "target/perf")]
    pub out_dir: PathBuf,
    /// Write the JSON report here instead of OUT_DIR/report.json.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the SVG chart here instead of OUT_DIR/throughput.svg.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Engine event loop.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Override: repeats of each comparison.
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Override: measured window of each run, milliseconds.
    #[arg(long)]
    pub duration_ms: Option<u64>,
    /// Override: opener thread counts, e.g. `1,4`.
    #[arg(long, value_delimiter = ',')]
    pub threads: Option<Vec<usize>>,
    /// Skip the pinned throughput runs.
    #[arg(long)]
    pub no_pinned: bool,
}

/// Engine backend choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// io_uring where it works, else plain.
    Auto,
    /// io_uring.
    IoUring,
    /// poll + read + writev.
    Plain,
}

impl BackendArg {
    /// Command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendArg::Auto => "auto",
            BackendArg::IoUring => "io-uring",
            BackendArg::Plain => "plain",
        }
    }

    /// The engine setting.
    pub fn backend(self) -> Option<Backend> {
        match self {
            BackendArg::Auto => None,
            BackendArg::IoUring => Some(Backend::IoUring),
            BackendArg::Plain => Some(Backend::Plain),
        }
    }
}

#[derive(Debug, Args)]
struct ListenerArgs {
    #[arg(long, value_enum)]
    kind: ListenerKind,
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long)]
    guard: Option<PathBuf>,
    #[arg(long)]
    root: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    #[arg(long, default_value_t = 60)]
    budget_secs: u64,
}

#[derive(Debug, Args)]
struct ScaleArgs {
    /// One guard of this many rules.
    #[arg(long, conflicts_with = "guards")]
    rules: Option<usize>,
    /// This many guards.
    #[arg(long)]
    guards: Option<usize>,
    /// Rules per guard.
    #[arg(long, default_value_t = 50)]
    per: usize,
    /// Also apply the guards to an engine, on roots made here.
    #[arg(long)]
    apply_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    #[arg(long, default_value_t = 100)]
    budget_ms: u64,
}

/// Parses the command line and runs it.
pub fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Quick(args) => crate::run::run(Plan::quick(&args), &args),
        Cmd::Full(args) => crate::run::run(Plan::full(&args), &args),
        Cmd::Listener(a) => {
            listener::serve(ListenerOpts {
                kind: a.kind,
                dir: a.dir,
                guard: a.guard,
                root: a.root,
                backend: a.backend.backend(),
                budget: Duration::from_secs(a.budget_secs),
            })?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Scale(a) => {
            let step = match (a.rules, a.guards) {
                (Some(n), _) => Step::Rules(n),
                (None, Some(count)) => {
                    Step::Guards { count, per: a.per, apply_dir: a.apply_dir, backend: a.backend.backend() }
                }
                (None, None) => anyhow::bail!("__scale needs --rules or --guards"),
            };
            scale::serve(step, Duration::from_millis(a.budget_ms))?;
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_overrides() {
        let cli = Cli::try_parse_from(["janus-perf", "quick", "--threads", "1,4", "--no-pinned"]).unwrap();
        let Cmd::Quick(a) = cli.cmd else { panic!() };
        assert_eq!(a.threads, Some(vec![1, 4]));
        assert!(a.no_pinned);
        assert_eq!(a.out_dir, PathBuf::from("target/perf"));
        Cli::try_parse_from(["janus-perf", "__listener", "--kind", "engine"]).unwrap();
    }
}
