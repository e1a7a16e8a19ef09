"""A fraud team's own data, not the simulator's: an amount, a country (fraud far likelier in NG), a
device age missing for a fifth of the rows (more often for frauds), a channel coded 1-3, a session
id in free text and a merchant id. Used by the CLI's pretrain tests and the end-to-end test of
bringing your own data and model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pandas as pd


def own_table(n: int, seed: int = 0, fraud_in: tuple[str, ...] = ("NG",), countries: tuple[str, ...] = ("US", "GB", "FR", "NG"),
              p: tuple[float, ...] = (0.5, 0.2, 0.2, 0.1)) -> pd.DataFrame:
    """``n`` rows a minute apart; fraud 35% likely in the countries ``fraud_in``, 3% elsewhere."""
    rng = np.random.default_rng(seed)
    country = rng.choice(list(countries), n, p=list(p))
    y = (rng.random(n) < np.where(np.isin(country, fraud_in), 0.35, 0.03)).astype(int)
    age = np.where(rng.random(n) < np.where(y == 1, 0.5, 0.15), np.nan, rng.exponential(100, n))
    return pd.DataFrame({"time": np.arange(n) * 60.0, "label": y, "amount": rng.lognormal(3 + y, 1.0), "country": country,
                         "device_age": age, "channel": rng.integers(1, 4, n), "session": [f"s-{i:06x}" for i in range(n)],
                         "merchant_id": rng.integers(0, 40, n)})


def own_history(path: Path, n: int = 4000) -> Path:
    own_table(n).to_csv(path, index=False)
    return path


def own_events(table: pd.DataFrame, start: float, prefix: str) -> list[bytes]:
    """The table's rows as labeled events in the documented format: a missing device age is left out
    of every other event and sent as null in the rest (both mean missing)."""
    events = []
    for i, row in enumerate(table.itertuples(index=False)):
        features = {"amount": float(row.amount), "country": str(row.country), "channel": int(row.channel)}
        if not math.isnan(row.device_age):
            features["device_age"] = float(row.device_age)
        elif i % 2:
            features["device_age"] = None
        events.append(orjson.dumps({"id": f"{prefix}-{i}", "time": start + float(row.time), "features": features, "label": int(row.label)}))
    return events


def shifted_table(n: int, seed: int = 1) -> pd.DataFrame:
    """What streams after ``own_table``: fraud spreads to GB and to a country never seen before (BR)."""
    return own_table(n, seed=seed, fraud_in=("NG", "GB", "BR"), countries=("US", "GB", "FR", "NG", "BR"), p=(0.4, 0.2, 0.2, 0.1, 0.1))
