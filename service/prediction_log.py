"""The prediction log: every scored event, as it was scored, on a Kafka topic, off the request path.

Fraud labels come days or weeks after the transaction, as little more than its id. To train on the
features the model actually saw (no training/serving skew), the server can publish each scored event
(``serve.prediction_log``) to ``<kafka.topic>.predictions``, one JSON record per event keyed by its id:

    {"id": "tx-1", "time": 1764000000.0, "features": {"amount": 12.5, ...}, "score": 0.031, "version": "v000004"}

``time`` is the event's own ``time`` when the request gave one, else when the server scored it.
Events without an id cannot be joined to a label later and are counted, not logged.

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
from typing import Any, Sequence

import numpy as np
import orjson

from service.metrics import PredictionLogMetrics
from streams import kafka as kio

log = logging.getLogger("perennial.serve")

RETRY_S = 5.0
"""Wait before trying again to reach Kafka after a failure to create the producer."""


class PredictionLog:
    def __init__(self, config: dict[str, Any], topic: str, capacity: int, metrics: PredictionLogMetrics, *, start: bool = True):
        self.config, self.topic, self.capacity, self.metrics = config, topic, capacity, metrics
        self._batches: collections.deque = collections.deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._producer = None
        self.metrics.queue.set_function(lambda: self._queued)
        self._thread = threading.Thread(target=self._work, name="perennial-prediction-log", daemon=True)
        if start:
            self._thread.start()

    @property
    def queued(self) -> int:
        return self._queued

    def record(self, ids: Sequence[Any], times: Sequence[Any], rows: np.ndarray, scores: np.ndarray, version: str,
               names: Sequence[str]) -> None:
        """Queue one request's scored events (called on the event loop: never blocks, never raises)."""
        keep = [i for i, event_id in enumerate(ids) if event_id is not None]
        if len(keep) < len(ids):
            self.metrics.events.labels("no_id").inc(len(ids) - len(keep))
        if not keep:
            return
        with self._lock:
            if self._queued + len(keep) > self.capacity:
                self.metrics.events.labels("dropped").inc(len(keep))
                return
            self._batches.append(([ids[i] for i in keep], [times[i] for i in keep], rows[keep], scores[keep], version, names, time.time()))
            self._queued += len(keep)
        self.metrics.events.labels("queued").inc(len(keep))
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
            self._wake.wait(0.5)
            self._wake.clear()
            stopping = self._stop.is_set()
            if self._batches and not self._connected() and not stopping:
                self._stop.wait(RETRY_S)  # Kafka unreachable: the queue holds (and drops beyond capacity) meanwhile
                continue
            while self._batches and self._producer is not None:
                with self._lock:
                    batch = self._batches.popleft()
                self._send(*batch)
                with self._lock:
                    self._queued -= len(batch[0])
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

    def _send(self, ids: list[Any], times: list[Any], rows: np.ndarray, scores: np.ndarray, version: str,
              names: Sequence[str], scored_at: float) -> None:
        sent, failed = self.metrics.events.labels("sent"), self.metrics.events.labels("failed")
        for event_id, t, row, score in zip(ids, times, rows.tolist(), scores.tolist()):
            event_id = str(event_id)
            doc = {"id": event_id, "time": t if isinstance(t, (int, float)) and not isinstance(t, bool) else scored_at,
                   "features": dict(zip(names, row)), "score": score, "version": version}
            try:
                future = self._producer.send(self.topic, key=event_id.encode(), value=orjson.dumps(doc))
            except Exception:  # noqa: BLE001 - a full buffer or lost metadata: this event is not logged
                failed.inc()
                continue
            future.add_callback(lambda _: sent.inc())
            future.add_errback(lambda _: failed.inc())
