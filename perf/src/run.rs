//! One harness run (`quick` or `full`): every scenario in turn, then the
//! table on stdout, the JSON report and the SVG chart.

use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::cli::RunArgs;
use crate::fixture::Fixture;
use crate::plan::Plan;
use crate::report::{DenyCheck, Host, Report, write_file};
use crate::scenario::{Ctx, churn, first_open, scale, throughput, unguarded};
use crate::{procfs, svg, table};

/// What the configurations are, for readers of the table.
const CONFIG_NOTES: &[&str] = &[
    "engine: the realistic guard (~300 rules); the bench files are allowed without audit, so the engine caches them in the kernel (ignore marks) and only the denied probe opens reach user space: its CPU/ev is the cost of a denial (audit record included), not of an allowed open.",
    "engine-uncached: the same guard with the bench files in an `audit: true` allow subject: every open is decided in user space and writes an audit record (rendered, then discarded).",
    "engine-uncached-noaudit: the engine guard on bench files that also have a second name (hard link); the engine never caches those in the kernel, so every open is decided in user space, without audit: the like-for-like comparison with reference.",
];

/// Runs every scenario of `plan` and writes the outputs. Fails on an error
/// or a denied file that opened; never on a figure.
pub fn run(mut plan: Plan, args: &RunArgs) -> anyhow::Result<ExitCode> {
    if !procfs::is_root() {
        bail!("janus-perf needs root (fanotify permission events)");
    }
    let started = Instant::now();
    let started_unix_s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let loadavg_at_start = procfs::loadavg();
    let mut notes = Vec::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(load) = loadavg_at_start.split_whitespace().next().and_then(|l| l.parse::<f64>().ok())
        && load > 0.5 * cpus as f64
    {
        notes.push(format!(
            "the machine was busy when the run started (1-minute load average {load} on {cpus} CPUs): figures are noisy; quote a run on an idle machine"
        ));
    }
    if plan.pinned && !procfs::have_taskset() {
        plan.pinned = false;
        notes.push("pinned runs skipped: `taskset` (util-linux) not found".to_string());
    }
    let json_path = args.json.clone().unwrap_or_else(|| args.out_dir.join("report.json"));
    let svg_path = args.svg.clone().unwrap_or_else(|| args.out_dir.join("throughput.svg"));
    let total = throughput::steps(&plan) + unguarded::steps(&plan) + first_open::steps(&plan) + scale::steps(&plan);
    let fixture = Fixture::create(plan.files).context("create fixture under /tmp")?;
    let mut ctx = Ctx::new(plan, fixture, total);

    let (throughput_rows, comparisons) = throughput::run(&mut ctx)?;
    let unguarded_rows = unguarded::run(&mut ctx)?;
    let first_open = first_open::run(&mut ctx)?;
    let scale = scale::run(&mut ctx)?;
    let churn = churn::run();
    ctx.progress.finish();
    eprintln!("{}", churn.note);

    notes.append(&mut ctx.notes);
    notes.extend(scale.guards.iter().filter_map(|g| g.apply_note.clone()));
    notes.extend(CONFIG_NOTES.iter().map(|n| n.to_string()));
    let deny = DenyCheck::of(&throughput_rows);
    let mut report = Report {
        tool: "janus-perf",
        version: env!("CARGO_PKG_VERSION"),
        started_unix_s,
        wall_s: 0.0,
        host: Host {
            kernel: procfs::kernel_release(),
            cpus,
            engine_backend: ctx.engine_backend.clone(),
            loadavg_at_start,
        },
        plan: ctx.plan.clone(),
        throughput: throughput_rows,
        comparisons,
        unguarded: unguarded_rows,
        first_open,
        scale,
        churn,
        deny,
        targets: Vec::new(),
        notes,
    };
    report.check_targets();
    report.wall_s = started.elapsed().as_secs_f64();
    drop(ctx);

    print!("{}", table::render(&report));
    report.write_json(&json_path)?;
    let title = format!("janus-perf {}: open()+close() throughput by opener threads", report.plan.name);
    write_file(&svg_path, &svg::render(&report.throughput, &title))?;
    eprintln!("wrote {} and {}", json_path.display(), svg_path.display());
    if report.deny.probe.succeeded > 0 {
        eprintln!("FAIL: {} opens of the denied file succeeded under load", report.deny.probe.succeeded);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
