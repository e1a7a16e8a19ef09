"""A real Prometheus scrapes a live `perennial serve` and `perennial learn` during a run on the real
broker; every query of every dashboard panel must return at least one series, every alert rule must
evaluate cleanly, and both expositions must pass `promtool check metrics`."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from streams.simulator import FEATURES

from .conftest import SIM, produce_stream, producer, wait_for
from streams.broker import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "helm" / "perennial" / "dashboards").glob("*.json"))
RULES = ROOT / "helm" / "perennial" / "rules" / "perennial-rules.yaml"


def panel_queries():
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                yield f"{path.stem} / {panel['title']} / {target['refId']}", target["expr"]


@pytest.fixture
def prometheus(tmp_path, stack):
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed; `make test` installs Debian's prometheus package"
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "perennial-serve", "static_configs": [{"targets": [f"127.0.0.1:{stack.serve_port}"]}]},
            {"job_name": "perennial-learn", "static_configs": [{"targets": [f"127.0.0.1:{stack.metrics_port}"]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    log = open(tmp_path / "prometheus.log", "wb")
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


def test_every_dashboard_panel_has_data_and_rules_evaluate(stack, prometheus):
    # the late-label panels: the server logs what it scores, the learner joins labels to it
    stack.env.update({"PERENNIAL_SERVE__PREDICTION_LOG": "true", "PERENNIAL_JOIN__ENABLED": "true"})
    stack.start("serve")
    # this test is about the dashboards: rounds stay small and candidates are served on thinner evidence,
    # so that a version is published soon after the stream is read
    stack.env.update({"PERENNIAL_LEARN__ROUND_MAX_EVENTS": "2048", "PERENNIAL_LEARN__GATES__CONFIDENCE": "0.6",
                      "PERENNIAL_LEARN__GATES__MIN_RECENT_POSITIVES": "10"})
    stack.start("learn")
    stack.wait_ready()
    wait_for(lambda: len(query(prometheus, "up == 1")) == 2, 60, "both targets up")
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

    empty = [name for name, expr in panel_queries() if not query(prometheus, expr)]
    assert not empty, f"panels without data: {empty}"
    assert sum(1 for _ in panel_queries()) >= 30

    groups = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 19 and all(r["health"] == "ok" for r in rules), rules

    for url in (f"{stack.url}/metrics", f"http://127.0.0.1:{stack.metrics_port}/metrics"):
        text = httpx.get(url).text
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, (url, check.stdout, check.stderr)
