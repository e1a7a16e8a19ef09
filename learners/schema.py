"""The declared feature schema: ordered names and the normalisation stored with every version.

Any schema works. Non-negative features (amounts, counts, rates) are taken through ``log1p`` before
standardisation, since they are heavy-tailed in practice; the choice is fitted once and stored.

A feature is a number or a category, and required or optional (``missing``: it may be absent or
null). ``fit`` infers both from the history (a column of numbers is a number, one holding text a
category; a column with a gap is optional) unless a declaration says otherwise; ``declaration()``
is that list, for a person to read and edit (``declaration_from_json``/``declaration_from_file``
read it back, validated).

Values go through two stages. The *raw vector* (one float per feature, in schema order) is what
``streams.events.feature_vector`` makes of an event given ``schema.features``, and what
``encode_rows`` makes of table rows: a number as it is (NaN where an optional one is missing), a
category as a code: ``OTHER`` (0) for a value outside the vocabulary, ``MISSING`` (1) for an
optional one missing, ``FIRST_CODE`` + i (2, 3, ...) for entry i of the vocabulary. ``transform``
turns raw vectors into the network's float32 input, whose columns are::

    [z-scores of the numbers, in schema order | 0/1 missing indicators of the optional numbers,
     in schema order | category codes, in schema order]

``numeric_width`` columns of the first two parts, then one code per categorical feature, which the
network embeds (``cardinalities``: vocabulary size + 2 each). A missing number is imputed with its
fitted mean (z = 0) and flagged by its indicator. A schema of required numbers only has no
indicators and no codes: its input is exactly the z-scores, computed as they always were.

Examples
--------
>>> import numpy as np
>>> s = FeatureSchema.fit(("a", "b"), np.array([[0.0, -1.0], [3.0, 1.0]]))
>>> s.log1p
(True, False)
>>> s.transform(np.array([[0.0, -1.0]])).round(2).tolist()
[[-1.0, -1.0]]
>>> FeatureSchema.from_dict(s.to_dict()) == s
True

A history with a gap and a text column: ``b`` becomes an optional number, ``c`` a category.

>>> rows = [[1.0, 2.0, "US"], [2.0, None, "US"], [3.0, 4.0, "GB"], [4.0, 6.0, "US"]]
>>> s = FeatureSchema.fit(("a", "b", "c"), rows, min_count=2)
>>> s.optional, s.categories, s.input_names
((False, True, False), (None, None, ('US',)), ('a', 'b', 'b:missing', 'c'))
>>> raw = s.encode_rows([[1.0, None, "US"], [2.0, 4.0, "FR"]])
>>> raw.tolist()
[[1.0, nan, 2.0], [2.0, 4.0, 0.0]]
>>> s.unseen(raw)
1
>>> s.transform(raw).astype(float).round(2).tolist()  # a: log1p, b: imputed, then flagged; c: its code
[[-1.47, 0.0, 1.0, 2.0], [-0.29, 0.17, 0.0, 0.0]]
>>> s.declaration()[1]
{'name': 'b', 'type': 'number', 'missing': True}
>>> FeatureSchema.from_dict(s.to_dict()) == s
True
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streams.events import FIRST_CODE, MISSING, OTHER, EventError, Features, category_key

CLIP = 10.0
MAX_CATEGORIES = 50
"""Default cap on the vocabulary of one categorical feature (the most frequent values are kept)."""
MIN_COUNT = 5
"""Default least number of rows a value needs in the history to enter a vocabulary (rarer: other)."""
TYPES = ("number", "category")
DECLARATION_KEYS = ("name", "type", "missing", "max_categories", "min_count")

_FAST_NUMBER_TYPES = frozenset({float, int, type(None), np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
                                np.uint64, np.uint32, np.uint16, np.uint8})


@dataclass(frozen=True)
class FeatureSchema:
    """Names in order, the normalisation of the numbers, and which features are optional or categories.

    ``log1p``, ``mean`` and ``std`` have one entry per feature (False, 0.0 and 1.0 for a category).
    ``optional`` (default: none) and ``categories`` (per feature its vocabulary, most frequent
    first, or None for a number; default: all numbers) may be left out, as a schema of numbers only
    was written before either existed.
    """

    names: tuple[str, ...]
    log1p: tuple[bool, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    optional: tuple[bool, ...] = ()
    categories: tuple[tuple[str, ...] | None, ...] = ()
    _plain: bool = field(init=False, repr=False, compare=False)
    _numeric: list[int] = field(init=False, repr=False, compare=False)
    _indicators: list[int] = field(init=False, repr=False, compare=False)
    _categorical: list[int] = field(init=False, repr=False, compare=False)
    _numeric_log1p: np.ndarray = field(init=False, repr=False, compare=False)
    _numeric_mean: np.ndarray = field(init=False, repr=False, compare=False)
    _numeric_std: np.ndarray = field(init=False, repr=False, compare=False)
    _cardinalities: np.ndarray = field(init=False, repr=False, compare=False)
    _features: Features = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.names)
        optional = tuple(bool(v) for v in self.optional) if self.optional else (False,) * n
        categories = tuple(None if c is None else tuple(c) for c in self.categories) if self.categories else (None,) * n
        if not len(self.log1p) == len(self.mean) == len(self.std) == len(optional) == len(categories) == n:
            raise ValueError("feature schema is inconsistent: names, log1p, mean, std, optional and categories differ in length")
        for name, vocab in zip(self.names, categories):
            if vocab is not None and (not all(type(k) is str for k in vocab) or len(set(vocab)) != len(vocab)):
                raise ValueError(f"feature {name!r}: a vocabulary holds distinct strings")
        numeric = [i for i in range(n) if categories[i] is None]
        categorical = [i for i in range(n) if categories[i] is not None]
        derived: dict[str, Any] = {
            "optional": optional,
            "categories": categories,
            "_plain": not categorical and not any(optional),
            "_numeric": numeric,
            "_indicators": [i for i in numeric if optional[i]],
            "_categorical": categorical,
            "_numeric_log1p": np.array([self.log1p[i] for i in numeric], dtype=bool),
            "_numeric_mean": np.array([self.mean[i] for i in numeric], dtype=np.float64),
            "_numeric_std": np.array([self.std[i] for i in numeric], dtype=np.float64),
            "_cardinalities": np.array([len(categories[i] or ()) + FIRST_CODE for i in categorical], dtype=np.float64),
            "_features": Features(
                self.names,
                optional=[name for name, o in zip(self.names, optional) if o],
                categories={self.names[i]: {key: FIRST_CODE + k for k, key in enumerate(categories[i] or ())} for i in categorical},
            ),
        }
        for key, value in derived.items():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
            object.__setattr__(self, key, value)

    # -- fitting ---------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        names: tuple[str, ...] | list[str],
        x: Any,
        declaration: Any = None,
        max_categories: int = MAX_CATEGORIES,
        min_count: int = MIN_COUNT,
    ) -> FeatureSchema:
        """The schema of a history ``x``: rows of values in the order of ``names``.

        ``x`` is a numeric array, or an object array / list of rows (or a DataFrame) holding
        numbers, text, booleans and missing values (None, NaN). Per feature, unless ``declaration``
        (see ``parse_declaration``; it may name some features only) says otherwise: a column whose
        values are all numbers (or numbers written as text) is a number, any other a category; a
        column with a missing value is optional. The vocabulary of a category holds its values seen
        in at least ``min_count`` rows, the ``max_categories`` most frequent (ties by key). The
        normalisation of a number is fitted on its present values. A numeric array without NaN and
        no declaration is fitted exactly as before categories and missing values existed.
        """
        names = tuple(names)
        for what, limit in (("max_categories", max_categories), ("min_count", min_count)):
            if type(limit) is not int or limit < 1:
                raise ValueError(f"{what} must be an integer of at least 1, got {limit!r}")
        if not isinstance(x, np.ndarray) and hasattr(x, "to_numpy"):
            x = x.to_numpy()
        if declaration is None and isinstance(x, np.ndarray) and x.dtype.kind in "biuf":
            if x.ndim != 2 or x.shape[1] != len(names):
                raise ValueError(f"data has {x.shape[-1]} columns but the schema names {len(names)} features")
            if len(set(names)) != len(names):
                raise ValueError("feature names must be unique")
            if x.dtype.kind != "f" or not np.isnan(x).any():
                return _standardisable(cls._fit_numbers(names, x))
        return _standardisable(cls._fit_columns(names, x, declaration, max_categories, min_count))

    @classmethod
    def _fit_columns(cls, names: tuple[str, ...], x: Any, declaration: Any, max_categories: int, min_count: int) -> FeatureSchema:
        columns = _columns(x, len(names))
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        declared = {d["name"]: d for d in parse_declaration([] if declaration is None else declaration)}
        if strange := [d for d in declared if d not in names]:
            raise ValueError(f"the declaration names feature {strange[0]!r}, which is not one of the features {', '.join(names)}")
        log1p: list[bool] = []
        mean: list[float] = []
        std: list[float] = []
        optional: list[bool] = []
        categories: list[tuple[str, ...] | None] = []
        for name, column in zip(names, columns):
            d = declared.get(name, {})
            numbers, bad = _numbers(column)
            kind = d.get("type") or ("number" if bad is None else "category")
            if kind == "number":
                if bad is not None:
                    raise ValueError(f"feature {name!r} is declared a number but row {bad} holds {_shown(column[bad])}")
                if np.isinf(numbers).any():
                    raise ValueError(f"feature {name!r} holds an infinite number (row {int(np.flatnonzero(np.isinf(numbers))[0])})")
                gaps = int(np.isnan(numbers).sum())
                present = numbers[~np.isnan(numbers)]
                if present.size:
                    take_log = bool(present.min() >= 0)
                    z = np.log1p(present) if take_log else present
                    spread = float(z.std())
                    log1p.append(take_log)
                    mean.append(float(z.mean()))
                    std.append(spread if spread > 1e-9 else 1.0)
                else:
                    log1p.append(False)
                    mean.append(0.0)
                    std.append(1.0)
                categories.append(None)
            else:
                keys = _keys(name, column)
                gaps = sum(1 for k in keys if k is None)
                counts = Counter(k for k in keys if k is not None)
                least, cap = d.get("min_count", min_count), d.get("max_categories", max_categories)
                ranked = sorted(counts.items(), key=lambda kc: (-kc[1], kc[0]))
                categories.append(tuple(k for k, c in ranked if c >= least)[:cap])
                log1p.append(False)
                mean.append(0.0)
                std.append(1.0)
            if d.get("missing") is False and gaps:
                raise ValueError(f"feature {name!r} is declared missing: false but {gaps} row(s) of the data lack it; "
                                 "declare it missing: true, or fill the gaps")
            optional.append(bool(d.get("missing", gaps > 0)))
        return cls(names, tuple(log1p), tuple(mean), tuple(std), tuple(optional), tuple(categories))

    @classmethod
    def _fit_numbers(cls, names: tuple[str, ...], x: np.ndarray) -> FeatureSchema:
        log1p = tuple(bool(v) for v in (x.min(axis=0) >= 0))
        z = np.where(log1p, np.log1p(np.maximum(x, 0)), x)
        std = z.std(axis=0)
        return cls(
            names=names,
            log1p=log1p,
            mean=tuple(float(v) for v in z.mean(axis=0)),
            std=tuple(float(v) if v > 1e-9 else 1.0 for v in std),
        )

    # -- the layout of the network's input -------------------------------------------------------

    @property
    def features(self) -> Features:
        """The names with their declarations, for ``feature_vector`` and ``parse_event``."""
        return self._features

    @property
    def numeric_width(self) -> int:
        """Input columns before the category codes: one z-score per number, one indicator per optional number."""
        return len(self._numeric) + len(self._indicators)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        """Per categorical feature, in schema order, the number of its codes: vocabulary size + 2."""
        return tuple(int(c) for c in self._cardinalities)

    @property
    def input_width(self) -> int:
        """Columns of ``transform``'s output: ``numeric_width`` + one per categorical feature."""
        return self.numeric_width + len(self._categorical)

    @property
    def input_names(self) -> tuple[str, ...]:
        """A label per column of ``transform``'s output: the names, ``name:missing`` for an indicator."""
        return tuple([self.names[i] for i in self._numeric] + [f"{self.names[i]}:missing" for i in self._indicators]
                     + [self.names[i] for i in self._categorical])

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 inputs of the network from raw feature values (see the module's layout)."""
        if self._plain:
            x = np.asarray(x, dtype=np.float64)
            z = np.where(self.log1p, np.log1p(np.maximum(x, 0)), x)
            z = (z - np.asarray(self.mean)) / np.asarray(self.std)
            return np.clip(z, -CLIP, CLIP).astype(np.float32)
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ValueError(f"raw rows have shape {x.shape}; the schema names {len(self.names)} features")
        numbers = x[:, self._numeric]
        with np.errstate(invalid="ignore"):
            z = np.where(self._numeric_log1p, np.log1p(np.maximum(numbers, 0)), numbers)
        z = (z - self._numeric_mean) / self._numeric_std
        z = np.clip(np.where(np.isnan(z), 0.0, z), -CLIP, CLIP)
        indicators = np.isnan(x[:, self._indicators])
        codes = x[:, self._categorical]
        with np.errstate(invalid="ignore"):
            known = (codes >= 0) & (codes < self._cardinalities) & (codes == np.floor(codes))
        codes = np.where(np.isnan(codes), float(MISSING), np.where(known, codes, float(OTHER)))
        return np.concatenate([z, indicators, codes], axis=1).astype(np.float32)

    def unseen(self, x: Any) -> int:
        """How many categorical values of raw rows (or one raw row) were outside their vocabulary."""
        x = np.asarray(x, dtype=np.float64)
        return int(np.count_nonzero(x[..., self._categorical] == OTHER))

    def encode_rows(self, rows: Any) -> np.ndarray:
        """Raw vectors (float64, one row per row) of table rows in schema order, as ``feature_vector``
        makes them of events: numbers (also written as text) as floats, NaN for an optional one
        missing (None, NaN, pandas NA), categories as codes. A required value missing raises
        EventError ``missing_feature``, a value that is no number / no category or an infinite
        number ``bad_value``; the message names the row and the feature."""
        if not isinstance(rows, np.ndarray) and hasattr(rows, "to_numpy"):
            rows = rows.to_numpy()
        columns = _columns(rows, len(self.names))
        n = len(columns[0]) if columns else (len(rows) if isinstance(rows, np.ndarray) else 0)
        out = np.empty((n, len(self.names)), dtype=np.float64)
        vocabularies = self._features.categories
        for j, (name, column) in enumerate(zip(self.names, columns)):
            if name in vocabularies:
                out[:, j] = _codes(name, column, vocabularies[name], self.optional[j])
                continue
            numbers, bad = _numbers(column)
            if bad is not None:
                raise EventError("bad_value", f"row {bad}: feature {name!r} must be a number, got {_shown(column[bad])}")
            if np.isinf(numbers).any():
                raise EventError("bad_value", f"row {int(np.flatnonzero(np.isinf(numbers))[0])}: feature {name!r} must be finite")
            if not self.optional[j] and np.isnan(numbers).any():
                raise EventError("missing_feature", f"row {int(np.flatnonzero(np.isnan(numbers))[0])}: feature {name!r} is missing "
                                                    "and not declared optional")
            out[:, j] = numbers
        return out

    # -- declaration, description, storage -------------------------------------------------------

    def declaration(self) -> list[dict[str, Any]]:
        """The declaration of this schema, one object per feature: name, type and missing (what
        ``perennial pretrain`` shows and writes, for a person to edit and pass back to ``fit``)."""
        return [{"name": name, "type": "number" if vocab is None else "category", "missing": optional}
                for name, vocab, optional in zip(self.names, self.categories, self.optional)]

    def describe(self) -> str:
        """One line per feature, for people: type, whether required, normalisation or vocabulary."""
        width = max((len(n) for n in self.names), default=0)
        lines = []
        for i, name in enumerate(self.names):
            vocab = self.categories[i]
            head = f"{name:<{width}}  {'number' if vocab is None else 'category':<8}  {'optional' if self.optional[i] else 'required':<8}"
            if vocab is None:
                lines.append(f"{head}  {'log1p, ' if self.log1p[i] else ''}mean {self.mean[i]:.4g}, std {self.std[i]:.4g}")
            else:
                shown = ", ".join(vocab[:10]) + (f", ... ({len(vocab) - 10} more)" if len(vocab) > 10 else "")
                lines.append(f"{head}  {len(vocab)} value(s){': ' + shown if vocab else ''} (+ other, missing)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The stored form; ``optional`` and ``categories`` only where some feature is optional / a category."""
        d: dict[str, Any] = {"names": list(self.names), "log1p": list(self.log1p), "mean": list(self.mean), "std": list(self.std)}
        if any(self.optional):
            d["optional"] = list(self.optional)
        if self._categorical:
            d["categories"] = [None if c is None else list(c) for c in self.categories]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> FeatureSchema:
        """The schema as ``to_dict`` wrote it; ValueError naming what is malformed."""
        if not isinstance(d, dict) or not all(isinstance(d.get(k), list) for k in ("names", "log1p", "mean", "std")):
            raise ValueError("a feature schema is an object of four lists: names, log1p, mean, std")
        names, log1p, mean, std = d["names"], d["log1p"], d["mean"], d["std"]
        if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ValueError("names must be distinct, non-empty strings")
        if not len(log1p) == len(mean) == len(std) == len(names):
            raise ValueError("feature schema is inconsistent: names, log1p, mean and std differ in length")
        if not all(isinstance(v, bool) for v in log1p):
            raise ValueError("log1p must hold booleans")
        if not all(_finite(v) for v in mean) or not all(_finite(v) and v > 0 for v in std):
            raise ValueError("mean must hold finite numbers and std finite positive numbers")
        optional = d.get("optional", [False] * len(names))
        if not isinstance(optional, list) or len(optional) != len(names) or not all(isinstance(v, bool) for v in optional):
            raise ValueError("optional must be a list of booleans, one per feature")
        categories = d.get("categories", [None] * len(names))
        if not isinstance(categories, list) or len(categories) != len(names):
            raise ValueError("categories must be a list, one entry per feature: null for a number, its vocabulary for a category")
        for name, vocab in zip(names, categories):
            if vocab is not None and (not isinstance(vocab, list) or not all(isinstance(k, str) for k in vocab) or len(set(vocab)) != len(vocab)):
                raise ValueError(f"feature {name!r}: a vocabulary must be a list of distinct strings")
        return cls(tuple(names), tuple(log1p), tuple(map(float, mean)), tuple(map(float, std)), tuple(optional),
                   tuple(None if c is None else tuple(c) for c in categories))


# -- declarations --------------------------------------------------------------------------------


def parse_declaration(value: Any) -> list[dict[str, Any]]:
    """A feature declaration, validated: a list of objects, one per feature declared, each with a
    ``name`` and any of ``type`` ("number" or "category"), ``missing`` (true: the feature may be
    absent or null), and for a category ``max_categories`` and ``min_count`` (integers >= 1). What
    an object leaves out, ``fit`` infers from the data. ValueError naming the feature and the problem.

    >>> parse_declaration([{"name": "country", "type": "category", "missing": True, "max_categories": 20}])
    [{'name': 'country', 'type': 'category', 'missing': True, 'max_categories': 20}]
    >>> parse_declaration([{"name": "amount", "type": "money"}])
    Traceback (most recent call last):
    ...
    ValueError: feature 'amount': unknown type 'money'; a type is number or category
    """
    if not isinstance(value, list):
        raise ValueError('a feature declaration is a list of objects, one per feature, e.g. [{"name": "amount", "type": "number", '
                         '"missing": false}]')
    seen: set[str] = set()
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ValueError(f"declaration entry {i} is not an object with a name, type and missing")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"declaration entry {i} has no name (a non-empty string)")
        if name in seen:
            raise ValueError(f"feature {name!r} is declared twice")
        seen.add(name)
        if strange := [k for k in entry if k not in DECLARATION_KEYS]:
            raise ValueError(f"feature {name!r}: unknown key {str(strange[0])!r}; a declaration has {', '.join(DECLARATION_KEYS)}")
        kind = entry.get("type")
        if kind is not None and kind not in TYPES:
            raise ValueError(f"feature {name!r}: unknown type {kind!r}; a type is number or category")
        if "missing" in entry and not isinstance(entry["missing"], bool):
            raise ValueError(f"feature {name!r}: missing must be true or false, got {entry['missing']!r}")
        for key in ("max_categories", "min_count"):
            if key not in entry:
                continue
            if type(entry[key]) is not int or entry[key] < 1:
                raise ValueError(f"feature {name!r}: {key} must be an integer of at least 1, got {entry[key]!r}")
            if kind == "number":
                raise ValueError(f"feature {name!r}: {key} applies to a category, and the feature is declared a number")
        out.append({k: entry[k] for k in DECLARATION_KEYS if k in entry and entry[k] is not None})
    return out


def declaration_from_json(text: str | bytes) -> list[dict[str, Any]]:
    """A feature declaration from JSON text, validated (``parse_declaration``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the feature declaration is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    return parse_declaration(value)


def declaration_from_file(path: Path | str) -> list[dict[str, Any]]:
    """A feature declaration from a JSON file, validated; ValueError names the file."""
    try:
        return declaration_from_json(Path(path).read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# -- table values --------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _columns(x: Any, width: int) -> list[Any]:
    """The columns of rows in schema order: a float64 array for a numeric array's column, else a list."""
    if isinstance(x, np.ndarray):
        if x.ndim != 2 or x.shape[1] != width:
            raise ValueError(f"data has {x.shape[-1] if x.ndim else 0} columns but the schema names {width} features")
        if x.dtype.kind in "iuf":
            return [x[:, j].astype(np.float64) for j in range(width)]
        return [x[:, j].tolist() for j in range(width)]
    rows = list(x)
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes, dict)) or not hasattr(row, "__len__") or len(row) != width:
            got = f"{len(row)} values" if hasattr(row, "__len__") and not isinstance(row, (str, bytes, dict)) else "no sequence of values"
            raise ValueError(f"row {i} has {got} but the schema names {width} features")
    return [[row[j] for row in rows] for j in range(width)]


