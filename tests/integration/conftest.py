"""Real components: the Tansu broker over the Kafka protocol, `perennial` processes, real ports."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from learners.pretrain import pretrain
from learners.registry import Registry
from streams.broker import LocalBroker, free_port
from streams.simulate import encode_rows
from streams.simulator import FEATURES, Simulator

SIM = Simulator(seed=11, customers=2000, terminals=800)
ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(scope="session")
def broker():
    with LocalBroker() as b:
        yield b


@pytest.fixture(scope="session")
def base_registry(tmp_path_factory) -> Path:
    """One small pretrained registry (30 days, no card testing), copied by each test."""
    path = tmp_path_factory.mktemp("base") / "registry"
    tx = SIM.generate(0, 30)
    pretrain(FEATURES, tx.features, tx.label, Registry(path), epochs=4, retention_size=2000)
    return path


class Stack:
    def __init__(self, root: Path, bootstrap: str, base_registry: Path):
        self.root = root
        self.registry = root / "registry"
        shutil.copytree(base_registry, self.registry)
        self.topic = f"tx-{uuid.uuid4().hex[:8]}"
        self.bootstrap = bootstrap
        self.serve_port, self.metrics_port = free_port(), free_port()
        self.checkpoint = root / "checkpoint" / "learner.safetensors"
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PERENNIAL_LOG__FORMAT": "text",
            "PERENNIAL_LEARN__NUMERIC_THREADS": "1",  # server, learner, broker and the tests share two cores
            "PERENNIAL_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "PERENNIAL_KAFKA__TOPIC": self.topic,
            "PERENNIAL_KAFKA__ANNOUNCE_TOPIC": f"{self.topic}.announce",
            "PERENNIAL_KAFKA__CONTROL_TOPIC": f"{self.topic}.control",
            "PERENNIAL_SERVE__ADMIN_TOKEN": ADMIN_TOKEN,
            "PERENNIAL_KAFKA__GROUP_ID": f"{self.topic}-learner",
            "PERENNIAL_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "PERENNIAL_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
            "PERENNIAL_KAFKA__MAX_POLL_INTERVAL_MS": "30000",
            "PERENNIAL_REGISTRY__PATH": str(self.registry),
            "PERENNIAL_LEARN__CHECKPOINT_PATH": str(self.checkpoint),
            "PERENNIAL_LEARN__METRICS_PORT": str(self.metrics_port),
            "PERENNIAL_LEARN__ROUND_EVENTS": "1024",
            "PERENNIAL_LEARN__ROUND_MAX_S": "1",
            "PERENNIAL_LEARN__ROUND_MIN_EVENTS": "64",
            "PERENNIAL_SERVE__PORT": str(self.serve_port),
            "PERENNIAL_SERVE__REGISTRY_POLL_S": "1",
        }
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}"

    def start(self, command: str) -> subprocess.Popen:
        log = open(self.root / f"{command}.log", "ab")  # noqa: SIM115 - the child process writes to it
        proc = subprocess.Popen([sys.executable, "-m", "perennial.cli", command], env=self.env, stdout=log, stderr=log)
        self.procs[command] = proc
        return proc

    def stop(self, command: str, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        proc = self.procs.pop(command)
        proc.send_signal(sig)
        return proc.wait(timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for(lambda: _status(f"{self.url}/readyz") == 200, timeout, "server ready")

    def learner_metric(self, name: str) -> float:
        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return -1.0
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return -1.0

    def learner_idle(self, below: int = 1) -> bool:
        """Fewer than ``below`` events pending and no round running. Read in that order: a round
        empties pending_events when it starts, so pending 0 alone may be a round still training."""
        return 0 <= self.learner_metric("perennial_learner_pending_events") < below and self.learner_metric("perennial_learner_round_running") == 0

    def log(self, command: str) -> str:
        return (self.root / f"{command}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()


@pytest.fixture
def stack(tmp_path, broker, base_registry):
    s = Stack(tmp_path, broker.bootstrap, base_registry)
    yield s
    s.close()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def wait_for(predicate, timeout: float, what: str, interval: float = 0.3, detail=None):
    """Poll ``predicate`` until it is truthy; on timeout fail naming ``what`` (and ``detail()``, what
    the processes logged, when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f"\n{detail()}" if detail else ""))


def producer(bootstrap: str, topic: str) -> KafkaProducer:
    """A plain kafka-python producer (any client may produce), after the topic exists."""
    from streams.kafka import client_config, ensure_topics

    ensure_topics(client_config(bootstrap), [topic])
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)


def produce_stream(bootstrap: str, topic: str, start_day: int, end_day: int) -> list[bytes]:
    """Simulated labeled events of [start_day, end_day) in label order; returns their values."""
    p = producer(bootstrap, topic)
    values = []
    for chunk in SIM.labeled_stream(start_day, end_day=end_day):
        for key, value in encode_rows(chunk):
            p.send(topic, key=key, value=value)
            values.append(value)
    p.flush(30)
    p.close()
    return values


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list:
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, allow_auto_create_topics=False)
    records, deadline = [], time.monotonic() + timeout
    while len(records) < expected and time.monotonic() < deadline:
        for batch in c.poll(timeout_ms=500).values():
            records.extend(batch)
    c.close()
    return records


def read_to_end(bootstrap: str, topic: str, timeout: float = 30) -> list:
    """Every record of a topic (all its partitions, in partition order), up to its end as it is now."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, allow_auto_create_topics=False)
    records, deadline = [], time.monotonic() + timeout
    partitions = None
    while not partitions and time.monotonic() < deadline:
        partitions = c.partitions_for_topic(topic)
    tps = [TopicPartition(topic, p) for p in sorted(partitions or [0])]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    ends = c.end_offsets(tps)
    while any(c.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
        for batch in c.poll(timeout_ms=500).values():
            records.extend(batch)
    c.close()
    return sorted(records, key=lambda r: (r.partition, r.offset))


class Outage:
    """A TCP proxy in front of the broker whose path can be cut: every connection dropped and new
    ones refused, as when the network to Kafka fails. Clients only ever see the proxy's port."""

    def __init__(self, upstream_port: int):
        import socket
        import threading

        self.upstream = upstream_port
        self.port = free_port()
        self._socket, self._threading = socket, threading
        self._conns: list = []
        self._lock = threading.Lock()
        self._listener = None
        self.restore()

    def restore(self) -> None:
        s = self._socket.socket()
        s.setsockopt(self._socket.SOL_SOCKET, self._socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        self._threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._listener.close()
            for c in self._conns:
                try:
                    c.shutdown(self._socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass
