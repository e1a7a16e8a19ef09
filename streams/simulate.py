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
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        return sent
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
