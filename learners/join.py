"""The join of late labels to what was served: its state, on disk.

Fraud labels come days or weeks after the transaction, as an id and an outcome (a chargeback, an
analyst's decision), and most transactions are never labeled at all: they are taken as legitimate once
they have matured. The servers log each scored event with the features as scored
(``streams/predictions.py``); ``JoinState`` keeps those predictions until a label joins them or they
mature, and turns each into a labeled event with the served features (no training/serving skew):

- a label for a pending prediction: the event with that label (outcome ``joined``);
- a prediction ``maturity_s`` old with no label: the event labeled 0, source ``matured``;
- a fraud label after a legitimate one (matured, or an explicit 0), within ``correction_window_s`` of
  maturity: an event ``<id>#late`` labeled 1 (``correction``; the learner has the first event already
  and drops a repeated id); a legitimate label after a fraud one is a ``conflict``, counted, not applied;
  the same label again a ``duplicate``;
- a label whose prediction is not known: parked (``parked``), joined if the prediction comes within
  ``orphan_keep_s``, else counted as expired and dropped.

Time is the prediction log's clock: the latest event time logged, except that an event time more than
``max_clock_lead_s`` ahead of the wall clock does not move it (one request with a time in 2100 would
otherwise mature every pending prediction at once). Everything lives in one SQLite file
(``join.path``; memory is its page cache, ``join.cache_mib``), written in one transaction per batch of
records together with the offsets read to and the events to send (an outbox the Kafka edge empties
after the broker has them), so a crash anywhere loses nothing: records after the saved offsets are read
again, and an event still in the outbox is sent again (at least once; the learner drops repeated ids).

Given the schema's ``features`` in place of the names, the join reads the prediction log's raw vectors
with their declarations (``streams/predictions.py``) and stores them as they were scored (NaN for an
optional number missing, category codes); each event it writes carries ``null`` for a missing value
and a category's key (``OTHER_KEY`` for one scored as other), so the learner's ``parse_event`` with
the same ``features`` makes the raw vector the server scored.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perennial.settings import JoinSettings
from streams.events import Features, encode_event
from streams.predictions import CategoryKeys, Label, Prediction

CORRECTION_SUFFIX = "#late"
MATURED = "matured"
SWEEP_ROWS = 10_000
"""Most predictions matured or expired in one step (the rest in the next steps)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY, time REAL NOT NULL, features BLOB NOT NULL, score REAL, version TEXT,
    label INTEGER, source TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_by_time ON predictions(time) WHERE label IS NULL;
