"""Dashboards and alert rules as files: up to date, well formed, and accepted by promtool."""

from __future__ import annotations

import importlib.util
import json
import re
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
    for name in ("namespace", "release"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${datasource}", v
        assert re.fullmatch(rf"label_values\(perennial_\w+(\{{.*\}})?, {name}\)", v["query"]), v["query"]
        assert v["multi"] and v["includeAll"] and v["allValue"] == ".*", v
    assert '{namespace=~"$namespace"}' in variables["release"]["query"]  # releases of the picked namespaces


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


# Several releases scraped by one Prometheus: every query and rule keeps them apart by these labels.
RELEASE = builder().RELEASE
AGGREGATION = re.compile(
    r"\b(sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)\s*(?=\(|by\b|without\b)"
)


def release_mixing(expr: str) -> list[str]:
    """What in `expr` could add up or compare the series of different releases: an aggregation not by
    (namespace, release) (prefix form only), a vector match `on` without them or `ignoring` them, and
    functions whose result has no labels."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and regexes say nothing here
    problems = []
    for m in AGGREGATION.finditer(text):
        by = re.match(r"\s*by\s*\(([^)]*)\)", text[m.end():])
        labels = {label.strip() for label in by.group(1).split(",")} if by else set()
        if not set(RELEASE) <= labels:
            problems.append(f"{m.group(1)} at {m.start()} is not by ({', '.join(RELEASE)})")
    for m in re.finditer(r"\b(on|ignoring)\s*\(([^)]*)\)", text):
        labels = {label.strip() for label in m.group(2).split(",")}
        if set(RELEASE) - labels if m.group(1) == "on" else set(RELEASE) & labels:
            problems.append(m.group(0))
    problems += re.findall(r"\b(?:vector|absent|absent_over_time|scalar)\s*\(", text)
    return problems


def unpicked_selectors(expr: str) -> list[str]:
    """The selectors of `expr` that do not keep to the releases the dashboard's variables pick."""
    picked = [f'{label}=~"${label}"' for label in RELEASE]
    selectors = re.finditer(r"\b(?:perennial_\w+|up)\b(\{[^}]*\})?", expr)
    return [m.group(0) for m in selectors if not all(p in (m.group(1) or "") for p in picked)]


@pytest.mark.parametrize(("expr", "why"), [
    ("sum(perennial_learner_consumer_lag) > 1000", "sum"),
    ("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))", "sum"),
    ("max by (release, le) (x)", "max"),
    ("sum without (instance) (x)", "sum"),
    ("sum(x) by (namespace, release)", "sum"),
    ("absent(perennial_learner_events_consumed_total)", "absent("),
    ('(sum by (namespace, release) (rate(x{code=~"5.."}[5m])) or vector(0)) / y', "vector("),
    ("a > 0 and on () b", "on ()"),
    ("a > 0 and on (job, instance) b", "on (job, instance)"),
    ("a / ignoring (release) b", "ignoring (release)"),
])
def test_the_release_check_catches_queries_that_mix_releases(expr, why):
    assert any(why in problem for problem in release_mixing(expr)), release_mixing(expr)


def test_the_release_check_passes_per_release_queries():
    ok = "max by (namespace, release) (x) > 60 and on (release, namespace, job) count by (job, release, namespace) (y)"
    assert release_mixing(ok) == []
    assert release_mixing('up{job=~".*learn(er)?", on="sum(x)"} == 0') == []
    one_label = 'perennial_x{release=~"$release"}'
    assert unpicked_selectors(f"max by (namespace, release) ({one_label})") == [one_label]
    assert unpicked_selectors('rate(perennial_x{namespace=~"$namespace", release=~"$release", a="b"}[1m])') == []


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.name)
def test_every_panel_keeps_to_the_picked_releases_and_never_adds_two_together(path):
    for panel in json.loads(path.read_text())["panels"]:
        for target in panel["targets"]:
            where = f"{path.name} / {panel['title']} / {target['refId']}"
            assert not release_mixing(target["expr"]), (where, release_mixing(target["expr"]))
            assert not unpicked_selectors(target["expr"]), (where, unpicked_selectors(target["expr"]))
            assert target["legendFormat"].startswith("{{namespace}}/{{release}}"), where


def test_every_rule_is_per_release():
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert len(rules) == 19
    for rule in rules:
        name = rule.get("alert") or rule["record"]
        assert not release_mixing(rule["expr"]), (name, release_mixing(rule["expr"]))
        if "alert" in rule:  # the notification names the release it is about
            assert "{{ $labels.namespace }}/{{ $labels.release }}" in rule["annotations"]["summary"], name
