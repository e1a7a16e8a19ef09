"""A real Prometheus scrapes a live `perennial serve` and `perennial learn` during a run on the real
broker, as two releases (payments/cards and risk/wires: one Prometheus, several teams' releases);
every query of every dashboard panel must return series of the release its variables pick and only
those, no alert rule may add up or compare two releases, every rule must evaluate cleanly, and both
expositions must pass `promtool check metrics`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from streams.broker import free_port
from streams.simulator import FEATURES

from .conftest import SIM, produce_stream, producer, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "helm" / "perennial" / "dashboards").glob("*.json"))
RULES = ROOT / "helm" / "perennial" / "rules" / "perennial-rules.yaml"
# (namespace, release): both scrape the same live server and learner, as two releases would their own
CARDS, WIRES = ("payments", "cards"), ("risk", "wires")


def panel_queries():
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                yield f"{path.stem} / {panel['title']} / {target['refId']}", target["expr"]


def pick(expr: str, namespace: str, release: str) -> str:
    """`expr` as Grafana sends it with the dashboard's variables set to one value each."""
    return expr.replace("$namespace", namespace).replace("$release", release)


def scrape(release: tuple[str, str], component: str, targets: list[str]) -> dict:
    """A scrape job named and labelled as the chart's ServiceMonitor names and labels its targets."""
    namespace, name = release
    return {
        "job_name": f"{name}-perennial-{component}",
        "static_configs": [{"targets": targets}],
        "relabel_configs": [{"target_label": "namespace", "replacement": namespace},
                            {"target_label": "release", "replacement": name}],
    }


@pytest.fixture
def prometheus(tmp_path, stack):
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed; `make test` installs Debian's prometheus package"
    port = free_port()
    server, learner = f"127.0.0.1:{stack.serve_port}", f"127.0.0.1:{stack.metrics_port}"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            scrape(CARDS, "server", [server]),
            scrape(CARDS, "learner", [learner]),
            scrape(WIRES, "server", [server]),
            scrape(WIRES, "learner", [learner, f"127.0.0.1:{free_port()}"]),  # and a learner nobody runs
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=log,
        )
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def query(prom: str, expr: str) -> list:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def releases(series: list) -> set[tuple[str | None, str | None]]:
    return {(s["metric"].get("namespace"), s["metric"].get("release")) for s in series}


def as_bool(expr: str) -> str:
    """`expr` with each comparison a `bool` one: every series the alert looks at, whatever its value,
    with the labels it would fire with (label matchers and strings are left alone)."""
    parts = re.split(r'("(?:[^"\\]|\\.)*"|\{[^}]*\})', expr)
    return "".join(part if i % 2 else re.sub(r"(==|!=|>=|<=|>|<)", r"\1 bool", part) for i, part in enumerate(parts))


