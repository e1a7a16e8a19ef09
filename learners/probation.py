"""Probation of a newly served version: automatic rollback on live figures.

The gates judge a candidate before it is served. After the swap, the labeled events that arrive
next were seen by neither the new version nor its parent; if the new version's average precision on
them is, with the gates' confidence, more than a margin below the parent's (the same paired
bootstrap as the gates), it is rolled back. A verdict waits for enough frauds; a version that is
neither shown worse nor cleared by then stays served and its probation ends.

Examples
--------
>>> import numpy as np
>>> from types import SimpleNamespace
>>> good = SimpleNamespace(version="v000001", score=lambda x: x[:, 0])
>>> bad = SimpleNamespace(version="v000002", score=lambda x: -x[:, 0])
>>> p = Probation(bad, good, min_positives=20, margin=0.02, confidence=0.9)
>>> y = np.r_[np.ones(20), np.zeros(400)]; x = (y + np.random.default_rng(0).normal(size=420))[:, None]
>>> p.observe(x, y).rollback
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from learners.stats import paired_ap_difference


@dataclass(frozen=True)
class Verdict:
    rollback: bool
    figures: dict[str, Any]

    @property
    def reason(self) -> str:
        f = self.figures
        return (
            f"{f['version']} scored AP {f['version_ap']:.4f} on {f['events']} events labeled after its swap "
            f"({f['positives']} frauds) against {f['parent_ap']:.4f} for {f['parent']}: difference {f['difference']:+.4f}, "
            f"interval [{f['low']:+.4f}, {f['high']:+.4f}] (worse by over {f['margin']} with probability {f['p_worse']:.2f})"
        )


class Probation:
    def __init__(self, version, parent, min_positives: int, margin: float, confidence: float = 0.9):  # ScoringModel-like
        self.version, self.parent = version, parent
        self.min_positives, self.margin, self.confidence = min_positives, margin, confidence
        self._x: list[np.ndarray] = []
        self._y: list[np.ndarray] = []

    def observe(self, x: np.ndarray, y: np.ndarray) -> Verdict | None:
        """Add newly labeled events; a verdict once enough frauds were seen, else None."""
        self._x.append(x)
        self._y.append(y)
        ys = np.concatenate(self._y)
        if ys.sum() < self.min_positives or ys.sum() == len(ys):
            return None
        xs = np.concatenate(self._x)
        c = paired_ap_difference(ys, self.version.score(xs), self.parent.score(xs), confidence=self.confidence)
        p_worse = c.p_below(-self.margin)
        figures = {
            "version": self.version.version, "parent": self.parent.version, "events": len(ys),
            "positives": int(ys.sum()), "version_ap": c.a, "parent_ap": c.b, "margin": self.margin,
            "difference": c.diff, "low": c.low, "high": c.high, "p_worse": p_worse,
        }
        return Verdict(rollback=p_worse >= self.confidence, figures=figures)