def _missing(value: Any) -> bool:
    """None, NaN, pandas NA / NaT: a value that is not there."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(value != value)
    return type(value).__name__ in ("NAType", "NaTType")


def _number(value: Any) -> float | None:
    """A table value as a float (NaN: missing); None where it is no number."""
    if _missing(value):
        return math.nan
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            return math.inf
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _numbers(column: Any) -> tuple[np.ndarray, int | None]:
    """A column as floats (NaN where missing), and the row of the first value that is no number."""
    if isinstance(column, np.ndarray):
        return column, None
    if set(map(type, column)) <= _FAST_NUMBER_TYPES:
        try:
            return np.array(column, dtype=np.float64), None
        except OverflowError:
            pass
    out = np.empty(len(column), dtype=np.float64)
    for i, value in enumerate(column):
        number = _number(value)
        if number is None:
            return out, i
        out[i] = number
    return out, None


def _keys(name: str, column: Any, prefix_rows: bool = False) -> list[str | None]:
    """The category keys of a column (None where missing); ValueError naming the feature and row."""
    values = column.tolist() if isinstance(column, np.ndarray) else column
    keys: list[str | None] = []
    for i, value in enumerate(values):
        if _missing(value):
            keys.append(None)
            continue
        try:
            keys.append(category_key(value.item() if isinstance(value, np.generic) else value))
        except EventError as exc:
            if prefix_rows:
                problem = exc.message.removeprefix("a category must be ")
                raise EventError("bad_value", f"row {i}: feature {name!r} is a category: {problem}") from None
            raise ValueError(f"feature {name!r} is a category (of strings, integers, booleans) but row {i} holds {_shown(value)}") from None
    return keys


def _codes(name: str, column: Any, vocab: dict[str, int], optional: bool) -> np.ndarray:
    keys = _keys(name, column, prefix_rows=True)
    if not optional and None in keys:
        raise EventError("missing_feature", f"row {keys.index(None)}: feature {name!r} is missing and not declared optional")
    return np.array([MISSING if k is None else vocab.get(k, OTHER) for k in keys], dtype=np.float64)


def _shown(value: Any) -> str:
    return f"{value!r:.40}"


def _standardisable(schema: FeatureSchema) -> FeatureSchema:
    """``schema``, unless a number's values are too large to standardise in floating point (a mean or
    spread that is not finite): then a ValueError naming the feature, before anything is trained."""
    with np.errstate(over="ignore", invalid="ignore"):
        wide = [n for n, m, d in zip(schema.names, schema.mean, schema.std) if not (math.isfinite(m) and math.isfinite(d) and d > 0
                                                                                     and math.isfinite(np.float32(m)) and math.isfinite(np.float32(d)))]
    if wide:
        raise ValueError(f"feature {wide[0]!r} holds numbers too large to standardise (mean or spread beyond floating point); "
                         "scale it down (e.g. to other units) or leave it out")
    return schema
