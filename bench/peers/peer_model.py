"""The served model for the peer servers, in numpy alone (their environments have no Perennial):
the same weights, the same normalisation, the same calibration and the same arithmetic as
learners.scoring.ScoringModel.

Every forward pass is counted by its rows, and the counts are written to ``PEER_STATS`` (JSON, rows of
a pass -> passes) every 0.1 s from a thread of their own, so that the benchmark can tell whether a
peer's batching really put several requests into one pass.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from pathlib import Path

import numpy as np

CLIP = 10.0
STATS_EVERY_S = 0.1


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
        calibration = json.loads((folder / "calibration.json").read_text())
        self.slope, self.intercept = calibration["slope"], calibration["intercept"]
        self.passes: collections.Counter[int] = collections.Counter()  # rows of a pass -> passes
        self._lock = threading.Lock()
        if os.environ.get("PEER_STATS"):
            threading.Thread(target=self._write_stats, args=(Path(os.environ["PEER_STATS"]),), daemon=True).start()

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        with self._lock:
            self.passes[len(x)] += 1
        z = np.where(self.log1p, np.log1p(np.maximum(x, 0)), x)
        h = np.clip((z - self.mean) / self.std, -CLIP, CLIP).astype(np.float32)
        for w, b in self.layers[:-1]:
            h = np.maximum(h @ w + b, 0.0)
        w, b = self.layers[-1]
        logits = h @ w + b
        logit = self.slope * (logits[:, 1] - logits[:, 0]) + self.intercept
        return 1.0 / (1.0 + np.exp(np.clip(-logit, -60, 60)))

    def score_events(self, events: list[dict]) -> list[float]:
        x = np.array([[e["features"][n] for n in self.names] for e in events], np.float64)
        return self.score_matrix(x).tolist()

    def _write_stats(self, path: Path) -> None:
        written: dict[int, int] = {}
        while True:
            with self._lock:
                counts = dict(self.passes)
            if counts != written:
                path.with_suffix(".tmp").write_text(json.dumps(counts))
                os.replace(path.with_suffix(".tmp"), path)
                written = counts
            time.sleep(STATS_EVERY_S)
