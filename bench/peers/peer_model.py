"""The served model for the peer servers, in numpy alone (their environments have no Perennial):
the same weights, the same normalisation and the same arithmetic as learners.model.ScoringModel."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

CLIP = 10.0


class Model:
    def __init__(self, folder: str | None = None):
        folder = Path(folder or os.environ["PEER_MODEL_DIR"])
        schema = json.loads((folder / "schema.json").read_text())
        self.names = schema["names"]
        self.log1p = np.array(schema["log1p"], bool)
        self.mean = np.array(schema["mean"])
        self.std = np.array(schema["std"])
        w = np.load(folder / "weights.npz")
        self.layers = [(w[f"w{i}"], w[f"b{i}"]) for i in range(len(w.files) // 2)]

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        z = np.where(self.log1p, np.log1p(np.maximum(x, 0)), x)
        h = np.clip((z - self.mean) / self.std, -CLIP, CLIP).astype(np.float32)
        for w, b in self.layers[:-1]:
            h = np.maximum(h @ w + b, 0.0)
        w, b = self.layers[-1]
        logits = h @ w + b
        return 1.0 / (1.0 + np.exp(np.clip(logits[:, 0] - logits[:, 1], -60, 60)))

    def score_events(self, events: list[dict]) -> list[float]:
        x = np.array([[e["features"][n] for n in self.names] for e in events], np.float64)
        return self.score_matrix(x).tolist()
