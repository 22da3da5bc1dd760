#!/usr/bin/env python3
"""Plots the Grafana dashboard's queries from the data the deploy test kept.

controller/tests/deploy.rs (prometheus_evaluates_every_dashboard_and_alert_query)
writes target/deploy-test/prometheus-data.json: for every dashboard target,
the Prometheus query_range result over the test run (1 s scrape interval).
This script lays the panels out like deploy/grafana/janus.json and writes a
PNG (default deploy/grafana/janus-dashboard.png).

Needs matplotlib (PyPI); ci/deploy/install-tools.sh --plot makes a venv with it:
  /var/cache/janus-tools/plot-venv/bin/python ci/deploy/plot-dashboard.py [DATA] [OUT.png]
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
data_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/deploy-test/prometheus-data.json")
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "deploy/grafana/janus-dashboard.png")
dash = json.load(open(os.path.join(ROOT, "deploy/grafana/janus.json")))
series = {s["expr"]: s["result"] for s in json.load(open(data_path))}

panels = [p for p in dash["panels"] if p["type"] == "timeseries"]
cols = 3
rows = (len(panels) + cols - 1) // cols
fig, axes = plt.subplots(rows, cols, figsize=(18, 3.2 * rows), squeeze=False)
t0 = min((float(v[0][0]) for r in series.values() for s in r for v in [s["values"]] if v), default=0)


def legend(fmt, metric):
    out = fmt
    for k, v in metric.items():
        out = out.replace("{{" + k + "}}", v)
    return out.replace("{{instance}}", "").strip()


for ax, p in zip(axes.flat, panels):
    n = 0
    for t in p["targets"]:
        for s in series.get(t["expr"], []):
            xs = [float(v[0]) - t0 for v in s["values"]]
            ys = [float(v[1]) for v in s["values"]]
            ax.plot(xs, ys, linewidth=1, label=legend(t["legendFormat"], s["metric"])[:40])
            n += 1
    unit = p["fieldConfig"]["defaults"].get("unit", "")
    ax.set_title(p["title"] + (f" [{unit}]" if unit not in ("short", "") else ""), fontsize=9)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("seconds since Prometheus start", fontsize=7)
    if n == 0:
        ax.text(0.5, 0.5, "no series (recorded only on failures)", ha="center", va="center", transform=ax.transAxes, fontsize=8, color="gray")
    elif n <= 8:
        ax.legend(fontsize=6, loc="upper left")
    else:
        ax.text(0.01, 0.95, f"{n} series", transform=ax.transAxes, fontsize=7, va="top")
for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
fig.suptitle("Janus dashboard queries, from the deploy test's Prometheus (janusd standalone under load, janusd serve, janus-controller)", fontsize=11)
fig.tight_layout(rect=(0, 0, 1, 0.98))
fig.savefig(out, dpi=80)
print(out)
