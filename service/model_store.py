"""The served model: one immutable ScoringModel behind one reference, and the follower that moves it.

The registry's CURRENT pointer says what to serve; announcements on the Kafka topic only wake the
follower early (it also re-reads CURRENT every few seconds, so a server keeps following with Kafka
down). A new version is verified (checksums, feature schema), loaded and warmed on the follower's
thread, never on the event loop, and only then swapped in. Requests read the reference once, so
in-flight ones finish on the model they started with. Registry content that cannot be served (a
CURRENT without a version id, a version that fails verification) is refused: counted and logged once
per bad state, however many polls see it, while the current model, if any, stays.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
from kafka import TopicPartition

from learners.registry import Registry, RegistryError, VersionFiles
from learners.scoring import ScoringModel
from service.metrics import ServerMetrics
from streams import kafka as kio

log = logging.getLogger("perennial.serve")


@dataclass(frozen=True)
class Refusal:
    """Why the registry's CURRENT is not served. ``state`` identifies what was refused: CURRENT's
    problem, or a version and its bytes; the same state is refused once."""

    state: tuple[str, str]
    reason: str


NO_MODEL = "no model is loaded yet; the registry has no version yet"
"""What a scoring request is told (503) while no version is loaded."""


class ModelStore:
    def __init__(self, registry: Registry, metrics: ServerMetrics):
        self.registry = registry
        self.metrics = metrics
        self.model: ScoringModel | None = None
        self.refusal: Refusal | None = None
        self._lock = threading.Lock()

    def why_not_ready(self) -> str:
        """Why no model is served (for the readiness routes): the last refusal, or an empty registry."""
        refusal = self.refusal
        return f"no model is loaded: {refusal.reason}" if refusal is not None else NO_MODEL

    def refresh(self) -> bool:
        """Serve what CURRENT points to, if it is new and sound. True when a swap happened."""
        with self._lock:
            try:
                version = self.registry.current_version()
            except RegistryError as exc:
                return self._refuse(("CURRENT", str(exc)), "the registry's CURRENT", exc)
            if version is not None:
                self.metrics.current_number.set(int(version[1:]))
            if version is None or (self.model is not None and version == self.model.version):
                self.refusal = None
                return False
            files = None
            started = time.perf_counter()
            try:
                files = self.registry.read(version)
                model = self._verified(files)
            except RegistryError as exc:
                return self._refuse((version, files.digest if files else str(exc)), f"version {version}", exc)
            self.metrics.swap_duration.observe(time.perf_counter() - started)
            previous = self.model.version if self.model else None
            self.model = model  # the swap: one reference
            self.refusal = None
            m = model.manifest
            self.metrics.served(version, m["sha256"], m["parent"], m["created_ts"], previous)
            for i in model.schema.features.positions:  # each categorical feature's series exists from the start
                self.metrics.unseen_categories.labels(model.schema.names[i])
            self.metrics.swaps.labels("swapped").inc()
            log.info("serving %s (was %s)", version, previous)
            return True

    def _verified(self, files: VersionFiles) -> ScoringModel:
        expect = self.model.schema.names if self.model is not None else None
        model = self.registry.load_files(files, expect_features=expect)
        warm = model.score(np.zeros((64, len(model.schema.names)), np.float32))
        if not np.isfinite(warm).all():
            raise RegistryError(f"version {files.version} gives non-finite scores")
        return model

    def _refuse(self, state: tuple[str, str], what: str, exc: RegistryError) -> bool:
        if self.refusal is not None and self.refusal.state == state:
            return False
        self.refusal = Refusal(state, f"refused {what}: {exc}")
        self.metrics.swaps.labels("refused").inc()
        log.error("refused %s, keeping %s: %s", what, self.model.version if self.model else "none", exc)
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
            except Exception:  # the follower must survive anything the registry does
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

    def _connect(self):
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
