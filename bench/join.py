"""The join of late labels: memory and disk with a million pending predictions, and its throughput,
in the state alone and end to end through the local broker (Tansu)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson
from common import ROOT, rss_mib

from perennial.settings import JoinSettings, Settings
from streams.broker import LocalBroker
from streams.predictions import Label, Prediction, encode_batch
from streams.simulator import FEATURES

PENDING = 1_000_000
LABELS = 100_000
STEP = 10_000
E2E_PREDICTIONS, E2E_LABELS = 200_000, 50_000


def predictions(start: int, n: int, rng: np.random.Generator) -> list[Prediction]:
    rows = rng.random((n, len(FEATURES)), dtype=np.float32) * 100
    return [Prediction(f"tx-{start + k}", 1.7e9 + (start + k) * 0.01, tuple(row), 0.01, "v000001") for k, row in enumerate(rows.tolist())]


def state_figures() -> dict[str, float]:
    """In a process of its own, so its resident set is the join's alone."""
    from learners.join import JoinState

    rng = np.random.default_rng(0)
    path = Path(tempfile.mkdtemp(prefix="perennial-bench-join-")) / "join.sqlite"
    state = JoinState(JoinSettings(maturity_s=1e9), FEATURES, path)
    out = {"rss_start": rss_mib(os.getpid())}
    started = time.perf_counter()
    for start in range(0, PENDING, STEP):
        state.step(predictions(start, STEP, rng), [], {("p", 0): start + STEP})
        if start + STEP == 100_000:
            out["rss_100k"] = rss_mib(os.getpid())
    out["log_per_s"] = PENDING / (time.perf_counter() - started)
    out["rss_1m"] = rss_mib(os.getpid())
    out["disk_bytes"] = sum(p.stat().st_size for p in path.parent.iterdir())
    ids = rng.choice(PENDING, LABELS, replace=False)
    started = time.perf_counter()
    for start in range(0, LABELS, STEP):
        state.step([], [Label(f"tx-{i}", int(i % 100 == 0), None, "chargeback") for i in ids[start : start + STEP]], {("l", 0): start + STEP})
        state.sent(state.outbox(STEP)[-1][0])
    out["join_per_s"] = LABELS / (time.perf_counter() - started)
    out["pending_after"] = state.pending
    return out


def end_to_end() -> tuple[float, int]:
    """Seconds from the join's start to the last joined event taken by the broker, with the prediction
    log and the labels already on their topics."""
    from prometheus_client import CollectorRegistry

    from learners.joiner import Joiner
    from streams import kafka as kio

    tmp = Path(tempfile.mkdtemp(prefix="perennial-bench-join-e2e-"))
    with LocalBroker(log_path=tmp / "broker.log") as broker:
        settings = Settings(kafka={"bootstrap_servers": broker.bootstrap, "topic": "bench"},
                            learn={"checkpoint_path": tmp / "checkpoint" / "learner.safetensors"}, join={"enabled": True, "maturity_s": 1e9})
        config = kio.client_config(broker.bootstrap)
        k = settings.kafka
        kio.ensure_topics(config, [k.predictions_topic, k.labels_topic, k.topic, k.dlq_topic])
        producer = kio.producer(config, linger_ms=20)
        rng = np.random.default_rng(1)
        for start in range(0, E2E_PREDICTIONS, 1000):
            rows = rng.random((1000, len(FEATURES)), dtype=np.float32)
            producer.send(k.predictions_topic, encode_batch([f"tx-{start + i}" for i in range(1000)],
                                                            [1.7e9 + start + i for i in range(1000)], rows, np.zeros(1000), "v1", FEATURES))
        for i in rng.choice(E2E_PREDICTIONS, E2E_LABELS, replace=False):
            producer.send(k.labels_topic, orjson.dumps({"id": f"tx-{i}", "label": int(i % 100 == 0)}))
        producer.flush()
        producer.close()
        joiner = Joiner(settings, FEATURES, CollectorRegistry())
        stop = threading.Event()
        started = time.perf_counter()
        joiner.start(stop)
        while joiner.metrics.sent._value.get() < E2E_LABELS and time.perf_counter() - started < 300:
            time.sleep(0.05)
        took = time.perf_counter() - started
        sent = int(joiner.metrics.sent._value.get())
        stop.set()
        joiner.thread.join(30)
    return took, sent


def main() -> list[tuple[str, str, str, str]]:
    child = subprocess.run([sys.executable, __file__, "--state"], capture_output=True, text=True, cwd=ROOT / "bench", check=True)
    f = orjson.loads(child.stdout.strip().splitlines()[-1])
    took, sent = end_to_end()
    growth = f["rss_1m"] - f["rss_100k"]
    per_million = f["disk_bytes"] / PENDING * 1e6 / 2**20
    return [
        ("resident set of a process holding the join: empty, 100,000 and 1,000,000 pending predictions (MiB)",
         f"{f['rss_start']:.0f}, {f['rss_100k']:.0f}, {f['rss_1m']:.0f}", "", ""),
        ("memory growth from 100,000 to 1,000,000 pending (MiB)", f"{growth:.1f}", "<= 32 (flat: the page cache)", "yes" if growth <= 32 else "no"),
        (f"disk per million pending predictions ({len(FEATURES)} features)", f"{per_million:,.0f} MiB", "", ""),
        ("predictions logged into the state per second", f"{f['log_per_s']:,.0f}", "", ""),
        (f"labels joined per second ({LABELS:,} against 1,000,000 pending)", f"{f['join_per_s']:,.0f}", "", ""),
        (f"end to end through the broker: {E2E_PREDICTIONS:,} predictions and {E2E_LABELS:,} labels read, joined events sent",
         f"{sent:,} in {took:.1f} s ({sent / took:,.0f} labels/s)", "", ""),
    ]


if __name__ == "__main__":
    if sys.argv[1:] == ["--state"]:
        print(orjson.dumps(state_figures()).decode())
    else:
        for row in main():
            print(row)