CREATE INDEX IF NOT EXISTS settled_by_time ON predictions(time) WHERE label IS NOT NULL;
CREATE TABLE IF NOT EXISTS orphans (id TEXT PRIMARY KEY, label INTEGER NOT NULL, time REAL, source TEXT NOT NULL,
                                    parked REAL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS orphans_by_parked ON orphans(parked);
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (topic TEXT NOT NULL, partition INTEGER NOT NULL, next INTEGER NOT NULL,
                                    PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""


@dataclass
class Step:
    """What one batch of records did: counts for the metrics, label delays by source."""

    predictions: dict[str, int] = field(default_factory=dict)
    labels: dict[tuple[str, str], int] = field(default_factory=dict)
    orphans: dict[str, int] = field(default_factory=dict)
    matured: int = 0
    delays: list[tuple[str, float]] = field(default_factory=list)

    def count(self, table: dict, key, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n


class JoinState:
    def __init__(self, settings: JoinSettings, names: Sequence[str], path: Path):
        self.settings, self.path = settings, path
        self.names = names if isinstance(names, Features) else tuple(names)
        self.keys = CategoryKeys(self.names)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(f"PRAGMA cache_size=-{settings.cache_mib * 1024}")
        self.db.executescript(_SCHEMA)
        row = self.db.execute("SELECT value FROM meta WHERE key = 'clock'").fetchone()
        self.clock = row[0] if row else -np.inf
        self.pending = self.db.execute("SELECT COUNT(*) FROM predictions WHERE label IS NULL").fetchone()[0]
        self.parked = self.db.execute("SELECT COUNT(*) FROM orphans").fetchone()[0]

    # -- reading ------------------------------------------------------------------------------

    def offsets(self) -> dict[tuple[str, int], int]:
        return {(t, p): n for t, p, n in self.db.execute("SELECT topic, partition, next FROM offsets")}

    def outbox(self, limit: int = 10_000) -> list[tuple[int, bytes]]:
        return self.db.execute("SELECT seq, value FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()

    def sent(self, last_seq: int) -> None:
        """The broker has every outbox event up to ``last_seq``."""
        self.db.execute("DELETE FROM outbox WHERE seq <= ?", (last_seq,))

    def oldest_pending_age(self) -> float:
        oldest = self.db.execute("SELECT MIN(time) FROM predictions WHERE label IS NULL").fetchone()[0]
        return 0.0 if oldest is None else max(0.0, self.clock - oldest)

    def close(self) -> None:
        self.db.close()

    # -- one step: records in, events out, in one transaction -----------------------------------

    def step(self, predictions: Iterable[Prediction], labels: Iterable[Label], offsets: dict[tuple[str, int], int]) -> Step:
        """Apply a batch of records read up to ``offsets``, then mature and expire what is due; all
        or nothing."""
        step = Step()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            pending, parked, clock = self.pending, self.parked, self.clock
            for prediction in predictions:
                self._prediction(prediction, step)
            for label in labels:
                self._label(label, step)
            self._mature(step)
            self._expire(step)
            self.db.executemany("INSERT OR REPLACE INTO offsets VALUES (?, ?, ?)", [(t, p, n) for (t, p), n in offsets.items()])
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('clock', ?)", (self.clock,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            self.pending, self.parked, self.clock = pending, parked, clock
            raise
        return step

    def _emit(self, event_id: str, time: float, features: bytes, label: int) -> None:
        values = self.keys.in_row(np.frombuffer(features, np.float32).tolist())
        self.db.execute("INSERT INTO outbox (value) VALUES (?)", (encode_event(event_id, time, dict(zip(self.names, values)), label),))

    def _prediction(self, p: Prediction, step: Step) -> None:
        features = np.asarray(p.features, np.float32).tobytes()
        inserted = self.db.execute("INSERT OR IGNORE INTO predictions (id, time, features, score, version) VALUES (?, ?, ?, ?, ?)",
                                   (p.id, p.time, features, p.score, p.version)).rowcount
        if not inserted:
            step.count(step.predictions, "duplicate")  # the first scoring of an id is what was served
            return
        if p.time - time.time() > self.settings.max_clock_lead_s:
            step.count(step.predictions, "future_time")
        else:
            step.count(step.predictions, "logged")
            self.clock = max(self.clock, p.time)
        orphan = self.db.execute("SELECT label, time, source FROM orphans WHERE id = ?", (p.id,)).fetchone() if self.parked else None
        if orphan is None:
            self.pending += 1
            return
        label, label_time, source = orphan
        self.db.execute("DELETE FROM orphans WHERE id = ?", (p.id,))
        self.parked -= 1
        self.db.execute("UPDATE predictions SET label = ?, source = ? WHERE id = ?", (label, source, p.id))
        self._emit(p.id, p.time, features, label)
        step.count(step.orphans, "joined")
        step.delays.append((source, self._delay(label_time, p.time)))

    def _label(self, lab: Label, step: Step) -> None:
        row = self.db.execute("SELECT time, features, label FROM predictions WHERE id = ?", (lab.id,)).fetchone()
        if row is None:
            parked = self.db.execute("SELECT label FROM orphans WHERE id = ?", (lab.id,)).fetchone()
            if parked is not None and parked[0] == lab.label:
                step.count(step.labels, (lab.source, "duplicate"))
            elif parked is not None and lab.label == 0:
                step.count(step.labels, (lab.source, "conflict"))
            else:
                self.db.execute("INSERT OR REPLACE INTO orphans VALUES (?, ?, ?, ?, ?)", (lab.id, lab.label, lab.time, lab.source, self._now()))
                self.parked += parked is None
                step.count(step.labels, (lab.source, "parked"))
            return
        time, features, old = row
        if old is None:
            self.db.execute("UPDATE predictions SET label = ?, source = ? WHERE id = ?", (lab.label, lab.source, lab.id))
            self.pending -= 1
            self._emit(lab.id, time, features, lab.label)
            step.count(step.labels, (lab.source, "joined"))
            step.delays.append((lab.source, self._delay(lab.time, time)))
        elif old == lab.label:
            step.count(step.labels, (lab.source, "duplicate"))
        elif lab.label == 1:
            self.db.execute("UPDATE predictions SET label = 1, source = ? WHERE id = ?", (lab.source, lab.id))
            self._emit(lab.id + CORRECTION_SUFFIX, time, features, 1)
            step.count(step.labels, (lab.source, "correction"))
            step.delays.append((lab.source, self._delay(lab.time, time)))
        else:
            step.count(step.labels, (lab.source, "conflict"))  # legitimate after fraud: not applied

    def _delay(self, label_time: float | None, event_time: float) -> float:
        """From an event to its label: the label's own time, else the clock when it was read."""
        return max(0.0, (label_time if label_time is not None else self.clock) - event_time)

    def _mature(self, step: Step) -> None:
        due = self.db.execute("SELECT id, time, features FROM predictions WHERE label IS NULL AND time < ? ORDER BY time LIMIT ?",
                              (self.clock - self.settings.maturity_s, SWEEP_ROWS)).fetchall()
        for event_id, event_time, features in due:
            self._emit(event_id, event_time, features, 0)
        self.db.executemany("UPDATE predictions SET label = 0, source = ? WHERE id = ?", [(MATURED, r[0]) for r in due])
        self.pending -= len(due)
        step.matured += len(due)
        # settled predictions are kept for corrections, then forgotten
        horizon = self.clock - self.settings.maturity_s - self.settings.correction_window_s
        self.db.execute("DELETE FROM predictions WHERE id IN (SELECT id FROM predictions WHERE label IS NOT NULL AND time < ? LIMIT ?)",
                        (horizon, SWEEP_ROWS))

    def _now(self) -> float | None:
        """The clock, None before the first prediction (a label parked then is timed from the first)."""
        return self.clock if np.isfinite(self.clock) else None

    def _expire(self, step: Step) -> None:
        if self._now() is None:
            return
        self.db.execute("UPDATE orphans SET parked = ? WHERE parked IS NULL", (self.clock,))
        expired = self.db.execute("DELETE FROM orphans WHERE id IN (SELECT id FROM orphans WHERE parked < ? LIMIT ?)",
                                  (self.clock - self.settings.orphan_keep_s, SWEEP_ROWS)).rowcount
        over = self.parked - expired - self.settings.max_orphans
        if over > 0:
            expired += self.db.execute("DELETE FROM orphans WHERE id IN (SELECT id FROM orphans ORDER BY parked LIMIT ?)", (over,)).rowcount
        if expired:
            self.parked -= expired
            step.count(step.orphans, "expired", expired)
