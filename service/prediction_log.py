"""The prediction log: every scored event, as it was scored, on a Kafka topic, off the request path.

Fraud labels come days or weeks after the transaction, as little more than its id. To train on the
features the model actually saw (no training/serving skew), the server can publish each scored event
(``serve.prediction_log``) to ``<kafka.topic>.predictions``, as prediction batches of up to
``MESSAGE_EVENTS`` events a Kafka message, column by column (``streams.predictions``, which also reads
them)::

    {"version": "v000004", "names": ["amount", ...], "ids": ["tx-1", ...], "times": [1764000000.0, ...],
     "scores": [0.031, ...], "rows": [[12.5, ...], ...]}

``time`` is the event's own ``time`` when the request gave one, else when the server scored it.
Events without an id cannot be joined to a label later and are counted, not logged. ``rows`` are the
raw vectors scored; with a schema that declares optional or categorical features, a missing value is
``null`` and categories are logged by key, a value scored as other as ``OTHER_KEY``, under
``categories`` (``streams.predictions``), so that the join gives the learner the vectors the server
scored. A schema of required numbers only is logged exactly as before.

A request only appends its arrays to a bounded queue (``serve.prediction_log_capacity`` events); one
thread of the log encodes and sends them. With Kafka slow or down the queue fills and further events
are dropped and counted (``perennial_prediction_log_events_total{outcome="dropped"}``): the log never
holds up or fails a prediction. Records Kafka refuses are counted as ``failed``.

Examples
--------
>>> import numpy as np
>>> from prometheus_client import CollectorRegistry
>>> log = PredictionLog({"bootstrap_servers": ["127.0.0.1:1"]}, "t.predictions", 3, PredictionLogMetrics(CollectorRegistry()), start=False)
>>> log.record(["a", None, "c", "d"], [1.0, None, None, 2.0], np.zeros((4, 2), np.float32), np.full(4, 0.5), "v000001", ("x", "y"))
>>> log.queued, log.metrics.events.labels("no_id")._value.get()
(3, 1.0)
>>> log.record(["e"], [None], np.zeros((1, 2), np.float32), np.full(1, 0.5), "v000001", ("x", "y"))
>>> log.queued, log.metrics.events.labels("dropped")._value.get()
(3, 1.0)
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from kafka import KafkaProducer

from service.metrics import PredictionLogMetrics
from streams import kafka as kio
from streams.predictions import encode_batch

log = logging.getLogger("perennial.serve")

MESSAGE_EVENTS = 1024
"""Most events in one Kafka message: 256 kept the server under 100,000 predictions/s in batches of 64
(the producer's work per message, in Python, holding the GIL)."""
MESSAGE_BYTES = 900 * 1024
"""Largest message (under the producer's and the broker's default 1 MiB); more events are split."""
FLUSH_S = 0.05
"""The log's thread wakes this often (or as soon as ``MESSAGE_EVENTS`` are queued) and sends all that is
queued at once: woken by every request, with a Kafka message per request, the log cost the server 65% of
its single-event throughput on 2 cores (bench/prediction_log.py; py-spy: the wake-ups and the producer's
per-message work, not the encoding, which takes ~3 us an event)."""
RETRY_S = 5.0
"""Wait before trying again to reach Kafka after a failure to create the producer."""


class _Scored(NamedTuple):
    """One request's scored events with an id, as queued."""

    ids: list[Any]
    times: list[Any]
    rows: np.ndarray
    scores: np.ndarray
    version: str
    names: Sequence[str]
    scored_at: float


class PredictionLog:
    def __init__(self, config: dict[str, Any], topic: str, capacity: int, metrics: PredictionLogMetrics, *, start: bool = True):
        self.config, self.topic, self.capacity, self.metrics = config, topic, capacity, metrics
        self._batches: collections.deque = collections.deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._producer: KafkaProducer | None = None
        self.metrics.queue.set_function(lambda: self._queued)
        self._queued_total, self._dropped = metrics.events.labels("queued"), metrics.events.labels("dropped")
        self._thread = threading.Thread(target=self._work, name="perennial-prediction-log", daemon=True)
        if start:
            self._thread.start()

    @property
    def queued(self) -> int:
        return self._queued

    def record(self, ids: Sequence[Any], times: Sequence[Any], rows: np.ndarray, scores: np.ndarray, version: str,
               names: Sequence[str]) -> None:
        """Queue one request's scored events (called on the event loop: never blocks, never raises)."""
        n = len(ids)
        if None in ids:
            keep = [i for i, event_id in enumerate(ids) if event_id is not None]
            self.metrics.events.labels("no_id").inc(n - len(keep))
            if not keep:
                return
            ids, times, rows, scores, n = [ids[i] for i in keep], [times[i] for i in keep], rows[keep], scores[keep], len(keep)
        with self._lock:
            if self._queued + n > self.capacity:
                self._dropped.inc(n)
                return
            self._batches.append(_Scored(list(ids), list(times), rows, scores, version, names, time.time()))
            self._queued += n
        self._queued_total.inc(n)
        if self._queued >= MESSAGE_EVENTS and not self._wake.is_set():
            self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (within ``timeout``), then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the log's thread ---------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            self._wake.wait(FLUSH_S)
            self._wake.clear()
            stopping = self._stop.is_set()
            if self._batches and not self._connected() and not stopping:
                self._stop.wait(RETRY_S)  # Kafka unreachable: the queue holds (and drops beyond capacity) meanwhile
                continue
            while self._batches and self._producer is not None:
                with self._lock:
                    batches, self._batches = self._batches, collections.deque()
                self._send(batches)
                with self._lock:
                    self._queued -= sum(len(batch.ids) for batch in batches)
            if stopping:
                if self._producer is not None:
                    self._producer.flush(timeout=5)
                    self._producer.close(timeout=5)
                return

    def _connected(self) -> bool:
        if self._producer is None:
            try:
                kio.ensure_topics(self.config, [self.topic])
                self._producer = kio.producer(self.config, acks=1, linger_ms=20, max_block_ms=2000)
            except Exception as exc:  # noqa: BLE001 - any failure to reach Kafka: try again later
                log.warning("the prediction log cannot reach Kafka (%s: %s); %d events queued, more are dropped beyond %d",
                            type(exc).__name__, exc, self._queued, self.capacity)
                return False
        return True

    def _send(self, batches: collections.deque) -> None:
        """Send the queued batches as prediction batches of at most ``MESSAGE_EVENTS`` events, one
        version each (a swap between requests starts a new one)."""
        groups: list[list[_Scored]] = []
        for batch in batches:
            if groups and (groups[-1][0].version, groups[-1][0].names) == (batch.version, batch.names):
                groups[-1].append(batch)
            else:
                groups.append([batch])
        for group in groups:
            ids = [event_id for batch in group for event_id in batch.ids]
            times = [t if isinstance(t, (int, float)) and not isinstance(t, bool) else batch.scored_at for batch in group for t in batch.times]
            rows = np.concatenate([batch.rows for batch in group])
            scores = np.concatenate([batch.scores for batch in group])
            version, names = group[0].version, group[0].names
            for start in range(0, len(ids), MESSAGE_EVENTS):
                self._produce_within(ids, times, rows, scores, version, names, start, min(start + MESSAGE_EVENTS, len(ids)))

    def _produce_within(self, ids: list, times: list, rows: np.ndarray, scores: np.ndarray, version: str, names: Sequence[str],
                        start: int, end: int) -> None:
        """Events ``start:end`` in one message, or halves of them until each fits ``MESSAGE_BYTES`` (wide rows, long ids)."""
        value = encode_batch(ids[start:end], times[start:end], rows[start:end], scores[start:end], version, names)
        if len(value) <= MESSAGE_BYTES or end - start == 1:
            self._produce(value, end - start)
            return
        middle = (start + end) // 2
        self._produce_within(ids, times, rows, scores, version, names, start, middle)
        self._produce_within(ids, times, rows, scores, version, names, middle, end)

    def _produce(self, value: bytes, n: int) -> None:
        if self._producer is None:  # _work sends only once connected; without a producer these events are not logged
            self.metrics.events.labels("failed").inc(n)
            return
        try:
            future = self._producer.send(self.topic, value=value)
        except Exception:  # noqa: BLE001 - a full buffer or lost metadata: these events are not logged
            self.metrics.events.labels("failed").inc(n)
            return
        future.add_callback(lambda _: self.metrics.events.labels("sent").inc(n))
        future.add_errback(lambda _: self.metrics.events.labels("failed").inc(n))
