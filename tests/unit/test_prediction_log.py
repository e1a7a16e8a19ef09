"""The prediction log's batching, without Kafka: what a flush sends and how it is cut into messages."""

from __future__ import annotations

import collections

import numpy as np
from prometheus_client import CollectorRegistry

from service.metrics import PredictionLogMetrics
from service.prediction_log import MESSAGE_BYTES, MESSAGE_EVENTS, PredictionLog, _Scored
from streams.predictions import Label, parse_predictions


class Producer:
    def __init__(self):
        self.sent: list[bytes] = []

    def send(self, topic, value):
        self.sent.append(value)
        return self

    def add_callback(self, callback):
        callback(None)

    def add_errback(self, errback):
        pass


def log_with(producer: Producer) -> PredictionLog:
    log = PredictionLog({}, "t.predictions", 10**7, PredictionLogMetrics(CollectorRegistry()), start=False)
    log._producer = producer
    return log


def test_a_flush_groups_requests_by_version_and_keeps_every_event_in_order():
    names = ("x", "y")
    producer = Producer()
    log = log_with(producer)
    batches = collections.deque()
    for k, version in enumerate(["v1", "v1", "v2", "v1"]):
        ids = [f"{k}-{i}" for i in range(3)]
        batches.append(_Scored(ids, [None, 7.0, True], np.float32([[k, i] for i in range(3)]), np.full(3, k / 10), version, names, 100.0 + k))
    log._send(batches)
    got = [parse_predictions(v, names) for v in producer.sent]
    assert [{p.version for p in message} for message in got] == [{"v1"}, {"v2"}, {"v1"}]  # one version a message
    flat = [p for message in got for p in message]
    assert [p.id for p in flat] == [f"{k}-{i}" for k in range(4) for i in range(3)]
    assert [p.time for p in flat[:3]] == [100.0, 7.0, 100.0]  # no time, or not a number: when it was scored
    assert [p.features for p in flat[3:6]] == [(1.0, 0.0), (1.0, 1.0), (1.0, 2.0)]


def test_wide_rows_are_split_into_messages_the_broker_accepts():
    names = tuple(f"feature_{i}" for i in range(400))
    producer = Producer()
    log = log_with(producer)
    n = MESSAGE_EVENTS - 1
    rows = np.random.default_rng(0).random((n, len(names))).astype(np.float32)
    log._send(collections.deque([_Scored(["x" * 200 + str(i) for i in range(n)], [None] * n, rows, np.zeros(n), "v1", names, 5.0)]))
    assert len(producer.sent) > 1 and max(map(len, producer.sent)) <= MESSAGE_BYTES
    back = [p for v in producer.sent for p in parse_predictions(v, names)]
    assert len(back) == n and np.array_equal(np.float32([p.features for p in back]), rows)
    assert log.metrics.events.labels("sent")._value.get() == n


def test_what_the_server_scored_with_a_declared_schema_is_what_the_join_gives_the_learner(declared_registry, tmp_path, monkeypatch):
    """/v1/predict and V2 requests with missing values and categories (one unseen) -> the prediction
    log's messages -> the join -> the learner's parse_event: each raw vector as the server scored it."""
    import orjson
    from fastapi.testclient import TestClient

    from learners.join import JoinState
    from perennial.settings import JoinSettings, Settings
    from service import app as app_module
    from service.app import create_app
    from streams.events import feature_vector, parse_event
    from tests.unit.conftest import DECLARED

    logs: list[PredictionLog] = []

    class Held(PredictionLog):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "start": False})  # no Kafka: what would be sent stays queued
            logs.append(self)

    monkeypatch.setattr(app_module, "PredictionLog", Held)
    features = DECLARED.features
    events = [{"id": "a", "features": {"amount": 3, "channel": "web"}},
              {"id": "b", "features": {"amount": 0.1, "device_age": 4.5, "country": "Atlantis", "channel": "app"}},
              {"id": "c", "features": {"amount": 2, "device_age": None, "country": "US", "channel": "phone"}}]
    settings = Settings(registry={"path": declared_registry}, kafka={"bootstrap_servers": "127.0.0.1:1"}, serve={"prediction_log": True})
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/predict", content=orjson.dumps(events)).status_code == 200
        v2 = {"inputs": [{"name": "amount", "datatype": "FP32", "shape": [1], "data": [7.0]},
                         {"name": "country", "datatype": "BYTES", "shape": [1], "data": ["GB"]},
                         {"name": "channel", "datatype": "BYTES", "shape": [1], "data": ["Moon"]},
                         {"name": "id", "datatype": "BYTES", "shape": [1], "data": ["d"]}]}
        assert c.post("/v2/models/perennial/infer", content=orjson.dumps(v2)).status_code == 200
    producer = Producer()
    logs[0]._producer = producer
    logs[0]._send(logs[0]._batches)
    scored = np.float32([feature_vector(e["features"], features) for e in events] + [[7.0, np.nan, 3, 0]])
    state = JoinState(JoinSettings(), features, tmp_path / "join.sqlite")
    state.step([p for value in producer.sent for p in parse_predictions(value, features)],
               [Label(i, 1, None, "chargeback") for i in "abcd"], {("t.predictions", 0): 1})
    learned = {e.id: e.features for e in (parse_event(value, features) for _, value in state.outbox())}
    np.testing.assert_array_equal(np.float32([learned[i] for i in "abcd"]), scored)
    assert DECLARED.unseen(scored) == 3  # Atlantis, phone, Moon: other, and other again for the learner
