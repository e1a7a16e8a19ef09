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
    """Keeps the store on the registry's CURRENT, woken early by announcements on Kafka."""

    def __init__(self, store: ModelStore, poll_s: float, kafka_config: dict, topic: str):
        super().__init__(name="perennial-follower", daemon=True)
        self.store, self.poll_s = store, poll_s
        self.kafka_config = kafka_config
        self.topic = topic
        self.stop_event = threading.Event()

    def _announcements(self):  # noqa: ANN202
        """A group-less consumer at the end of the topic (every replica sees every announcement)."""
        try:
            c = kio.consumer(self.kafka_config, enable_auto_commit=False, request_timeout_ms=5000, api_version_auto_timeout_ms=3000)
            parts = c.partitions_for_topic(self.topic) or {0}
            tps = [TopicPartition(self.topic, p) for p in parts]
            c.assign(tps)
            c.seek_to_end(*tps)
            return c
        except Exception as exc:  # noqa: BLE001 - Kafka down must not stop serving
            log.warning("announcements unavailable (%s); following the registry by polling", exc)
            return None

    def run(self) -> None:
        consumer, retry_at = None, 0.0
        while not self.stop_event.is_set():
            if consumer is None and time.monotonic() >= retry_at:
                consumer = self._announcements()
                retry_at = time.monotonic() + 10
            try:
                self.store.refresh()
            except Exception:  # noqa: BLE001 - the follower must survive anything the registry does
                log.exception("refresh failed")
            if consumer is None:
                self.stop_event.wait(self.poll_s)
                continue
            try:
                consumer.poll(timeout_ms=int(self.poll_s * 1000))
            except Exception as exc:  # noqa: BLE001
                log.warning("announcement consumer failed (%s); reconnecting later", exc)
                consumer.close()
                consumer = None
        if consumer is not None:
            consumer.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)
