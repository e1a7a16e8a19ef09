"""The prediction log's batching, without Kafka: what a flush sends and how it is cut into messages."""

from __future__ import annotations

import collections

import numpy as np
from prometheus_client import CollectorRegistry

from service.metrics import PredictionLogMetrics
from service.prediction_log import MESSAGE_BYTES, MESSAGE_EVENTS, PredictionLog, _Scored
from streams.predictions import parse_predictions


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
