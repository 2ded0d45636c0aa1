"""Checks that the Grafana dashboard and the alert rules only use metrics Lepus exports.

    python3 metrics_check.py --dashboard grafana/lepus.json --rules prometheus/alerts.yaml

Allowed: the operator contract's metric names (histograms with _bucket/_sum/_count), `up`,
and RabbitMQ's own rabbitmq_* metrics. The dashboard must also show every contract metric.
Exits 1 and names each problem otherwise. Used by deploy/check.
"""

import argparse
import json
import re
import sys

import yaml

COUNTERS_AND_GAUGES = {
    "lepus_jobs_total",
    "lepus_jobs_in_flight",
    "lepus_worker_concurrency",
    "lepus_broker_connected",
    "lepus_broker_reconnects_total",
    "lepus_batches_completed_total",
    "lepus_scheduler_firings_total",
    "lepus_scheduler_misfires_total",
    "lepus_scheduler_leader",
    "lepus_scheduler_next_fire_timestamp_seconds",
}
HISTOGRAMS = {"lepus_job_duration_seconds"}
CONTRACT = COUNTERS_AND_GAUGES | HISTOGRAMS

KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2",
}
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_family(name):
    """The contract name a series name belongs to, or None if it is not allowed."""
    if name in COUNTERS_AND_GAUGES or name == "up" or re.fullmatch(r"rabbitmq_[a-z0-9_]+", name):
        return name
    for hist in HISTOGRAMS:
        if name in (hist + "_bucket", hist + "_sum", hist + "_count"):
            return hist
    return None


def metric_names(expr):
    """The metric names a PromQL expression (with Grafana variables) selects."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # strings
    s = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", "", s)  # Grafana variables
    s = re.sub(r"label_values\(\s*([^,()]*(?:\{[^}]*\})?)\s*,\s*[A-Za-z_]\w*\s*\)", r"\1", s)
    s = re.sub(r"label_values\(\s*[A-Za-z_]\w*\s*\)", "", s)
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = []
    for m in IDENT.finditer(s):
        word = m.group(0)
        if word.lower() in KEYWORDS:
            continue
        if re.match(r"\s*\(", s[m.end():]):  # a function or aggregation
            continue
        if m.start() > 0 and (s[m.start() - 1].isdigit() or s[m.start() - 1] == "."):
            continue  # the exponent or unit of a number, e.g. 1e3
        names.append(word)
    return names


def dashboard_exprs(node, where="dashboard"):
    """(location, expr) for every query in a dashboard: panel targets and query variables."""
    if isinstance(node, dict):
        title = node.get("title") or node.get("name") or where
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield title, value
            elif key in ("query", "definition") and isinstance(value, str) and "label_values" in value:
                yield title, value
            else:
                yield from dashboard_exprs(value, title)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item, where)


def check_dashboard(path, problems):
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        problems.append(f"{path}: not valid JSON: {e}")
        return 0
    panels = [p for p in dash.get("panels", []) if p.get("type") != "row"]
    if not panels:
        problems.append(f"{path}: no panels")
    ids = [p.get("id") for p in dash.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append(f"{path}: panel ids are not unique")
    for p in panels:
        if not p.get("targets"):
            problems.append(f"{path}: panel {p.get('title')!r} has no query")
    used = set()
    count = 0
    for where, expr in dashboard_exprs(dash):
        count += 1
        names = metric_names(expr)
        if not names:
            problems.append(f"{path}: {where!r}: no metric in {expr!r}")
        for name in names:
            family = metric_family(name)
            if family is None:
                problems.append(f"{path}: {where!r}: unknown metric {name!r} in {expr!r}")
            else:
                used.add(family)
    for missing in sorted(CONTRACT - used):
        problems.append(f"{path}: no panel shows {missing}")
    return count


def check_rules(path, problems):
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{path}: not valid YAML: {e}")
        return 0
    count = 0
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            count += 1
            name = rule.get("alert") or rule.get("record")
            for metric in metric_names(rule.get("expr", "")):
                if metric_family(metric) is None:
                    problems.append(f"{path}: {name}: unknown metric {metric!r}")
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboard", action="append", default=[])
    parser.add_argument("--rules", action="append", default=[])
    args = parser.parse_args()
    problems = []
    queries = sum(check_dashboard(p, problems) for p in args.dashboard)
    rules = sum(check_rules(p, problems) for p in args.rules)
    for problem in problems:
        print(f"metrics: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{queries} dashboard queries and {rules} rules use only contract metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
