"""Probation of a newly served version: automatic rollback on live figures.

The gates judge a candidate before it is served. After the swap, the labeled events that arrive
next were seen by neither the new version nor its parent; if the new version's average precision on
them falls more than a margin below the parent's, it is rolled back. A verdict waits for enough
frauds to be meaningful.

Examples
--------
>>> import numpy as np
>>> from types import SimpleNamespace
>>> good = SimpleNamespace(version="v000001", score=lambda x: x[:, 0])
>>> bad = SimpleNamespace(version="v000002", score=lambda x: -x[:, 0])
>>> p = Probation(bad, good, min_positives=2, margin=0.02)
>>> x = np.array([[0.1], [0.9], [0.2], [0.8]]); y = np.array([0, 1, 0, 1])
>>> p.observe(x, y).rollback
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from learners.quality import average_precision


@dataclass(frozen=True)
class Verdict:
    rollback: bool
    figures: dict[str, Any]

    @property
    def reason(self) -> str:
        f = self.figures
        return (
            f"{f['version']} scored AP {f['version_ap']:.4f} on {f['events']} events labeled after its swap "
            f"({f['positives']} frauds) against {f['parent_ap']:.4f} for {f['parent']} (margin {f['margin']})"
        )


class Probation:
    def __init__(self, version, parent, min_positives: int, margin: float):  # noqa: ANN001 - ScoringModel-like
        self.version, self.parent = version, parent
        self.min_positives, self.margin = min_positives, margin
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
        version_ap = average_precision(ys, self.version.score(xs))
        parent_ap = average_precision(ys, self.parent.score(xs))
        figures = {
            "version": self.version.version, "parent": self.parent.version, "events": int(len(ys)),
            "positives": int(ys.sum()), "version_ap": version_ap, "parent_ap": parent_ap, "margin": self.margin,
        }
        return Verdict(rollback=version_ap < parent_ap - self.margin, figures=figures)
