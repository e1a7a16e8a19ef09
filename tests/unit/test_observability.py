"""Dashboards and alert rules as files: up to date, well formed, and accepted by promtool."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "helm" / "perennial" / "dashboards"
RULES = ROOT / "helm" / "perennial" / "rules" / "perennial-rules.yaml"


def builder():
    spec = importlib.util.spec_from_file_location("build_dashboards", ROOT / "observability" / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_are_what_the_builder_writes():
    b = builder()
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(b.DASHBOARDS)
    for name in b.DASHBOARDS:
        assert (DASHBOARDS / name).read_text() == b.render(name), f"{name} is stale: run `make dashboards`"


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.name)
def test_dashboard_structure(path):
    d = json.loads(path.read_text())
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for panel in d["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"panel {panel['title']!r} has no unit"
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
        assert "perennial_" in " ".join(t["expr"] for t in panel["targets"])


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "promtool is not installed; `make test` installs Debian's prometheus package"
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=ROOT)


def test_rules_pass_promtool_check():
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0 and "SUCCESS: 19 rules found" in r.stdout, r.stdout + r.stderr


def test_rules_unit_tests_pass():
    r = promtool("test", "rules", "tests/promtool/rules-test.yaml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_unit_test():
    text = RULES.read_text()
    alerts = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("- alert:")]
    tests = (ROOT / "tests" / "promtool" / "rules-test.yaml").read_text()
    assert len(alerts) == 19
    assert all(f"alertname: {a}" in tests for a in alerts)


def test_every_alert_links_its_runbook_section_which_says_what_to_check_and_do():
    rules = yaml.safe_load(RULES.read_text())
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    sections = {s.split("\n", 1)[0].strip(): s for s in runbook.split("\n## ")[1:]}
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert alerts and len(sections) == len(alerts)
    for rule in alerts:
        name = rule["alert"]
        assert rule["annotations"]["runbook_url"] == f"https://github.com/perennial-ml/perennial/blob/main/docs/runbook.md#{name.lower()}"
        assert name in sections, f"docs/runbook.md has no section {name}"
        assert all(part in sections[name] for part in ("**Means**", "**Check**", "**Do**")), name
