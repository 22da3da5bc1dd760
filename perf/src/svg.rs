//! An SVG line chart of open-throughput: opens/s by opener thread count, one
//! line per configuration, one panel per pinning.

use std::fmt::Write as _;

use crate::report::ThroughputRow;
use crate::scenario::Config;
use crate::table;

const PANEL_W: f64 = 460.0;
const PANEL_H: f64 = 300.0;
const MARGIN_L: f64 = 70.0;
const MARGIN_T: f64 = 50.0;
const MARGIN_B: f64 = 70.0;
const LEGEND_W: f64 = 200.0;

fn color(c: Config) -> &'static str {
    match c {
        Config::None => "#7f7f7f",
        Config::Reference => "#d62728",
        Config::Engine => "#1f77b4",
        Config::EngineUncached => "#2ca02c",
        Config::EngineUncachedNoAudit => "#9467bd",
    }
}

/// The smallest 1, 2 or 5 × 10^k that is at least `v`.
pub fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|x| *x >= v * (1.0 - 1e-12)).unwrap_or(10.0 * mag)
}

/// A logarithmic y axis from a power of ten to a nice ceiling, so that
/// ratios between configurations read as equal distances.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    /// The axis covering `values` (non-positive values ignored).
    pub fn fit(values: impl IntoIterator<Item = f64>) -> LogAxis {
        let (mut min, mut max) = (f64::INFINITY, 0.0f64);
        for v in values.into_iter().filter(|v| *v > 0.0 && v.is_finite()) {
            min = min.min(v);
            max = max.max(v);
        }
        if max <= 0.0 {
            return LogAxis { lo: 1.0, hi: 10.0 };
        }
        let lo = 10f64.powf(min.log10().floor());
        let hi = nice_ceiling(max).max(lo * 10.0);
        LogAxis { lo, hi }
    }

    /// Position of `v` on the axis, 0.0 (bottom) to 1.0 (top).
    pub fn frac(&self, v: f64) -> f64 {
        if v <= 0.0 {
            return 0.0;
        }
        ((v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())).clamp(0.0, 1.0)
    }

    /// Tick values: 1, 2 and 5 × 10^k within the axis.
    pub fn ticks(&self) -> Vec<f64> {
        let mut out = Vec::new();
        let mut decade = self.lo;
        while decade <= self.hi * (1.0 + 1e-9) {
            for m in [1.0, 2.0, 5.0] {
                let v = decade * m;
                if v <= self.hi * (1.0 + 1e-9) {
                    out.push(v);
                }
            }
            decade *= 10.0;
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Renders the chart of `rows` with `title` on top.
pub fn render(rows: &[ThroughputRow], title: &str) -> String {
    let pinnings: Vec<bool> = [false, true].into_iter().filter(|p| rows.iter().any(|r| r.pinned == *p)).collect();
    let panels = pinnings.len().max(1) as f64;
    let width = MARGIN_L + panels * (PANEL_W + MARGIN_L);
    let configs = configs(rows);
    let per_row = (((width - MARGIN_L) / LEGEND_W) as usize).max(1);
    let legend_rows = configs.len().div_ceil(per_row).max(1);
    let height = MARGIN_T + PANEL_H + MARGIN_B + 18.0 * (legend_rows - 1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{MARGIN_L}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let axis = LogAxis::fit(rows.iter().flat_map(|r| [r.stats.opens_per_s.min, r.stats.opens_per_s.max]));
    for (pi, pinned) in pinnings.iter().enumerate() {
        let x0 = MARGIN_L + pi as f64 * (PANEL_W + MARGIN_L);
        panel(&mut s, rows, *pinned, x0, &axis);
    }
    // Legend under the panels, wrapped to the width.
    for (i, c) in configs.iter().enumerate() {
        let x = MARGIN_L + (i % per_row) as f64 * LEGEND_W;
        let y = height - 18.0 * (legend_rows - i / per_row) as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            x + 24.0,
            color(*c),
            x + 30.0,
            y + 4.0,
            c.name()
        );
    }
    s.push_str("</svg>\n");
    s
}

fn configs<'a>(rows: impl IntoIterator<Item = &'a ThroughputRow>) -> Vec<Config> {
    let mut c: Vec<Config> = rows.into_iter().map(|r| r.stats.config).collect();
    c.sort();
    c.dedup();
    c
}

fn panel(s: &mut String, rows: &[ThroughputRow], pinned: bool, x0: f64, axis: &LogAxis) {
    let rows: Vec<&ThroughputRow> = rows.iter().filter(|r| r.pinned == pinned).collect();
    let mut threads: Vec<usize> = rows.iter().map(|r| r.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    let y0 = MARGIN_T + PANEL_H;
    let step = PANEL_W / threads.len().max(1) as f64;
    let x_of = |t: usize| {
        let i = threads.iter().position(|&x| x == t).unwrap_or(0);
        x0 + step * (i as f64 + 0.5)
    };
    let y_of = |v: f64| y0 - axis.frac(v) * PANEL_H;
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"##,
        x0 + PANEL_W / 2.0,
        MARGIN_T - 10.0,
        if pinned { "pinned to one CPU (CPU cost)" } else { "unpinned (what a deployment sees)" }
    );
    // Grid and y labels at 1, 2 and 5 × 10^k.
    for v in axis.ticks() {
        let y = y_of(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#e0e0e0"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            x0 + PANEL_W,
            x0 - 6.0,
            y + 4.0,
            table::rate(v)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{x0}" y1="{y0}" x2="{}" y2="{y0}" stroke="#333"/><line x1="{x0}" y1="{MARGIN_T}" x2="{x0}" y2="{y0}" stroke="#333"/>"##,
        x0 + PANEL_W
    );
    for &t in &threads {
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{t}</text>"#, x_of(t), y0 + 16.0);
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">opener threads (opens/s, log scale; median, bars: min–max)</text>"#,
        x0 + PANEL_W / 2.0,
        y0 + 34.0
    );
    for c in configs(rows.iter().copied()) {
        let mut pts: Vec<(f64, &ThroughputRow)> =
            rows.iter().filter(|r| r.stats.config == c).map(|r| (x_of(r.threads), *r)).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let points: Vec<String> =
            pts.iter().map(|(x, r)| format!("{x:.1},{:.1}", y_of(r.stats.opens_per_s.median))).collect();
        let col = color(c);
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{col}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            c.name()
        );
        for (x, r) in &pts {
            let o = &r.stats.opens_per_s;
            let _ = writeln!(
                s,
                r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{col}"/><circle cx="{x:.1}" cy="{:.1}" r="3.5" fill="{col}"><title>{} {} thr: {} opens/s</title></circle>"#,
                y_of(o.min),
                y_of(o.max),
                y_of(o.median),
                c.name(),
                r.threads,
                table::rate(o.median)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openers::ProbeCount;
    use crate::report::{ConfigStats, Latency};
    use crate::stats::Spread;

    fn row(pinned: bool, threads: usize, config: Config, v: f64) -> ThroughputRow {
        ThroughputRow {
            pinned,
            threads,
            stats: ConfigStats {
                config,
                opens_per_s: Spread { median: v, min: v * 0.9, max: v * 1.1 },
                runs: vec![v],
                ratio_none: None,
                latency: Latency::default(),
                cpu_ns_per_event: None,
                events_per_run: None,
                batch_mean: None,
                setup_ms: None,
                probe: ProbeCount::default(),
            },
        }
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(1.3e6), 2e6);
        assert_eq!(nice_ceiling(1e6), 1e6);
        assert_eq!(nice_ceiling(4.2e5), 5e5);
        assert_eq!(nice_ceiling(6e5), 1e6);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }

    #[test]
    fn log_axis() {
        let a = LogAxis::fit([42_000.0, 1_300_000.0, -1.0]);
        assert_eq!(a, LogAxis { lo: 10_000.0, hi: 2_000_000.0 });
        assert_eq!(a.ticks(), vec![1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6]);
        assert_eq!(a.frac(1e4), 0.0);
        assert_eq!(a.frac(2e6), 1.0);
        assert!((a.frac(2e5) - 0.5654).abs() < 1e-3);
    }

    #[test]
    fn chart_has_one_line_per_config_and_panel() {
        let mut rows = Vec::new();
        for pinned in [false, true] {
            for t in [1, 4] {
                rows.push(row(pinned, t, Config::None, 1e6));
                rows.push(row(pinned, t, Config::Reference, 1.2e5));
            }
        }
        let svg = render(&rows, "a <b> & c");
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert_eq!(svg.matches("<circle").count(), 8);
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert!(svg.contains("pinned to one CPU"));
        // The top of the axis is the nice ceiling of the largest max.
        assert!(svg.contains(">2.00M<"));
    }
}
