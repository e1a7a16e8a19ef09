"""Bounded load on loopback: 60 s of prediction traffic (single events and batches) while the
simulator streams labeled events and the learner publishes versions that the server swaps in.
Zero failed requests, zero lost events. Prints the counts the README's reliability section quotes:

    .venv/bin/python -m pytest tests/integration/test_load.py -s
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import orjson
import pytest

from learners.checkpoint import load_checkpoint
from streams.simulator import FEATURES

from .conftest import SIM, wait_for

pytestmark = pytest.mark.integration
DURATION_S = 60


class Client(threading.Thread):
    def __init__(self, url: str, batch: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.url, self.batch, self.stop = url, batch, stop
        self.ok = self.failed = self.predictions = 0
        self.versions: set[str] = set()
        rows = SIM.pattern_sets(46, 1)["compromised_terminal"][0][:1024].tolist()
        self.bodies = [
            orjson.dumps([{"features": dict(zip(FEATURES, r))} for r in rows[i : i + batch]] if batch > 1 else {"features": dict(zip(FEATURES, rows[i]))})
            for i in range(0, 1024 - batch, max(batch, 7))
        ]

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as c:
            i = 0
            while not self.stop.is_set():
                try:
                    r = c.post("/v1/predict", content=self.bodies[i % len(self.bodies)])
                    i += 1
                    if r.status_code == 200:
                        self.ok += 1
                        doc = r.json()
                        self.versions.add(doc["version"])
                        self.predictions += len(doc["predictions"]) if self.batch > 1 else 1
                    else:
                        self.failed += 1
                except httpx.HTTPError:
                    self.failed += 1


def test_sixty_seconds_of_load_with_learning_and_swaps(stack):
    stack.start("serve")
    stack.start("learn")
    stack.wait_ready()
    stop = threading.Event()
    clients = [Client(stack.url, 1, stop), Client(stack.url, 1, stop), Client(stack.url, 64, stop)]
    env = {**stack.env, "PERENNIAL_SIMULATE__RATE": "800"}
    simulator = subprocess.Popen(
        [sys.executable, "-m", "perennial.cli", "simulate", "--start-day", "45", "--max-events", str(800 * DURATION_S)],
        env=env, stdout=subprocess.PIPE, text=True,
    )
    started = time.monotonic()
    for c in clients:
        c.start()
    out, _ = simulator.communicate(timeout=DURATION_S * 3)
    produced = orjson.loads(out.strip().splitlines()[-1])["events"]
    wait_for(lambda: stack.learner_metric("perennial_learner_events_consumed_total") >= produced, 120, "learner to catch up")
    while time.monotonic() - started < DURATION_S:
        time.sleep(0.5)
    stop.set()
    for c in clients:
        c.join(15)
    elapsed = time.monotonic() - started
    assert stack.stop("learn") == 0
    tensors, meta = load_checkpoint(stack.checkpoint)
    a = meta["accounting"]
    pending = len(tensors["pending.y"]) + len(tensors["pending_holdout.y"])
    accounted = a["trained"] + a["held_out"] + a["quarantined"] + pending + sum(a["dead_lettered"].values())
    summary = {
        "seconds": round(elapsed, 1),
        "requests_ok": sum(c.ok for c in clients),
        "requests_failed": sum(c.failed for c in clients),
        "predictions": sum(c.predictions for c in clients),
        "versions_served": len(set().union(*(c.versions for c in clients))),
        "events_produced": produced,
        "events_consumed": a["consumed"],
        "events_accounted": accounted,
        "versions_published": a["published"],
    }
    print("\nload summary:", orjson.dumps(summary).decode())
    assert simulator.returncode == 0 and produced == 800 * DURATION_S
    assert summary["requests_failed"] == 0 and summary["requests_ok"] > 1000
    assert a["consumed"] == produced and accounted == produced
    assert summary["versions_served"] >= 3  # swaps happened under load
