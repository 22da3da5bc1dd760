#!/usr/bin/env python3
"""Writes deploy/grafana/janus.json (Grafana dashboard, schemaVersion 39).

Edit the panel list here and re-run `python3 deploy/grafana/generate.py`;
`--check` fails when the checked-in JSON differs (the deploy tests run it).
Every expression is evaluated against a real Prometheus by
controller/tests/deploy.rs, so a renamed metric fails the build.
"""
import json
import os
import sys

R = "$__rate_interval"
DS = {"type": "prometheus", "uid": "${datasource}"}

# (title, unit, [(legend, expr)], width)  -- rows of panels, 24 units wide
ROWS = [
    ("Decisions", [
        ("Decisions/s by guard and decision", "ops",
         [("{{guard}} {{decision}}", f"sum by (guard, decision) (rate(janus_events_total[{R}]))")], 12),
        ("Denials/s by guard and event", "ops",
         [("{{guard}} {{event}}", f'sum by (guard, event) (rate(janus_events_total{{decision="deny"}}[{R}]))')], 12),
        ("Decision latency per batch", "s",
         [("p50", f"histogram_quantile(0.5, sum by (le) (rate(janus_decision_seconds_bucket[{R}])))"),
          ("p99", f"histogram_quantile(0.99, sum by (le) (rate(janus_decision_seconds_bucket[{R}])))"),
          ("p99 {{instance}}", f"histogram_quantile(0.99, sum by (instance, le) (rate(janus_decision_seconds_bucket[{R}])))")], 12),
        ("Batch size (events per read)", "short",
         [("p50", f"histogram_quantile(0.5, sum by (le) (rate(janus_batch_size_bucket[{R}])))"),
          ("p99", f"histogram_quantile(0.99, sum by (le) (rate(janus_batch_size_bucket[{R}])))"),
          ("mean", f"sum(rate(janus_batch_size_sum[{R}])) / sum(rate(janus_batch_size_count[{R}]))")], 12),
    ]),
    ("Agents", [
        ("Overflows, dropped audit records, stale responses", "short",
         [("overflows {{instance}}", f"sum by (instance) (increase(janus_queue_overflows_total[{R}]))"),
          ("audit dropped {{instance}}", f"sum by (instance) (increase(janus_audit_dropped_total[{R}]))"),
          ("stale {{instance}}", f"sum by (instance) (increase(janus_stale_responses_total[{R}]))")], 12),
        ("Guards and marks per node", "short",
         [("guards {{instance}}", "sum by (instance) (janus_guards_active)"),
          ("marks {{instance}}", "sum by (instance) (janus_marks_active)")], 12),
        ("Containers by state per node", "short",
         [("{{instance}} {{state}}", "sum by (instance, state) (janus_agent_containers)")], 8),
        ("Kernel cache inserts/s", "ops",
         [("{{instance}}", f"sum by (instance) (rate(janus_decision_cache_inserts_total[{R}]))")], 8),
        ("Agents up / backend", "short",
         [("agents up", 'sum(up{job="janusd"})'),
          ("{{instance}} {{backend}}", "max by (instance, backend) (janus_backend_info)")], 8),
    ]),
    ("Controller", [
        ("Reconciles/s by result", "ops",
         [("{{result}}", f"sum by (result) (rate(janus_controller_reconciles_total[{R}]))")], 8),
        ("Reconcile latency", "s",
         [("p99", f"histogram_quantile(0.99, sum by (le) (rate(janus_controller_reconcile_seconds_bucket[{R}])))")], 8),
        ("Push latency to agents (p99 by method)", "s",
         [("{{method}}", f"histogram_quantile(0.99, sum by (method, le) (rate(janus_controller_push_seconds_bucket[{R}])))"),
          ("agent side {{method}}", f"histogram_quantile(0.99, sum by (method, le) (rate(janus_agent_request_seconds_bucket[{R}])))")], 8),
        ("Guards, pods, leader", "short",
         [("guards", "max(janus_controller_guards)"),
          ("pods {{state}}", "max by (state) (janus_controller_pods)"),
          ("leader {{instance}}", "max by (instance) (janus_controller_leader)")], 12),
        ("Errors/s", "ops",
         [("marking {{op}}", f"sum by (op) (rate(janus_errors_total[{R}]))"),
          ("reconcile", f"sum(rate(janus_controller_reconcile_errors_total[{R}]))"),
          ("push {{method}}", f"sum by (method) (rate(janus_controller_push_errors_total[{R}]))"),
          ("agent {{method}} {{code}}", f'sum by (method, code) (rate(janus_agent_requests_total{{code!="OK"}}[{R}]))'),
          ("drift {{kind}}", f"sum by (kind) (rate(janus_controller_drift_total[{R}]))")], 12),
    ]),
]


def main():
    panels, pid, y = [], 1, 0
    for row_title, row in ROWS:
        panels.append({"type": "row", "title": row_title, "id": pid, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid += 1
        y += 1
        x = 0
        for title, unit, targets, w in row:
            if x + w > 24:
                x, y = 0, y + 8
            panels.append({
                "type": "timeseries", "title": title, "id": pid, "datasource": DS,
                "gridPos": {"h": 8, "w": w, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": unit, "custom": {"drawStyle": "line", "fillOpacity": 10}}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                            "tooltip": {"mode": "multi", "sort": "desc"}},
                "targets": [{"datasource": DS, "expr": e, "legendFormat": l, "refId": chr(ord("A") + i), "range": True}
                            for i, (l, e) in enumerate(targets)],
            })
            pid += 1
            x += w
        y += 8
    dash = {
        "title": "Janus",
        "uid": "janus-overview",
        "description": "Janus file-access enforcement: agents (janusd) and controller. Source: deploy/grafana/generate.py",
        "tags": ["janus", "security"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "options": [],
        }]},
        "annotations": {"list": []},
        "panels": panels,
    }
    text = json.dumps(dash, indent=2) + "\n"
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "janus.json")
    if "--check" in sys.argv:
        if open(out).read() != text:
            sys.exit("deploy/grafana/janus.json is out of date: run python3 deploy/grafana/generate.py")
        return
    open(out, "w").write(text)


if __name__ == "__main__":
    main()
