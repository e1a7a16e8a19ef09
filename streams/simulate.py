"""The simulator's edges: push labeled events to Kafka at a rate, or write a history file."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from perennial.settings import Settings
from streams import kafka as kio
from streams.events import encode_event
from streams.simulator import FEATURES, PATTERNS, Simulator, Transactions


def _pace(sent: int, rate: float, started: float) -> None:
    """Sleep until ``sent`` events at ``rate`` per second from ``started`` are due."""
    ahead = sent / rate - (time.monotonic() - started)
    if ahead > 0:
        time.sleep(ahead)


def encode_rows(tx: Transactions) -> list[tuple[bytes, bytes]]:
    """(key, value) of each transaction as a labeled event keyed by card."""
    feats = tx.features.tolist()
    out = []
    for i in range(len(tx)):
        card = f"c{tx.card[i]}"
        value = encode_event(
            str(tx.id[i]), float(tx.time[i]), dict(zip(FEATURES, feats[i])), int(tx.pattern[i] > 0),
            {"card": card, "terminal": f"t{tx.terminal[i]}"},
        )
        out.append((card.encode(), value))
    return out


def push(sim: Simulator, settings: Settings, start_day: int, end_day: float, stop: threading.Event, max_events: int | None = None) -> int:
    """Send labeled events in label-arrival order at ``settings.simulate.rate`` per second."""
    config = kio.client_config(settings.kafka.bootstrap_servers, settings.kafka.security)
    kio.ensure_topics(config, [settings.kafka.topic])
    producer = kio.producer(config)
    rate, sent, started = settings.simulate.rate, 0, time.monotonic()
    try:
        for chunk in sim.labeled_stream(start_day, end_day=end_day):
            for key, value in encode_rows(chunk):
                if stop.is_set() or (max_events is not None and sent >= max_events):
                    return sent
                producer.send(settings.kafka.topic, value=value, key=key)
                sent += 1
                if sent % 100 == 0:
                    _pace(sent, rate, started)
        return sent
    finally:
        producer.flush(30)
        producer.close()


PREDICT_BATCH = 200
"""Transactions per /v1/predict request of ``score_and_label``."""


def score_and_label(sim: Simulator, settings: Settings, server_url: str, start_day: int, end_day: float, stop: threading.Event,
                    max_events: int | None = None) -> dict[str, int]:
    """Labels as they really come: post each transaction, in event-time order, to a server for
    scoring (with its id and event time, so a server logging predictions logs it), at
    ``settings.simulate.rate`` per second; send each fraud's label alone, ``{"id", "label": 1,
    "time", "source": "chargeback"}``, to ``<topic>.labels`` once the stream has reached its label
    time. Legitimate transactions are never labeled: `perennial learn` with ``join.enabled`` takes
    them as negatives at maturity. Requests the server refuses or fails are counted, not retried."""
    import heapq

    import httpx
    import orjson

    from perennial.client import Client, PerennialError

    config = kio.client_config(settings.kafka.bootstrap_servers, settings.kafka.security)
    topic = settings.kafka.labels_topic
    kio.ensure_topics(config, [topic])
    producer = kio.producer(config)
    due: list[tuple[float, str]] = []  # (label time, id) of frauds scored, not yet labeled
    counts = {"scored": 0, "refused": 0, "labels": 0}
    rate, started = settings.simulate.rate, time.monotonic()
    day = start_day

    def send_due(now: float) -> None:
        while due and due[0][0] <= now:
            label_time, event_id = heapq.heappop(due)
            producer.send(topic, key=event_id.encode(), value=orjson.dumps({"id": event_id, "label": 1, "time": label_time, "source": "chargeback"}))
            counts["labels"] += 1

    try:
        with Client(server_url, timeout=30) as client:
            while day < end_day:
                n = int(min(2, end_day - day))
                tx = sim.generate(day, n)
                day += n
                feats = tx.features.tolist()
                for lo in range(0, len(tx), PREDICT_BATCH):
                    if stop.is_set() or (max_events is not None and counts["scored"] >= max_events):
                        return counts
                    hi = min(lo + PREDICT_BATCH, len(tx))
                    body = [{"id": str(tx.id[i]), "time": float(tx.time[i]), "features": dict(zip(FEATURES, feats[i]))} for i in range(lo, hi)]
                    try:
                        client.predict_many(body)
                        ok = True
                    except (PerennialError, httpx.HTTPError):
                        ok = False
                    counts["scored" if ok else "refused"] += hi - lo
                    for i in range(lo, hi):
                        if ok and tx.pattern[i] > 0:
                            heapq.heappush(due, (float(tx.label_time[i]), str(tx.id[i])))
                    send_due(float(tx.time[hi - 1]))
                    _pace(counts["scored"] + counts["refused"], rate, started)
        return counts
    finally:
        producer.flush(30)
        producer.close()


def write_history(sim: Simulator, path: Path, start_day: int, days: int) -> int:
    """A CSV of labeled events (id, time, card, terminal, pattern, label, features) for pretraining."""
    import pandas as pd

    tx = sim.generate(start_day, days)
    df = pd.DataFrame(tx.features, columns=FEATURES)
    df.insert(0, "label", tx.label)
    df.insert(0, "pattern", np.asarray(("none",) + PATTERNS)[tx.pattern])
    df.insert(0, "terminal", tx.terminal)
    df.insert(0, "card", tx.card)
    df.insert(0, "time", tx.time)
    df.insert(0, "id", tx.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return len(df)