def test_every_dashboard_panel_has_data_of_its_release_only_and_rules_evaluate_per_release(stack, prometheus):
    # the late-label panels: the server logs what it scores, the learner joins labels to it
    stack.env.update({"PERENNIAL_SERVE__PREDICTION_LOG": "true", "PERENNIAL_JOIN__ENABLED": "true"})
    stack.start("serve")
    # this test is about the dashboards: rounds stay small and candidates are served on thinner evidence,
    # so that a version is published soon after the stream is read
    stack.env.update({"PERENNIAL_LEARN__ROUND_MAX_EVENTS": "2048", "PERENNIAL_LEARN__GATES__CONFIDENCE": "0.6",
                      "PERENNIAL_LEARN__GATES__MIN_RECENT_POSITIVES": "10"})
    stack.start("learn")
    stack.wait_ready()
    wait_for(lambda: len(query(prometheus, "up == 1")) == 4, 60, "both releases' server and learner up")
    stop = threading.Event()
    x, _ = SIM.pattern_sets(46, 1)["card_testing"]

    def traffic():
        with httpx.Client(base_url=stack.url) as c:
            i = 0
            while not stop.wait(0.01):
                c.post("/v1/predict", content=orjson.dumps({"id": f"obs-{i}", "time": 1_764_000_000 + i,
                                                            "features": dict(zip(FEATURES, x[i % len(x)].tolist()))}))
                i += 1

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    produced = produce_stream(stack.bootstrap, stack.topic, 45, 49)
    p = producer(stack.bootstrap, stack.topic)
    p.send(stack.topic, value=b"not json")
    for i in range(0, 40, 2):  # labels for scored ids, a chargeback each; one for an id nobody scored
        p.send(f"{stack.topic}.labels", value=orjson.dumps({"id": f"obs-{i}", "label": 1, "source": "chargeback"}))
    p.send(f"{stack.topic}.labels", value=orjson.dumps({"id": "nobody", "label": 1}))
    p.flush()
    wait_for(lambda: stack.learner_metric("perennial_learner_events_consumed_total") >= len(produced) + 1, 120, "learner to consume")
    wait_for(lambda: stack.learner_metric("perennial_learner_versions_published_total") >= 1, 120, "a published version")
    time.sleep(6)  # a few scrapes after the last round, so every rate window has two samples
    stop.set()

    # the dashboards' variables list both releases, and a namespace's releases only
    for path in DASHBOARDS:
        variables = {v["name"]: v["query"] for v in json.loads(path.read_text())["templating"]["list"]}
        for name, namespace, expected in (("namespace", ".*", {CARDS[0], WIRES[0]}), ("release", CARDS[0], {CARDS[1]})):
            label_values = re.fullmatch(r"label_values\((.*), (\w+)\)", pick(variables[name], namespace, ".*"))
            selector, label = label_values.groups()
            r = httpx.get(f"{prometheus}/api/v1/label/{label}/values", params={"match[]": selector}).json()
            assert set(r["data"]) == expected, (path.name, name, r)

    # one release picked: its series and no other's; all picked (".*"): each apart, none added together
    expected = {CARDS: {CARDS}, (".*", ".*"): {CARDS, WIRES}}
    picks = [(name, picked, pick(expr, *picked)) for name, expr in panel_queries() for picked in expected]
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda p: releases(query(prometheus, p[2])), picks))
    empty = [(name, picked) for (name, picked, _), f in zip(picks, found) if not f]
    wrong = [(name, picked, f) for (name, picked, _), f in zip(picks, found) if f and f != expected[picked]]
    assert not empty, f"panels without data: {empty}"
    assert not wrong, f"panels mixing releases: {wrong}"
    assert sum(1 for _ in panel_queries()) >= 30

    groups = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 19 and all(r["health"] == "ok" for r in rules), rules
    # every alert looks at each release apart: its series (made bool, so that they come whatever their
    # values) carry a release, and both releases where they come at all
    looked = {}
    for rule in (r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]):
        found = releases(query(prometheus, as_bool(rule["expr"])))
        assert found in (set(), {CARDS, WIRES}), (rule["alert"], found)
        looked[rule["alert"]] = found
    # (but NotConsuming: its `unless paused == bool 1` leaves nothing)
    assert [alert for alert, found in looked.items() if not found] == ["PerennialLearnerNotConsuming"], looked
    # the learner nobody runs is in wires alone: its alert is pending for wires and not for cards
    down = query(prometheus, next(r["query"] for r in rules if r["name"] == "PerennialLearnerDown"))
    assert [s["metric"]["job"] for s in down] == ["wires-perennial-learner"] and releases(down) == {WIRES}, down
    alerts = httpx.get(f"{prometheus}/api/v1/alerts").json()["data"]["alerts"]
    pending = [a["labels"] for a in alerts if a["labels"]["alertname"] == "PerennialLearnerDown"]
    assert {(a["namespace"], a["release"]) for a in pending} == {WIRES}, pending

    for url in (f"{stack.url}/metrics", f"http://127.0.0.1:{stack.metrics_port}/metrics"):
        text = httpx.get(url).text
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, (url, check.stdout, check.stderr)
