"""The labeled-event format and its validation.

A labeled event is one JSON object::

    {"id": "tx-42", "time": 1764331200.0, "features": {"amount": 12.5, ...}, "label": 0,
     "entities": {"card": "c-17", "terminal": "t-3"}}

``time`` is the event time, epoch seconds or an ISO-8601 string; ``label`` is 0 or 1 (true/false
also accepted); ``entities`` is optional. ``features`` must hold exactly the model's feature names,
each a finite number. Anything else is rejected with a reason code (bounded set, used as a metric
label and a dead-letter header) and a message a producer can act on.

Given a ``Features`` (the names with what a schema declares beyond numbers) in place of the names,
a feature declared optional may be absent or null, and a categorical feature takes a string, an
integer, a boolean or a whole float, canonicalised to one key (``"US"``; ``7`` and ``7.0`` → ``"7"``;
``true`` → ``"true"``). The result is still one float per feature, the raw vector:

* an optional number that is absent or null is NaN (the schema's ``transform`` imputes it);
* a category is a code: ``OTHER`` (0.0) for a key outside the vocabulary, which is no error but
  is counted (``Features.unseen``), ``MISSING`` (1.0) for an optional one absent or null, and
  ``FIRST_CODE`` + its index (2.0, 3.0, ...) for a key of the vocabulary.

A required feature that is absent is still ``missing_feature``, and null where a number is
required still ``bad_value``, exactly as for plain names.

Examples
--------
>>> e = parse_event(b'{"id": "a", "time": 0, "features": {"x": 1}, "label": 1}', ("x",))
>>> e.id, e.features, e.label
('a', (1.0,), 1)
>>> parse_event(b'{"id": "a", "time": 0, "features": {}, "label": 1}', ("x",))
Traceback (most recent call last):
...
streams.events.EventError: missing_feature: feature 'x' is missing; the model expects x
>>> f = Features(("x", "y", "country"), optional={"y"}, categories={"country": {"US": 2, "GB": 3}})
>>> feature_vector({"x": 1, "country": "GB"}, f)
(1.0, nan, 3.0)
>>> row = feature_vector({"x": 1, "y": None, "country": "FR"}, f)
>>> row, f.unseen(row)
((1.0, nan, 0.0), 1)
>>> feature_vector({"x": 1, "country": 7.5}, f)
Traceback (most recent call last):
...
streams.events.EventError: bad_value: feature 'country' is a category: a string, an integer or a boolean, got the number 7.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

MAX_EVENT_BYTES = 64 * 1024
_FLOAT, _NUMBER = {float}, {float, int}
MAX_ID_CHARS = 256
_FIRST_SECOND = datetime(1, 1, 1, tzinfo=UTC).timestamp()
_LAST_SECOND = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()

REASONS = (
    "too_large",
    "not_json",
    "not_object",
    "bad_id",
    "bad_time",
    "bad_features",
    "missing_feature",
    "unknown_feature",
    "bad_value",
    "bad_label",
    "bad_entities",
    "duplicate_id",
    "internal_error",
)


class EventError(ValueError):
    """An event that cannot be used, with a reason code from REASONS and a readable message."""

    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


OTHER, MISSING, FIRST_CODE = 0, 1, 2
"""Category codes: a key outside the vocabulary, an optional category absent or null, the first key
of the vocabulary (the key at index i has code FIRST_CODE + i)."""


class Features(tuple[str, ...]):
    """Feature names in schema order, and what the schema declares beyond numbers.

    A tuple of the names, so it goes wherever the names go (and compares equal to them); in
    addition ``optional``, the names that may be absent or null, and ``categories``, for each
    categorical feature its vocabulary, key to code (codes from FIRST_CODE, distinct). Read-only by
    convention. ``FeatureSchema.features`` makes one; ``feature_vector`` and ``parse_event`` take it
    in place of the names.
    """

    optional: frozenset[str]
    categories: dict[str, dict[str, int]]
    bulk: bool
    """No categories: the bulk conversion of numbers applies."""
    positions: tuple[int, ...]
    """Indices of the categorical features in the raw vector."""
    declared: bool
    """Some feature is optional or categorical."""
    name_set: frozenset[str]
    plan: tuple[tuple[str, dict[str, float] | None, bool], ...]

    def __new__(cls, names: Iterable[str], optional: Iterable[str] = (), categories: Mapping[str, Mapping[str, int]] | None = None) -> Features:
        self = super().__new__(cls, names)
        self.optional = frozenset(optional)
        self.categories = {name: dict(vocab) for name, vocab in (categories or {}).items()}
        unknown = sorted((self.optional | set(self.categories)) - set(self))
        if unknown:
            raise ValueError(f"feature {unknown[0]!r} is declared but not one of the names")
        for name, vocab in self.categories.items():
            codes = list(vocab.values())
            if not all(type(k) is str for k in vocab) or not all(type(c) is int and c >= FIRST_CODE for c in codes) \
                    or len(set(codes)) != len(codes):
                raise ValueError(f"feature {name!r}: a vocabulary maps strings to distinct integer codes from {FIRST_CODE}")
        self.bulk = not self.categories
        self.positions = tuple(i for i, name in enumerate(self) if name in self.categories)
        self.declared = bool(self.optional or self.categories)
        self.name_set = frozenset(self)
        # per feature, in order: its name, its vocabulary as key -> float code (None: a number), optional or not
        self.plan = tuple((name, _lookup(self.categories[name]) if name in self.categories else None, name in self.optional)
                          for name in self)
        return self

    def __repr__(self) -> str:
        return f"Features({tuple(self)!r}, optional={sorted(self.optional)!r}, categories={self.categories!r})"

    def unseen(self, row: Sequence[float]) -> int:
        """How many categorical values of one raw vector were outside their vocabulary (code OTHER)."""
        return sum(1 for i in self.positions if row[i] == OTHER)


def _lookup(vocabulary: dict[str, int]) -> dict[str, float]:
    """A vocabulary as the fast path reads it: every text that ``category_key`` makes one of its keys, to its code."""
    codes = {k: float(c) for k, c in vocabulary.items()}
    lookup = dict(codes)
    for text, key in _BOOLEAN_TEXT.items():
        if key in codes:
            lookup[text] = codes[key]
        else:  # a key no text can become
            lookup.pop(text, None)
    return lookup


class LabeledEvent(NamedTuple):
    """One valid labeled event (a named tuple: immutable, and cheap to make at stream rates)."""

    id: str
    time: float
    features: tuple[float, ...]
    """Feature values in the model's feature order (the raw vector: NaN and category codes where
    the names were ``Features`` that declare them)."""
    label: int
    entities: dict[str, str]


def parse_time(value: Any) -> float:
    """Epoch seconds from a number or an ISO-8601 string (naive strings are taken as UTC), within
    the years 1 to 9999 that ISO-8601 can write (so epoch milliseconds are refused, not taken as
    a date thirty thousand years ahead)."""
    if isinstance(value, bool):
        raise EventError("bad_time", "'time' must be epoch seconds or an ISO-8601 string, not a boolean")
    if isinstance(value, (int, float)):
        seconds = float(value) if abs(value) <= _LAST_SECOND else math.inf
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise EventError("bad_time", f"'time' {value[:40]!r} is not an ISO-8601 timestamp") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        seconds = parsed.timestamp()
    else:
        raise EventError("bad_time", "'time' is missing or not epoch seconds / an ISO-8601 string")
    if not _FIRST_SECOND <= seconds <= _LAST_SECOND:  # also NaN and infinities
        raise EventError("bad_time", f"'time' {value!r:.40} is not a date in the years 1 to 9999 (epoch seconds are expected, not milliseconds)")
    return seconds


def feature_vector(features: Any, names: Sequence[str], reason_prefix: str = "") -> tuple[float, ...]:
    """Values of ``features`` (a mapping of name to number) in the order of ``names``.

    Shared by the event parser and the HTTP API, so both reject the same inputs the same way. The
    usual case is converted in bulk; anything else takes ``exact_feature_vector``, which names the
    problem. Both give the same answer for every input. ``names`` may be ``Features``, declaring
    optional and categorical features (see the module's documentation).
    """
    if type(features) is dict:
        declared = names if isinstance(names, Features) and names.declared else None
        if len(features) == len(names) and (declared is None or declared.bulk):
            values = _bulk_values(features, names)
            if values is not None:
                return values
        if declared is not None:
            values = _declared_values(features, declared)
            if values is not None:
                return values
    return exact_feature_vector(features, names, reason_prefix)


_NAN, _OTHER_CODE, _MISSING_CODE = math.nan, float(OTHER), float(MISSING)


def _declared_values(features: dict, names: Features) -> tuple[float, ...] | None:
    """The usual case of declared features in one pass: no unknown name, numbers that are floats or
    ints (None where optional), categories that are strings (None where optional); None for
    anything else, which the exact path then names."""
    if not features.keys() <= names.name_set:
        return None
    values: list[float] = []
    total = 0.0
    try:
        for name, vocab, optional in names.plan:
            v: Any = features.get(name)
            kind = type(v)
            if vocab is not None:
                if kind is str:
                    values.append(vocab.get(v, _OTHER_CODE))
                elif v is None and optional:
                    values.append(_MISSING_CODE)
                else:
                    return None
            elif kind is float or kind is int:
                number = float(v)
                total += number
                values.append(number)
            elif v is None and optional:
                values.append(_NAN)
            else:
                return None
    except OverflowError:  # an integer beyond the range of a float
        return None
    return tuple(values) if math.isfinite(total) else None


def _bulk_values(features: dict, names: Sequence[str]) -> tuple[float, ...] | None:
    """Every name present with a float or int of finite sum, as floats; None for anything else."""
    try:
        values = tuple([features[n] for n in names])
        types = set(map(type, values))
        if types != _FLOAT:
            if not types <= _NUMBER:
                return None
            values = tuple(map(float, values))
    except (KeyError, OverflowError):  # a misnamed feature; an integer beyond the range of a float
        return None
    return values if math.isfinite(sum(values)) else None


_NO_NAMES: frozenset[str] = frozenset()


def declarations(names: Sequence[str]) -> tuple[frozenset[str], dict[str, dict[str, int]]]:
    """The optional names and the vocabularies that ``names`` declares (none for plain names)."""
    return (names.optional, names.categories) if isinstance(names, Features) else (_NO_NAMES, {})


def exact_feature_vector(features: Any, names: Sequence[str], reason_prefix: str = "") -> tuple[float, ...]:
    """``feature_vector`` one check at a time: the first problem found is raised, named."""
    if not isinstance(features, dict):
        raise EventError("bad_features", f"{reason_prefix}'features' must be an object of feature name to number")
    optional, categories = declarations(names)
    missing = [n for n in names if n not in features and n not in optional]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        raise EventError(
            "missing_feature",
            f"{reason_prefix}feature {shown} is missing; the model expects {', '.join(names)}",
        )
    present = sum(1 for n in names if n in features) if optional else len(names)
    if len(features) != present:
        unknown = sorted(set(features) - set(names))
        shown = ", ".join(repr(u[:60]) for u in unknown[:5])
        raise EventError(
            "unknown_feature",
            f"{reason_prefix}unknown feature {shown}; the model expects {', '.join(names)}",
        )
    values = []
    for name in names:
        v = features.get(name)
        if name in categories:
            values.append(_category_code(v, name, categories[name], name in optional, reason_prefix))
            continue
        if v is None and name in optional:
            values.append(math.nan)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            got = "null" if v is None else type(v).__name__
            raise EventError("bad_value", f"{reason_prefix}feature {name!r} must be a number, got {got}")
        try:
            v = float(v)
        except OverflowError:
            v = math.inf
        if not math.isfinite(v):
            raise EventError("bad_value", f"{reason_prefix}feature {name!r} must be finite")
        values.append(v)
    return tuple(values)


_BOOLEAN_TEXT = {"True": "true", "TRUE": "true", "False": "false", "FALSE": "false"}
"""Spellings of a boolean (as spreadsheets, pandas and JSON write it) that are one key."""


def category_key(value: Any) -> str:
    """The one key of a categorical value: a string as it is, an integer or a whole float as its
    decimal digits (``7`` and ``7.0`` → ``"7"``), a boolean as ``"true"``/``"false"`` (also when
    written ``"True"``, ``"TRUE"``, ``"False"`` or ``"FALSE"``); EventError ``bad_value`` for anything
    else (null, objects, lists, fractions, NaN and infinities).

    >>> category_key("US"), category_key(7), category_key(7.0), category_key(-0.0), category_key(True), category_key("TRUE")
    ('US', '7', '7', '0', 'true', 'true')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _BOOLEAN_TEXT.get(value, str(value))
    try:
        if isinstance(value, int):
            return str(int(value))
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
    except ValueError:  # an integer of more digits than Python will write
        raise EventError("bad_value", "a category must be a string, an integer or a boolean; the integer is too long") from None
    got = f"the number {value!r:.40}" if isinstance(value, float) else ("null" if value is None else type(value).__name__)
    raise EventError("bad_value", f"a category must be a string, an integer or a boolean, got {got}")


def _category_code(value: Any, name: str, vocab: dict[str, int], optional: bool, reason_prefix: str) -> float:
    if value is None and optional:
        return float(MISSING)
    try:
        key = category_key(value)
    except EventError as exc:
        problem = exc.message.removeprefix("a category must be ")
        raise EventError("bad_value", f"{reason_prefix}feature {name!r} is a category: {problem}") from None
    return float(vocab.get(key, OTHER))


def _entities(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if type(value) is dict and all([type(k) is str and type(v) is str for k, v in value.items()]):
        return value
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool) for k, v in value.items()
    ):
        raise EventError("bad_entities", "'entities' must be an object of name to string, e.g. {\"card\": \"c-1\"}")
    return {k: str(v) for k, v in value.items()}


