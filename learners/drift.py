"""Drift detection with river's ADWIN on the served model's error over newly labeled events.

Each round, before training, the served (incumbent) model's log-loss on every new event is fed to
ADWIN: a prequential error stream. A significant change of its mean is a drift.

Examples
--------
>>> m = DriftMonitor()
>>> m.update([0.05] * 1000)
0
>>> m.update([0.9] * 1000) > 0
True
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from river.drift import ADWIN


def log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-event binary log-loss."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


class DriftMonitor:
    def __init__(self, delta: float = 0.002):
        self.delta = delta
        self.adwin = ADWIN(delta=delta)
        self.detections = 0

    def update(self, losses: Iterable[float]) -> int:
        """Feed a round's losses; return how many drifts were detected in them."""
        found = 0
        for value in losses:
            self.adwin.update(float(value))
            found += self.adwin.drift_detected
        self.detections += found
        return found

    @property
    def estimation(self) -> float:
        """Mean loss over ADWIN's current window."""
        return float(self.adwin.estimation)

    @property
    def width(self) -> int:
        """Events in ADWIN's current window (it shrinks when a drift is found)."""
        return int(self.adwin.width)
