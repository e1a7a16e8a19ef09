"""A guard against poisoned labels: a round whose fraud rate is implausible is quarantined.

Ranking gates cannot see every poisoning: a flood of random fake-fraud labels barely changes average
precision but shifts every score upward (more alerts), and it sits in the held-out events the gate
judges with. So before a round is trained, its fraud rate is compared with the usual rate (the
pretraining history's, then a running average of accepted rounds): more than ``ratio`` times the
usual (beyond chance), or less than ``1/ratio`` of it when enough frauds were expected, and the
round's events are neither trained on nor held out.

Examples
--------
>>> import numpy as np
>>> g = LabelRateGuard(ratio=5.0, baseline=0.01)
>>> g.check(np.r_[np.ones(30), np.zeros(2970)]) is None   # 1%: usual
True
>>> g.check(np.r_[np.ones(600), np.zeros(2400)])           # 20%: a flood
'fraud rate 20.00% is over 5.0 times the usual 1.00%'
"""

from __future__ import annotations

import numpy as np


class LabelRateGuard:
    def __init__(self, ratio: float, baseline: float | None, smoothing: float = 0.1):
        self.ratio, self.baseline, self.smoothing = ratio, baseline, smoothing

    def check(self, y: np.ndarray, enforce: bool = True) -> str | None:
        """The reason to quarantine this round's labels, or None (and the usual rate is updated). Not
        ``enforce``d (an operator confirmed a concept change), a round only moves the usual rate."""
        n, frauds = len(y), float(np.sum(y))
        if n == 0:
            return None
        rate = frauds / n
        if self.baseline is not None:
            expected = self.baseline * n
            if not enforce:
                self.baseline += self.smoothing * (rate - self.baseline)
                return None
            if frauds > self.ratio * expected + 5:
                return f"fraud rate {rate:.2%} is over {self.ratio} times the usual {self.baseline:.2%}"
            if expected >= 20 and frauds < expected / self.ratio:
                return f"fraud rate {rate:.2%} is under 1/{self.ratio} of the usual {self.baseline:.2%}"
            self.baseline += self.smoothing * (rate - self.baseline)
        else:
            self.baseline = rate
        return None
