"""The immutable scoring model: what is served.

The weights of one version mirrored to numpy with its schema and its calibration, never mutated after
construction, so a swap is the replacement of one reference and scoring needs no autograd or framework
dispatch. Its ``score`` is the served, calibrated fraud probability; ``score_raw`` is the network's own,
which is what training and anything fitted on the network (a new calibration) work on. numpy only: the
server imports this module and never torch (learners/model.py holds the torch network).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from learners.calibration import IDENTITY, Calibration
from learners.schema import FeatureSchema


@dataclass(frozen=True, eq=False)
class ScoringModel:
    """One version ready to score: schema + weights as numpy arrays + calibration. Immutable."""

    version: str
    schema: FeatureSchema
    weights: dict[str, np.ndarray]
    manifest: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration = IDENTITY

    def __post_init__(self) -> None:
        layers = sorted({k.rsplit(".", 1)[0] for k in self.weights}, key=lambda k: int(k.split(".")[1]))
        if not layers:
            raise ValueError("weights hold no layers")
        mats: list[tuple[np.ndarray, np.ndarray]] = []
        for name in layers:
            w, b = self.weights.get(f"{name}.weight"), self.weights.get(f"{name}.bias")
            if w is None or b is None or w.ndim != 2 or b.shape != (w.shape[0],):
                raise ValueError(f"layer {name!r} is malformed")
            if mats and w.shape[1] != mats[-1][0].shape[1]:
                raise ValueError(f"layer {name!r} takes {w.shape[1]} inputs but the layer before gives {mats[-1][0].shape[1]}")
            mats.append((np.ascontiguousarray(w.T), b))
        if mats[0][0].shape[0] != len(self.schema.names):
            raise ValueError(
                f"weights expect {mats[0][0].shape[0]} features but the schema names {len(self.schema.names)}"
            )
        if mats[-1][0].shape[1] != 2:
            raise ValueError("the last layer must have two outputs (legitimate, fraud)")
        for arr in self.weights.values():
            arr.setflags(write=False)
        object.__setattr__(self, "_layers", tuple(mats))

    def score_normalised(self, z: np.ndarray) -> np.ndarray:
        """Calibrated fraud probability for normalised inputs (what is served)."""
        return _sigmoid(self.calibration.apply_logit(self._logit(z)))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Calibrated fraud probability for raw feature rows in schema order (what is served)."""
        return self.score_normalised(self.schema.transform(x))

    def score_raw(self, x: np.ndarray) -> np.ndarray:
        """The network's own fraud probability, uncalibrated, for raw feature rows in schema order."""
        return _sigmoid(self._logit(self.schema.transform(x)))

    def _logit(self, z: np.ndarray) -> np.ndarray:
        """Fraud logit of the network: softmax over two logits == sigmoid of their difference."""
        h = z
        layers = self._layers  # type: ignore[attr-defined]
        for w, b in layers[:-1]:
            h = np.maximum(h @ w + b, 0.0)
        w, b = layers[-1]
        logits = h @ w + b
        return logits[:, 1] - logits[:, 0]


def _sigmoid(logit: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(np.clip(-logit, -60, 60)))
