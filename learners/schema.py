"""The declared feature schema: ordered names and the normalisation stored with every version.

Any schema works. Non-negative features (amounts, counts, rates) are taken through ``log1p`` before
standardisation, since they are heavy-tailed in practice; the choice is fitted once and stored.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

CLIP = 10.0


@dataclass(frozen=True)
class FeatureSchema:
    names: tuple[str, ...]
    log1p: tuple[bool, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, names: tuple[str, ...] | list[str], x: np.ndarray) -> FeatureSchema:
        names = tuple(names)
        if x.ndim != 2 or x.shape[1] != len(names):
            raise ValueError(f"data has {x.shape[-1]} columns but the schema names {len(names)} features")
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        log1p = tuple(bool(v) for v in (x.min(axis=0) >= 0))
        z = np.where(log1p, np.log1p(np.maximum(x, 0)), x)
        std = z.std(axis=0)
        return cls(
            names=names,
            log1p=log1p,
            mean=tuple(float(v) for v in z.mean(axis=0)),
            std=tuple(float(v) if v > 1e-9 else 1.0 for v in std),
        )

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 inputs of the network from raw feature values."""
        x = np.asarray(x, dtype=np.float64)
        z = np.where(self.log1p, np.log1p(np.maximum(x, 0)), x)
        z = (z - np.asarray(self.mean)) / np.asarray(self.std)
        return np.clip(z, -CLIP, CLIP).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "log1p": list(self.log1p), "mean": list(self.mean), "std": list(self.std)}

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
        return cls(tuple(names), tuple(log1p), tuple(map(float, mean)), tuple(map(float, std)))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
