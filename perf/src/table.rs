//! The human-readable report printed at the end of a run.

use std::fmt::Write as _;

use crate::report::{ConfigStats, Report};
use crate::scenario::churn;

/// Formats opens/s compactly: `1.23M`, `456.7k`, `89`.
pub fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

fn us(ns: Option<u32>) -> String {
    opt(ns, |n| format!("{:.1}", n as f64 / 1e3))
}

fn ratio(v: Option<f64>) -> String {
    opt(v, |r| format!("{r:.2}"))
}

/// Lays out `rows` under `header` in aligned columns; columns whose index is
/// in `left` are left-aligned, the others right-aligned.
pub fn grid(header: &[&str], rows: &[Vec<String>], left: &[usize]) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if left.contains(&i) {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn stats_cells(s: &ConfigStats) -> Vec<String> {
    vec![
        s.config.name().to_string(),
        rate(s.opens_per_s.median),
        format!("[{} – {}]", rate(s.opens_per_s.min), rate(s.opens_per_s.max)),
        ratio(s.ratio_none),
        us(s.latency.p50),
        us(s.latency.p99),
        us(s.latency.p999),
    ]
}

/// Renders the whole report.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let p = &r.plan;
    let _ = writeln!(
        o,
        "janus-perf {} — kernel {}, {} CPUs (load avg at start {}), engine backend {}, {} repeats × {} ms (+{} ms warm-up), interleaved\n",
        p.name,
        r.host.kernel,
        r.host.cpus,
        r.host.loadavg_at_start,
        r.host.engine_backend.as_deref().unwrap_or("-"),
        p.repeats,
        p.duration.as_millis(),
        p.warmup.as_millis()
    );

    let _ = writeln!(
        o,
        "open-throughput: open()+close() of {} files in the guarded dir. opens/s median [min – max]; latency µs sampled 1/64 opens; CPU/ev = listener CPU ns per answered event",
        p.files
    );
    let rows: Vec<Vec<String>> = r
        .throughput
        .iter()
        .map(|t| {
            let mut c = vec![if t.pinned { "pinned" } else { "unpinned" }.to_string(), t.threads.to_string()];
            c.extend(stats_cells(&t.stats));
            c.push(opt(t.stats.cpu_ns_per_event, |s| format!("{:.0}", s.median)));
            c.push(opt(t.stats.events_per_run, rate));
            c.push(opt(t.stats.batch_mean, |b| format!("{b:.2}")));
            c
        })
        .collect();
    o.push_str(&grid(
        &["pin", "thr", "config", "opens/s", "[min – max]", "×none", "p50", "p99", "p999", "CPU/ev", "ev/run", "batch"],
        &rows,
        &[0, 2, 4],
    ));

    o.push_str("\nengine vs reference (ratio of median opens/s, and of median listener CPU per event)\n");
    let rows: Vec<Vec<String>> = r
        .comparisons
        .iter()
        .map(|c| {
            vec![
                if c.pinned { "pinned" } else { "unpinned" }.to_string(),
                c.threads.to_string(),
                c.config.name().to_string(),
                ratio(c.opens_vs_reference),
                ratio(c.cpu_vs_reference),
            ]
        })
        .collect();
    o.push_str(&grid(&["pin", "thr", "config", "opens/s ÷ ref", "CPU/ev ÷ ref"], &rows, &[0, 2]));

    o.push_str("\nunguarded-overhead: files on the same filesystem outside every guarded path\n");
    let rows: Vec<Vec<String>> = r
        .unguarded
        .iter()
        .map(|u| {
            let mut c = vec![u.threads.to_string()];
            c.extend(stats_cells(&u.stats));
            c
        })
        .collect();
    o.push_str(&grid(&["thr", "config", "opens/s", "[min – max]", "×none", "p50", "p99", "p999"], &rows, &[1, 3]));

    o.push_str(&format!(
        "\nfirst-open: the first open of each of {} files on the guarded mount (outside guarded paths), 1 opener\n",
        r.plan.first_open_files
    ));
    let rows: Vec<Vec<String>> = r.first_open.iter().map(stats_cells).collect();
    o.push_str(&grid(&["config", "opens/s", "[min – max]", "×none", "p50", "p99", "p999"], &rows, &[0, 2]));

    o.push_str("\ndecision-scale: one guard (Policy::compile; decide = trie walk, scan = every rule, for contrast)\n");
    let rows: Vec<Vec<String>> = r
        .scale
        .rules
        .iter()
        .map(|s| {
            vec![
                s.rules.to_string(),
                format!("{:.2}", s.compile_ms),
                s.rss_delta_kib.to_string(),
                format!("{:.0}", s.decide_ns),
                format!("{:.0}", s.scan_ns),
            ]
        })
        .collect();
    o.push_str(&grid(&["rules", "compile ms", "RSS +KiB", "decide ns", "scan ns"], &rows, &[]));
    o.push_str(&format!(
        "\ndecision-scale: many guards ({} rules each; each event decided by its own guard)\n",
        p.rules_per_guard
    ));
    let rows: Vec<Vec<String>> = r
        .scale
        .guards
        .iter()
        .map(|g| {
            vec![
                g.guards.to_string(),
                format!("{:.2}", g.compile_ms),
                g.rss_delta_kib.to_string(),
                format!("{:.0}", g.decide_ns),
                match &g.apply {
                    Some(a) => format!(
                        "{} applied in {:.1} ms ({:.2} ms each), {} marks, +{} fds, +{} KiB",
                        a.applied, a.total_ms, a.per_guard_ms, a.marks, a.fds_delta, a.rss_delta_kib
                    ),
                    None => "skipped (see notes)".into(),
                },
            ]
        })
        .collect();
    o.push_str(&grid(&["guards", "compile ms", "RSS +KiB", "decide ns", "engine apply"], &rows, &[4]));

    let _ = writeln!(o, "\n{}", if r.churn.run { &r.churn.note } else { churn::NOT_RUN });
    let d = &r.deny;
    let _ = writeln!(
        o,
        "deny-correctness under load: {} of {} opens of the denied file succeeded ({} EPERM, {} other errors) — {}",
        d.probe.succeeded,
        d.probe.attempts,
        d.probe.denied,
        d.probe.other_errors,
        if d.passed { "PASS" } else { "FAIL" }
    );

    o.push_str("\ntargets (issue 5)\n");
    for t in &r.targets {
        let mark = match t.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "n/a",
        };
        let _ = writeln!(o, "  [{mark:^7}] {}: {} (goal {})", t.name, opt(t.value, |v| format!("{v:.2}")), t.goal);
    }
    if !r.notes.is_empty() {
        o.push_str("\nnotes\n");
        for n in &r.notes {
            let _ = writeln!(o, "  - {n}");
        }
    }
    let _ = writeln!(o, "\nwall time {:.1} s", r.wall_s);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_compact() {
        assert_eq!(rate(1_234_567.0), "1.23M");
        assert_eq!(rate(130_449.0), "130.4k");
        assert_eq!(rate(999.4), "999");
    }

    #[test]
    fn grid_aligns_columns() {
        let g = grid(&["name", "n"], &[vec!["a".into(), "1".into()], vec!["long-name".into(), "12345".into()]], &[0]);
        let lines: Vec<&str> = g.lines().collect();
        assert_eq!(lines[0], "name           n");
        assert_eq!(lines[1], "a              1");
        assert_eq!(lines[2], "long-name  12345");
    }
}
