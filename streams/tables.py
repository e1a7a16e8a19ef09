"""Labeled events from a table file (CSV or Parquet) of any schema.

Features are the columns named, or else every column other than the label, the time, ids (``id`` or
a name ending in ``_id``) and the other columns the caller uses (pattern, entity, label time); those
are never features, named or not. A feature column may hold numbers, text or booleans (a category,
see learners/schema.py) and empty cells (a missing value). A column of text whose values are nearly
all distinct (more than ``FREE_FORM_SHARE`` of its filled cells and more than ``FREE_FORM_MIN``
values: a session id, a free-form note, a timestamp as text) is no category: it is left out of the
default features, with the reason in ``LabeledTable.excluded``, and refused when named as a feature.
Rows are ordered by the time column, which must exist; without one (``time_column=None``, asked for
explicitly) row order is time.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "history.csv"
>>> rows = "".join(f"{t},{t % 2},{t * 1.5},{'US' if t % 3 else ''},n{t}\\n" for t in range(120))
>>> _ = path.write_text("time,label,amount,country,note\\n" + rows)
>>> table = read_labeled_table(path)
>>> table.features, table.x[:2].tolist()
(('amount', 'country'), [[0.0, None], [1.5, 'US']])
>>> table.excluded["note"]
'free-form text: 120 distinct values in 120 rows (an id, not a category)'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESERVED = ("id", "time", "label", "card", "terminal", "pattern", "label_time", "day")
FREE_FORM_SHARE = 0.5
"""A text column with more distinct values than this share of its filled cells is free-form (an id)..."""
FREE_FORM_MIN = 50
"""... when it also has more distinct values than this (the default cap of a vocabulary)."""


@dataclass
class LabeledTable:
    features: tuple[str, ...]
    x: np.ndarray
    """(n, len(features)): float32 when every feature column holds numbers (NaN where a cell is empty,
    exactly as before categories existed), else an object array of the cells: numbers, strings,
    booleans, None where a cell is empty. ``FeatureSchema.fit`` and ``encode_rows`` take either."""
    y: np.ndarray  # int64 0/1
    time: np.ndarray | None  # float64 epoch seconds, when known
    extra: dict[str, Any] = field(default_factory=dict)  # other requested columns (pandas Series), same row order
    excluded: dict[str, str] = field(default_factory=dict)
    """Columns left out of the default features although not reserved, with the reason (free-form text)."""


def read_labeled_table(
    path: Path | str,
    label_column: str = "label",
    time_column: str | None = "time",
    features: Sequence[str] | None = None,
    extra_columns: Sequence[str] = (),
) -> LabeledTable:
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    df = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else _read_csv(path, {label_column, time_column})
    if label_column not in df.columns:
        raise ValueError(f"column {label_column!r} (the label) is not in {path}; columns: {', '.join(map(str, df.columns))}")
    if time_column and time_column not in df.columns:
        raise ValueError(
            f"time column {time_column!r} is not in {path}; name the event time column with --time-column, or pass "
            f"--time-column '' to take the row order as time. Columns: {', '.join(map(str, df.columns))}"
        )
    used = [c for c in (label_column, time_column, *extra_columns) if c]
    excluded: dict[str, str] = {}
    if features is None:
        candidates = [c for c in df.columns if c not in {*used, *RESERVED} and not _is_id(str(c))]
        for c in candidates:
            if (reason := _free_form(df[c])) is not None:
                excluded[str(c)] = reason
        features = [c for c in candidates if str(c) not in excluded]
    if clash := [f for f in features if f in used]:
        raise ValueError(f"column(s) {', '.join(clash)} of --features are the label, time, pattern, entity or label-time "
                         "column, never a feature: leave them out of --features")
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise ValueError(f"feature column(s) {', '.join(missing)} not in {path}")
    for f in features:
        if (reason := _free_form(df[f])) is not None:
            raise ValueError(f"feature column {f!r} of {path} holds {reason}: it cannot be learned from, so leave it out of "
                             "--features (a category keeps its most frequent values; this one has almost none repeated)")
    absent = [c for c in extra_columns if c not in df.columns]
    if absent:
        raise ValueError(f"column(s) {', '.join(absent)} not in {path}; columns: {', '.join(map(str, df.columns))}")
    if not features:
        raise ValueError(f"{path} has no feature columns besides the label" + (
            f" (left out: {', '.join(f'{c}, {why}' for c, why in excluded.items())})" if excluded else ""))
    if time_column:
        column = df[time_column]
        if (blank := np.flatnonzero(column.isna().to_numpy())).size:
            raise ValueError(f"time column {time_column!r} is empty in {blank.size} row(s) (row {int(blank[0])} of the data first); "
                             "every event needs its time")
        t = epoch_seconds(column) if pd.api.types.is_datetime64_any_dtype(column) else pd.to_numeric(column, errors="coerce")
        if t.isna().any():  # not numbers: dates as text, every one of them
            try:
                t = epoch_seconds(pd.to_datetime(column, utc=True))
            except (ValueError, TypeError) as exc:
                dates = pd.to_datetime(column.astype(str), utc=True, errors="coerce", format="mixed")
                neither = (t.isna() & dates.isna()).to_numpy()
                bad = int(np.flatnonzero(neither)[0]) if neither.any() else int(np.flatnonzero(t.isna().to_numpy())[0])
                raise ValueError(f"time column {time_column!r}: row {bad} of the data holds {str(column.iloc[bad])[:40]!r}, neither epoch "
                                 "seconds nor a date") from exc
        df = df.assign(_t=t.to_numpy()).sort_values("_t", kind="stable")
        time = df["_t"].to_numpy(np.float64)
    else:
        time = None
    y = df[label_column].to_numpy()
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"label column {label_column!r} must hold only 0 and 1")
    x = _cells(df[list(features)])
    extra = {c: df[c].reset_index(drop=True) for c in extra_columns}
    return LabeledTable(tuple(map(str, features)), x, y.astype(np.int64), time, extra, excluded)


def _is_number(column: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column))


def _read_csv(path: Path, keep: set[str | None]) -> Any:
    """A CSV as pandas reads it, except its text columns (but the ``keep`` ones): their cells as
    written, only an empty cell missing. pandas would read ``NA``, ``None``, ``null``, ``N/A`` as
    missing, so a country code ``NA`` was learned as a gap while a request sending ``"NA"`` was scored
    as other; now the key is the text a client sends. A column of numbers with such markers stays a
    column of numbers with gaps, and a column of booleans one of booleans (any spelling of true and
    false is one key: streams.events.category_key)."""
    import pandas as pd

    df = pd.read_csv(path)
    text = [c for c in df.columns if c not in keep and not pd.api.types.is_numeric_dtype(df[c])]  # booleans are numeric
    if text:
        raw = pd.read_csv(path, usecols=text, dtype=str, keep_default_na=False, na_values=[""])
        for c in text:
            df[c] = raw[c]
    return df


def _cells(df: Any) -> np.ndarray:
    """The feature cells: float32 where every column holds numbers, else objects with None for an empty cell."""
    if all(_is_number(df[c]) for c in df.columns):
        x = df.to_numpy(np.float64)
        if np.isinf(x).any():
            bad = [str(f) for f, inf in zip(df.columns, np.isinf(x).any(axis=0)) if inf]
            raise ValueError(f"feature column(s) {', '.join(bad)} hold infinite values")
        return x.astype(np.float32)
    cells = df.astype(object)
    return np.asarray(cells.where(df.notna(), None).to_numpy(object))


def _free_form(column: Any) -> str | None:
    """Why a column of text is no category (nearly every value distinct), or None."""
    if _is_number(column) or column.dtype == bool:
        return None
    present = int(column.notna().sum())
    distinct = int(column.nunique(dropna=True))
    if distinct > FREE_FORM_MIN and distinct > FREE_FORM_SHARE * present:
        return f"free-form text: {distinct} distinct values in {present} rows (an id, not a category)"
    return None


def _is_id(name: str) -> bool:
    return name.lower() == "id" or name.lower().endswith("_id")


def epoch_seconds(t: Any) -> Any:
    """Epoch seconds of a pandas datetime Series, whatever its resolution (pandas 3 parses to
    microseconds, pandas 2 to nanoseconds).

    >>> import pandas as pd
    >>> epoch_seconds(pd.to_datetime(pd.Series(["2026-01-01T00:00:00Z"]), utc=True)).tolist()
    [1767225600.0]
    """
    import pandas as pd

    if t.dt.tz is None:
        t = t.dt.tz_localize("UTC")
    return (t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
