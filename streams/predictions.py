"""The prediction-log and label formats: what the server scored, and labels that come later by id.

A **prediction batch** is what the server writes to ``<topic>.predictions``: one JSON object per Kafka
message, column by column, so that encoding it costs the server next to nothing::

    {"version": "v000004", "names": ["amount", ...], "ids": ["tx-1", ...], "times": [1764000000.0, ...],
     "scores": [0.031, ...], "rows": [[12.5, ...], ...]}

``rows`` hold the features as scored (float32), one row per id, in the order of ``names``. A producer
that already holds features may send plain **unlabeled events** to the same topic instead, one per
message: ``{"id": "tx-1", "time": 1764000000.0, "features": {"amount": 12.5, ...}}`` (the labeled-event
format without ``label``).

A **label** goes to ``<topic>.labels``: ``{"id": "tx-1", "label": 1, "time": 1766600000.0,
"source": "chargeback"}``; ``time`` (when the label was decided) and ``source`` are optional.

Examples
--------
>>> import numpy as np
>>> raw = encode_batch(["a", "b"], [1.0, 2.0], np.float32([[1, 2], [3, 4]]), np.float64([0.1, 0.9]), "v1", ("x", "y"))
>>> [(p.id, p.time, p.features, p.score, p.version) for p in parse_predictions(raw, ("x", "y"))]
[('a', 1.0, (1.0, 2.0), 0.1, 'v1'), ('b', 2.0, (3.0, 4.0), 0.9, 'v1')]
>>> parse_predictions(b'{"id": "c", "time": 5, "features": {"y": 2, "x": 1}}', ("x", "y"))[0].features
(1.0, 2.0)
>>> parse_label(b'{"id": "a", "label": true, "source": "chargeback"}')
Label(id='a', label=1, time=None, source='chargeback')
>>> parse_label(b'{"id": "a", "label": 2}')
Traceback (most recent call last):
...
streams.events.EventError: bad_label: 'label' must be 0 or 1
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson

from streams.events import MAX_EVENT_BYTES, EventError, feature_vector, json_object, label_value, parse_id, parse_time

MAX_BATCH_BYTES = 4 * 1024 * 1024
"""Largest prediction batch read (the server writes a few hundred kilobytes at most)."""
MAX_SOURCE_CHARS = 64
_SOURCE = re.compile(r"^[A-Za-z0-9_.-]+$")


class Prediction(NamedTuple):
    """One scored event: its features as scored, in the model's order."""

    id: str
    time: float
    features: tuple[float, ...]
    score: float | None
    version: str | None


class Label(NamedTuple):
    """A label that came after its event: the event's id and the outcome."""

    id: str
    label: int
    time: float | None
    source: str


def encode_batch(ids: Sequence[Any], times: Sequence[float], rows: np.ndarray, scores: np.ndarray, version: str,
                 names: Sequence[str]) -> bytes:
    """One prediction batch (numpy arrays are encoded by orjson in C: ~0.2 us an event)."""
    return orjson.dumps({"version": version, "names": list(names), "ids": [str(i) for i in ids], "times": list(times),
                         "scores": np.asarray(scores, np.float64), "rows": np.ascontiguousarray(rows, np.float32)},
                        option=orjson.OPT_SERIALIZE_NUMPY)


def parse_predictions(raw: bytes | None, names: Sequence[str]) -> list[Prediction]:
    """The predictions in one record of the prediction log: a batch or one unlabeled event. A batch
    written for other feature names, or any malformed part, refuses the whole record (EventError)."""
    doc = json_object(raw, MAX_BATCH_BYTES, "a prediction record")
    assert raw is not None  # json_object refuses a null value
    if "ids" not in doc:
        if len(raw) > MAX_EVENT_BYTES:
            raise EventError("too_large", f"the event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}")
        return [Prediction(parse_id(doc.get("id")), parse_time(doc.get("time")), feature_vector(doc.get("features"), names),
                           None, None)]
    if doc.get("names") != list(names):
        raise EventError("bad_features", f"the batch was scored on features {doc.get('names')!r}; the model expects {', '.join(names)}")
    ids, times, scores, rows = doc.get("ids"), doc.get("times"), doc.get("scores"), doc.get("rows")
    if not (isinstance(ids, list) and isinstance(times, list) and isinstance(scores, list) and isinstance(rows, list)) \
            or not len(ids) == len(times) == len(scores) == len(rows):
        raise EventError("bad_features", "a prediction batch needs lists 'ids', 'times', 'scores' and 'rows' of one length")
    try:
        matrix = np.asarray(rows, dtype=np.float64)
        score_values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise EventError("bad_value", "'rows' and 'scores' must hold numbers only") from None
    if matrix.shape != (len(ids), len(names)) or not np.isfinite(matrix).all() or not np.isfinite(score_values).all():
        raise EventError("bad_value", f"each row must hold {len(names)} finite numbers, each score a finite number")
    version = doc.get("version")
    return [Prediction(parse_id(i), parse_time(t), tuple(row), s, version if isinstance(version, str) else None)
            for i, t, row, s in zip(ids, times, matrix.tolist(), score_values.tolist())]


def parse_label(raw: bytes | None) -> Label:
    """One label record; EventError with a reason and a message a producer can act on otherwise."""
    doc = json_object(raw, MAX_EVENT_BYTES, "a label")
    if "label" not in doc:
        raise EventError("bad_label", "a label needs 'label' (0 or 1)")
    source = doc.get("source", "unknown")
    if not isinstance(source, str) or not source or len(source) > MAX_SOURCE_CHARS or not _SOURCE.match(source):
        raise EventError("bad_label", f"'source' must be a word of letters, digits, '_', '.' or '-' (at most {MAX_SOURCE_CHARS})")
    time = doc.get("time")
    return Label(parse_id(doc.get("id")), label_value(doc["label"]), None if time is None else parse_time(time), source)
