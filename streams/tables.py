"""Labeled events from a table file (CSV or Parquet) of any schema.

Features are the columns named, or else every numeric column other than the label, the time, ids
(``id`` or a name ending in ``_id``) and the other columns the caller uses (pattern, entity, label
time); those are never features, named or not. Rows are ordered by the time column, which must
exist; without one (``time_column=None``, asked for explicitly) row order is time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESERVED = ("id", "time", "label", "card", "terminal", "pattern", "label_time", "day")


@dataclass
class LabeledTable:
    features: tuple[str, ...]
    x: np.ndarray  # float32 (n, len(features))
    y: np.ndarray  # int64 0/1
    time: np.ndarray | None  # float64 epoch seconds, when known
    extra: dict[str, Any] = field(default_factory=dict)  # other requested columns (pandas Series), same row order


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
    df = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    if label_column not in df.columns:
        raise ValueError(f"column {label_column!r} (the label) is not in {path}; columns: {', '.join(map(str, df.columns))}")
    if time_column and time_column not in df.columns:
        raise ValueError(
            f"time column {time_column!r} is not in {path}; name the event time column with --time-column, or pass "
            f"--time-column '' to take the row order as time. Columns: {', '.join(map(str, df.columns))}"
        )
    used = [c for c in (label_column, time_column, *extra_columns) if c]
    if features is None:
        features = [c for c in df.columns if c not in {*used, *RESERVED} and not _is_id(str(c))
                    and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    if clash := [f for f in features if f in used]:
        raise ValueError(f"column(s) {', '.join(clash)} of --features are the label, time, pattern, entity or label-time "
                         "column, never a feature: leave them out of --features")
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise ValueError(f"feature column(s) {', '.join(missing)} not in {path}")
    absent = [c for c in extra_columns if c not in df.columns]
    if absent:
        raise ValueError(f"column(s) {', '.join(absent)} not in {path}; columns: {', '.join(map(str, df.columns))}")
    if not features:
        raise ValueError(f"{path} has no numeric feature columns besides the label")
    if time_column:
        t = df[time_column]
        t = epoch_seconds(t) if pd.api.types.is_datetime64_any_dtype(t) else pd.to_numeric(t, errors="coerce")
        if t.isna().any():
            t = epoch_seconds(pd.to_datetime(df[time_column], utc=True))
        df = df.assign(_t=t.to_numpy()).sort_values("_t", kind="stable")
        time = df["_t"].to_numpy(np.float64)
    else:
        time = None
    y = df[label_column].to_numpy()
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"label column {label_column!r} must hold only 0 and 1")
    x = df[list(features)].to_numpy(np.float64)
    if not np.isfinite(x).all():
        bad = [f for f, ok in zip(features, np.isfinite(x).all(axis=0)) if not ok]
        raise ValueError(f"feature column(s) {', '.join(bad)} hold missing or non-finite values")
    extra = {c: df[c].reset_index(drop=True) for c in extra_columns}
    return LabeledTable(tuple(map(str, features)), x.astype(np.float32), y.astype(np.int64), time, extra)


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
