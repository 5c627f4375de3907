"""The Grafana dashboard and the Prometheus alert rules query what a live server exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from polyclip.service.config import Settings
from tests.live import live_server

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "polyclip.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
FROM_PROMETHEUS = {"up"}  # made by Prometheus itself, not by the server
_PROMQL = {"and", "or", "unless", "bool", "offset"}  # operators that look like names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, label names
    (matchers, ``by``/``without`` lists, ``label_values`` arguments) or numbers."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,[^)]*\)", r"\1", expr)
    names = re.findall(r"\b([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)
    return {n for n in names if n not in _PROMQL and not re.fullmatch(r"\d.*|e\d+", n)}


def queries() -> dict[str, str]:
    dash = json.loads(DASHBOARD.read_text())
    found = {f"panel {p['title']!r} {t['refId']}": t["expr"] for p in dash["panels"]
             for t in p["targets"]}  # fmt: skip
    found |= {f"variable {v['name']}": v["query"] for v in dash["templating"]["list"]}
    rules = yaml.safe_load(ALERTS.read_text())["groups"]
    found |= {f"alert {r['alert']}": r["expr"] for g in rules for r in g["rules"]}
    return found


def test_every_queried_metric_exists_on_a_live_server(
    make_settings: Callable[..., Settings],
) -> None:
    with live_server(make_settings()) as base:
        httpx.post(f"{base}/embed/text", json={"model": "student", "texts": ["a dog"]})
        httpx.post(f"{base}/collections", json={"name": "d", "model": "teacher"})
        httpx.post(f"{base}/collections/d/points", json={"items": [{"text": "a dog"}]})
        httpx.post(f"{base}/collections/d/search",
                   json={"query": {"text": "dog"}, "shadow": "student"})  # fmt: skip
        httpx.get(f"{base}/ready")
        text = httpx.get(f"{base}/metrics").text
    exported = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))
    samples = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", text, flags=re.M))
    for where, expr in queries().items():
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        for name in names - FROM_PROMETHEUS:
            assert name in samples or name in exported, f"{where} queries {name}, not exported"


def test_the_dashboard_and_rules_are_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "polyclip" and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert panel["datasource"]["uid"] == "prometheus" and panel["targets"]
    rules = yaml.safe_load(ALERTS.read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule), rule
        assert rule["labels"]["severity"] in ("warning", "critical")
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"PolyclipHighErrorRate", "PolyclipQueueSaturated", "PolyclipNotReady"} <= names
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["uid"] == "prometheus"
    if shutil.which("promtool"):  # Debian's prometheus package has it
        done = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_compose_provisions_grafana_with_the_dashboard() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    mounts = {v.split(":")[1]: ROOT / v.split(":")[0] for v in grafana["volumes"] if "./" in v}
    assert (mounts["/var/lib/grafana/dashboards"] / "polyclip.json").is_file()
    provider = yaml.safe_load(
        (mounts["/etc/grafana/provisioning"] / "dashboards" / "polyclip.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    prometheus = compose["services"]["prometheus"]
    assert any(v.endswith("/etc/prometheus/alerts.yml:ro") for v in prometheus["volumes"])
