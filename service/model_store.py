"""The served model: one immutable ScoringModel behind one reference, and the follower that moves it.

The registry's CURRENT pointer says what to serve; announcements on the Kafka topic only wake the
follower early (it also re-reads CURRENT every few seconds, so a server keeps following with Kafka
down). A new version is verified (checksum, feature schema), loaded and warmed on the follower's
thread, never on the event loop, and only then swapped in. Requests read the reference once, so
in-flight ones finish on the model they started with; a refused version is counted and logged and
the current model stays.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from kafka import TopicPartition

from learners.model import ScoringModel
from learners.registry import Registry, RegistryError
from service.metrics import ServerMetrics
from streams import kafka as kio

log = logging.getLogger("perennial.serve")


class ModelStore:
    def __init__(self, registry: Registry, metrics: ServerMetrics):
        self.registry = registry
        self.metrics = metrics
        self.model: ScoringModel | None = None
        self._refused: tuple[str, str] | None = None
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Serve what CURRENT points to, if it is new and sound. True when a swap happened."""
        with self._lock:
            version = self.registry.current_version()
            if version is not None and version[1:].isdigit():
                self.metrics.current_number.set(int(version[1:]))
            if version is None or (self.model is not None and version == self.model.version):
                return False
            try:
                sha = self.registry.manifest(version).get("sha256", "")
            except RegistryError as exc:
                return self._refuse(version, "", exc)
            if self._refused == (version, sha):
                return False
            started = time.perf_counter()
            try:
                expect = self.model.schema.names if self.model is not None else None
                model = self.registry.load(version, expect_features=expect)
                warm = model.score(np.zeros((64, len(model.schema.names)), np.float32))
                if not np.isfinite(warm).all():
                    raise RegistryError(f"version {version} gives non-finite scores")
            except RegistryError as exc:
                return self._refuse(version, sha, exc)
            self.metrics.swap_duration.observe(time.perf_counter() - started)
            previous = self.model.version if self.model else None
            self.model = model  # the swap: one reference
            m = model.manifest
            self.metrics.served(version, m.get("sha256", ""), m.get("parent"), m.get("created_ts", 0.0), previous)
            self.metrics.swaps.labels("swapped").inc()
            log.info("serving %s (was %s)", version, previous)
            return True

    def _refuse(self, version: str, sha: str, exc: Exception) -> bool:
        self._refused = (version, sha)
        self.metrics.swaps.labels("refused").inc()
        log.error("refused version %s, keeping %s: %s", version, self.model.version if self.model else "none", exc)
        return False


class Follower(threading.Thread):
    """Keeps the store on the registry's CURRENT: re-reads it every ``poll_s`` or when woken."""

    def __init__(self, store: ModelStore, poll_s: float):
        super().__init__(name="perennial-follower", daemon=True)
        self.store, self.poll_s = store, poll_s
        self.wake = threading.Event()
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.store.refresh()
            except Exception:  # noqa: BLE001 - the follower must survive anything the registry does
                log.exception("refresh failed")
            self.wake.wait(self.poll_s)
            self.wake.clear()

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()
        self.join(timeout=10)


class Announcements(threading.Thread):
    """Wakes the follower when the learner announces a version. Kafka calls can block for a long time
    when the broker is unreachable, so they run on this thread alone: the follower keeps polling."""

    def __init__(self, wake: threading.Event, kafka_config: dict, topic: str):
        super().__init__(name="perennial-announcements", daemon=True)
        self.wake, self.kafka_config, self.topic = wake, kafka_config, topic
        self._stopping = threading.Event()

    def _connect(self):  # noqa: ANN202
        """A group-less consumer at the end of the topic (every replica sees every announcement)."""
        try:
            kio.ensure_topics(self.kafka_config, [self.topic])
            c = kio.consumer(self.kafka_config, enable_auto_commit=False, request_timeout_ms=5000)
            tps = [TopicPartition(self.topic, p) for p in (c.partitions_for_topic(self.topic) or {0})]
            c.assign(tps)
            c.seek_to_end(*tps)
            return c
        except Exception as exc:  # noqa: BLE001 - Kafka down must not stop serving
            log.warning("announcements unavailable (%s); following the registry by polling", exc)
            return None

    def run(self) -> None:
        consumer = None
        while not self._stopping.is_set():
            if consumer is None:
                consumer = self._connect()
                if consumer is None:
                    self._stopping.wait(10)
                    continue
            try:
                if consumer.poll(timeout_ms=1000):
                    self.wake.set()
            except Exception as exc:  # noqa: BLE001
                log.warning("announcement consumer failed (%s); reconnecting", exc)
                consumer.close()
                consumer = None
        if consumer is not None:
            consumer.close()

    def stop(self) -> None:
        self._stopping.set()  # a daemon thread: not joined, it may be stuck in a Kafka call
