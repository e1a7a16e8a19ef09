"""The prediction log (the first part of joining late labels to what was served): a running server
publishes each event it scored, with the features as scored, to `<topic>.predictions` on the real
broker, read back here by a plain Kafka client; with Kafka unreachable, predictions go on and the
events the log cannot hold are counted."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from perennial.client import Client
from streams.predictions import parse_predictions
from streams.simulator import FEATURES

from .conftest import Stack, read_to_end, wait_for

pytestmark = pytest.mark.integration


def server_metric(stack: Stack, name: str) -> float:
    for line in httpx.get(f"{stack.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return -1.0


def events(n: int, start: int = 0, *, with_ids: bool = True) -> list[dict]:
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        event = {"features": {name: float(v) for name, v in zip(FEATURES, rng.random(len(FEATURES)) * 100)}}
        if with_ids:
            event.update(id=f"tx-{i}", time=1_764_000_000.0 + i)
        out.append(event)
    return out


def test_a_running_server_logs_what_it_scored_to_kafka(stack):
    stack.env["PERENNIAL_SERVE__PREDICTION_LOG"] = "true"
    stack.start("serve")
    stack.wait_ready()
    sent = events(40) + events(5, 100, with_ids=False)
    with Client(stack.url) as client:
        single = client.predict(sent[0]["features"], id=sent[0]["id"], time=sent[0]["time"])
        answers = {single.id: single}
        answers.update({p.id: p for p in client.predict_many(sent[1:]) if p.id is not None})

    wait_for(lambda: server_metric(stack, 'perennial_prediction_log_events_total{outcome="sent"}') == 40, 10, "40 sent")
    records = read_to_end(stack.bootstrap, f"{stack.topic}.predictions")  # every event confirmed: all there
    logged = {p.id: p for r in records for p in parse_predictions(r.value, FEATURES)}
    assert sum(len(parse_predictions(r.value, FEATURES)) for r in records) == 40
    assert sorted(logged) == sorted(f"tx-{i}" for i in range(40))  # each event with an id once; none without
    for event in sent[:40]:
        logged_event = logged[event["id"]]
        assert logged_event.time == event["time"] and logged_event.version == answers[event["id"]].version == "v000001"
        assert logged_event.score == answers[event["id"]].score
        assert np.array_equal(np.float32(logged_event.features), np.float32([event["features"][n] for n in FEATURES]))
    assert server_metric(stack, 'perennial_prediction_log_events_total{outcome="no_id"}') == 5
    assert server_metric(stack, 'perennial_prediction_log_events_total{outcome="dropped"}') == 0


def test_with_kafka_unreachable_predictions_go_on_and_the_overflow_is_counted(stack):
    stack.env.update({"PERENNIAL_SERVE__PREDICTION_LOG": "true", "PERENNIAL_SERVE__PREDICTION_LOG_CAPACITY": "100",
                      "PERENNIAL_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    stack.start("serve")
    stack.wait_ready()
    with Client(stack.url) as client:
        started = time.monotonic()
        for k in range(6):
            assert len(client.predict_many(events(50, 1000 + 50 * k))) == 50
        took = time.monotonic() - started
    assert took < 5, f"6 requests took {took:.1f} s with Kafka down"  # far from any Kafka timeout
    queued = server_metric(stack, "perennial_prediction_log_queued_events")
    dropped = server_metric(stack, 'perennial_prediction_log_events_total{outcome="dropped"}')
    assert queued == 100 and dropped == 200, (queued, dropped)  # two requests fit, four are counted as dropped
