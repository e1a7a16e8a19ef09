"""The prediction-log and label formats: what the server scored, and labels that come later by id.

A **prediction batch** is what the server writes to ``<topic>.predictions``: one JSON object per Kafka
message, column by column, so that encoding it costs the server next to nothing::

    {"version": "v000004", "names": ["amount", ...], "ids": ["tx-1", ...], "times": [1764000000.0, ...],
     "scores": [0.031, ...], "rows": [[12.5, ...], ...]}

``rows`` hold the features as scored (float32), one row per id, in the order of ``names``. A producer
that already holds features may send plain **unlabeled events** to the same topic instead, one per
message: ``{"id": "tx-1", "time": 1764000000.0, "features": {"amount": 12.5, ...}}`` (the labeled-event
format without ``label``).

With a schema that declares optional or categorical features (``FeatureSchema.features``, passed here
in place of the names), a batch carries the raw vectors the server scored (``learners/schema.py``)
so that the join rebuilds them exactly:

- an optional number that was missing is ``null`` in ``rows``;
- a categorical feature's column in ``rows`` is ``null``, and its values are under ``categories``,
  by name, one per row: the vocabulary's key (never the code, which belongs to one version's
  vocabulary), ``null`` where the optional category was missing, and ``OTHER_KEY`` (``"\\u0000other"``,
  a key no history holds; lengthened with further ``"\\u0000"`` in a vocabulary that would hold it)
  for a value outside the vocabulary, scored as other::

    {..., "names": ["amount", "country"], "rows": [[12.5, null], [3.0, null]],
     "categories": {"country": ["US", "\\u0000other"]}}

  The value actually sent for an unseen category is not logged: the server counts it, by feature, in
  ``perennial_server_unseen_categories_total``. Read back with the same vocabulary, ``OTHER_KEY`` is other
  again, so the raw vector is the one scored. ``CategoryKeys`` turns codes back into keys; the join
  (``learners/join.py``) writes its joined events with them, so the learner's ``parse_event`` with the
  schema's ``features`` makes the same raw vector again.

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

A schema's features: an optional number and a category.

>>> from streams.events import Features
>>> f = Features(("x", "country"), optional={"x"}, categories={"country": {"US": 2, "GB": 3}})
>>> raw = encode_batch(["a", "b"], [1.0, 2.0], np.float32([[np.nan, 3], [4, 0]]), np.float64([0.1, 0.9]), "v1", f)
>>> print(raw[raw.index(b'"rows"'):].decode())
"rows":[[null,null],[4.0,null]],"categories":{"country":["GB","\\u0000other"]}}
>>> [p.features for p in parse_predictions(raw, f)]
[(nan, 3.0), (4.0, 0.0)]
>>> parse_label(b'{"id": "a", "label": true, "source": "chargeback"}')
Label(id='a', label=1, time=None, source='chargeback')
>>> parse_label(b'{"id": "a", "label": 2}')
Traceback (most recent call last):
...
streams.events.EventError: bad_label: 'label' must be 0 or 1
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson

from streams.events import (
    MAX_EVENT_BYTES,
    MISSING,
    OTHER,
    EventError,
    Features,
    feature_vector,
    json_object,
    label_value,
    parse_id,
    parse_time,
)

MAX_BATCH_BYTES = 4 * 1024 * 1024
"""Largest prediction batch read (the server writes a few hundred kilobytes at most)."""
MAX_SOURCE_CHARS = 64
_SOURCE = re.compile(r"^[A-Za-z0-9_.-]+$")
OTHER_KEY = "\u0000other"
"""The key logged for a category scored as other (see the module's documentation and ``other_key``)."""


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


def other_key(vocabulary: Collection[str]) -> str:
    """``OTHER_KEY``, lengthened with ``"\\u0000"`` until it is outside ``vocabulary`` (so it reads back as other)."""
    key = OTHER_KEY
    while key in vocabulary:
        key += "\u0000"
    return key


class CategoryKeys:
    """The keys of raw category codes, per categorical feature of ``features`` (none for plain names
    or a schema without categories): a vocabulary code to its key, ``MISSING`` (or NaN) to None,
    ``OTHER`` (or any code outside the vocabulary) to ``other_key``."""

    def __init__(self, features: Sequence[str]):
        self.columns: list[tuple[int, str, dict[float, str | None], str]] = []
        if isinstance(features, Features):
            for i in features.positions:
                vocabulary = features.categories[features[i]]
                other = other_key(vocabulary)
                keys: dict[float, str | None] = {float(code): key for key, code in vocabulary.items()}
                self.columns.append((i, features[i], {**keys, float(OTHER): other, float(MISSING): None}, other))

    def __bool__(self) -> bool:
        return bool(self.columns)

    def of_rows(self, rows: np.ndarray) -> dict[str, list[str | None]]:
        """Each categorical feature's keys, by name, one per row of raw vectors."""
        return {name: [None if c != c else keys.get(c, other) for c in rows[:, i].tolist()] for i, name, keys, other in self.columns}

    def in_row(self, values: list[Any]) -> list[Any]:
        """One raw vector (a list, changed in place and returned) with its codes replaced by their keys."""
        for i, _, keys, other in self.columns:
            code = values[i]
            values[i] = None if code != code else keys.get(code, other)
        return values


def encode_batch(ids: Sequence[Any], times: Sequence[float], rows: np.ndarray, scores: np.ndarray, version: str,
                 names: Sequence[str]) -> bytes:
    """One prediction batch of raw vectors (numpy arrays are encoded by orjson in C: ~0.2 us an event).
    ``names`` may be a schema's ``features``: then categories go by key (see the module's documentation)."""
    matrix = np.ascontiguousarray(rows, np.float32)
    doc: dict[str, Any] = {"version": version, "names": list(names), "ids": [str(i) for i in ids], "times": list(times),
                           "scores": np.asarray(scores, np.float64), "rows": matrix}
    keys = CategoryKeys(names)
    if keys:
        doc["categories"] = keys.of_rows(matrix)
        matrix = doc["rows"] = matrix.copy()
        matrix[:, [i for i, *_ in keys.columns]] = np.nan  # written as null: a code means nothing outside its version
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def parse_predictions(raw: bytes | None, names: Sequence[str]) -> list[Prediction]:
    """The predictions in one record of the prediction log: a batch or one unlabeled event. A batch
    written for other feature names, or any malformed part, refuses the whole record (EventError).
    ``names`` may be a schema's ``features``: each prediction's features are then its raw vector (NaN
    for an optional number missing, category codes of this vocabulary)."""
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
        matrix = np.asarray(rows, dtype=np.float64)  # null: NaN
        score_values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise EventError("bad_value", "'rows' and 'scores' must hold numbers only") from None
    if matrix.shape != (len(ids), len(names)) or not np.isfinite(score_values).all():
        raise EventError("bad_value", f"each row must hold {len(names)} finite numbers, each score a finite number")
    if isinstance(names, Features) and names.declared:
        _declared(matrix, doc.get("categories"), names)
    elif not np.isfinite(matrix).all():
        raise EventError("bad_value", f"each row must hold {len(names)} finite numbers, each score a finite number")
    version = doc.get("version")
    return [Prediction(parse_id(i), parse_time(t), tuple(row), s, version if isinstance(version, str) else None)
            for i, t, row, s in zip(ids, times, matrix.tolist(), score_values.tolist())]


def _declared(matrix: np.ndarray, categories: Any, features: Features) -> None:
    """Check the numbers of a batch's raw vectors (NaN only where a number is optional) and write its
    categories' codes into their columns, in place."""
    numbers = [i for i, name in enumerate(features) if name not in features.categories]
    for i in numbers:
        column = matrix[:, i]
        if np.isinf(column).any() or (features[i] not in features.optional and np.isnan(column).any()):
            raise EventError("bad_value", f"feature {features[i]!r} must hold finite numbers"
                                          f"{' or null (missing)' if features[i] in features.optional else ''}")
    if not isinstance(categories, dict):
        raise EventError("bad_features", "a batch of a schema with categories needs 'categories': each categorical feature's keys by name")
    for i in features.positions:
        name = features[i]
        keys, vocabulary, optional = categories.get(name), features.categories[name], name in features.optional
        if not isinstance(keys, list) or len(keys) != len(matrix) \
                or not all(type(k) is str or (k is None and optional) for k in keys):
            raise EventError("bad_value", f"'categories' must hold for {name!r} one string{' or null' if optional else ''} per row")
        matrix[:, i] = [float(MISSING) if k is None else float(vocabulary.get(k, OTHER)) for k in keys]


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