def json_object(raw: bytes | None, max_bytes: int, what: str) -> dict[str, Any]:
    """The JSON object in a record's value, refused with a reason unless it is one within ``max_bytes``."""
    if raw is None:
        raise EventError("not_json", f"the record has no value (null); {what} is a JSON object")
    if len(raw) > max_bytes:
        raise EventError("too_large", f"{what} is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventError("not_json", f"{what} is not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise EventError("not_object", f"{what} must be a JSON object")
    return doc


def parse_id(value: Any) -> str:
    """An event id: a non-empty string, or an integer taken as its decimal string."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise EventError("bad_id", f"'id' must be a non-empty string of at most {MAX_ID_CHARS} characters")
    return value


def label_value(value: Any) -> int:
    """A label: 0 or 1 (true/false also accepted)."""
    if value is True or value is False:
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    raise EventError("bad_label", "'label' must be 0 or 1")


def parse_event(raw: bytes | None, feature_names: Sequence[str], max_bytes: int = MAX_EVENT_BYTES) -> LabeledEvent:
    """Validate one labeled event from its raw bytes (None: a record without a value); raise
    EventError saying what is wrong."""
    doc = json_object(raw, max_bytes, "a labeled event")
    return LabeledEvent(
        id=parse_id(doc.get("id")),
        time=parse_time(doc.get("time")),
        features=feature_vector(doc.get("features"), feature_names),
        label=label_value(doc.get("label")),
        entities=_entities(doc.get("entities")),
    )


def encode_event(
    event_id: str, time: float, features: dict[str, float], label: int, entities: dict[str, str] | None = None
) -> bytes:
    """The wire form of one labeled event."""
    doc: dict[str, Any] = {"id": event_id, "time": time, "features": features, "label": int(label)}
    if entities:
        doc["entities"] = entities
    return orjson.dumps(doc)
