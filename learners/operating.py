"""The operating point: where a fraud team alerts, and how a new version would move it.

A team blocks or reviews every event scored at or above a threshold, and staffs for the alert
volume that gives. These pure functions give that threshold for a target alert rate, the alert
rate at a threshold, and the negative flip rate: the share of the frauds the incumbent alerted on
that the candidate would not. Rates come with the counts behind them; weights (a negative sampled 1
in k weighs k) make a rate the one at the real fraud rate.

Examples
--------
>>> import numpy as np
>>> scores = np.array([0.9, 0.8, 0.7, 0.1, 0.05, 0.01, 0.01, 0.01, 0.01, 0.01])
>>> t = threshold_for_alert_rate(scores, 0.2)
>>> float(t), alert_rate(scores, t)
(0.8, AlertRate(rate=0.2, alerts=2, events=10))
>>> y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0])
>>> negative_flip_rate(y, scores, np.array([0.9, 0.1, 0.7, 0.95, 0, 0, 0, 0, 0, 0]), t)
FlipRate(rate=0.5, flipped=1, alerted_frauds=2, gained=1)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AlertRate:
    """Share of events (weighted) scored at or above a threshold, and the unweighted counts."""

    rate: float
    alerts: int
    events: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FlipRate:
    """Share of the frauds the incumbent alerted on that the candidate does not (None without any),
    with the counts: ``flipped`` of ``alerted_frauds``, and the frauds the candidate alone alerts on
    (``gained``: when alerts are fewer than frauds, a candidate can only alert on a fraud by dropping
    another, so losses are weighed against gains)."""

    rate: float | None
    flipped: int
    alerted_frauds: int
    gained: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def threshold_for_alert_rate(scores: np.ndarray, rate: float, weights: np.ndarray | None = None) -> float:
    """The lowest threshold whose (weighted) alert rate does not exceed ``rate``; alerts are scores at
    or above it. Tied scores alert together, so the rate reached may be under ``rate``; when even the
    top score's weight exceeds it, the threshold is above every score (no alert)."""
    if not 0 < rate < 1:
        raise ValueError(f"an alert rate is a share of events, strictly between 0 and 1; got {rate}")
    s, w = _scores_weights(scores, weights)
    if not len(s):
        raise ValueError("no scores to set an alert rate on")
    distinct, which = np.unique(-s, return_inverse=True)
    cumulative = np.cumsum(np.bincount(which, w)) / w.sum()  # alert rate at each distinct score, highest first
    within = np.flatnonzero(cumulative <= rate * (1 + 1e-9))
    if not len(within):
        return float(np.nextafter(-distinct[0], np.inf))
    return float(-distinct[within[-1]])


def alert_rate(scores: np.ndarray, threshold: float, weights: np.ndarray | None = None) -> AlertRate:
    """The (weighted) share of events scored at or above ``threshold``, with the counts."""
    s, w = _scores_weights(scores, weights)
    alerted = s >= threshold
    rate = float(w[alerted].sum() / w.sum()) if len(s) else 0.0
    return AlertRate(rate=rate, alerts=int(alerted.sum()), events=len(s))


def negative_flip_rate(y: np.ndarray, incumbent: np.ndarray, candidate: np.ndarray, threshold: float) -> FlipRate:
    """Among the frauds (``y == 1``) the incumbent scores at or above ``threshold``, the share the
    candidate scores under it: alerts a fraud team would lose by the swap."""
    y, incumbent, candidate = np.asarray(y), np.asarray(incumbent), np.asarray(candidate)
    if not y.shape == incumbent.shape == candidate.shape:
        raise ValueError(f"labels {y.shape}, incumbent scores {incumbent.shape} and candidate scores {candidate.shape} differ in shape")
    alerted = (y == 1) & (incumbent >= threshold)
    flipped = int((alerted & (candidate < threshold)).sum())
    gained = int(((y == 1) & ~alerted & (candidate >= threshold)).sum())
    n = int(alerted.sum())
    return FlipRate(rate=flipped / n if n else None, flipped=flipped, alerted_frauds=n, gained=gained)


def relative_change(incumbent: AlertRate, candidate: AlertRate) -> float | None:
    """Relative change of the alert rate from incumbent to candidate (0.2: 20% more alerts); None
    when the incumbent raises none.

    >>> round(relative_change(AlertRate(0.005, 40, 8000), AlertRate(0.006, 48, 8000)), 6)
    0.2
    """
    if incumbent.rate == 0:
        return None
    return candidate.rate / incumbent.rate - 1


def _scores_weights(scores: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64)
    if s.ndim != 1 or w.shape != s.shape:
        raise ValueError(f"scores {s.shape} and weights {w.shape} must be 1-d and of one length")
    if not (np.isfinite(s).all() and np.isfinite(w).all() and (w >= 0).all() and (not len(w) or w.sum() > 0)):
        raise ValueError("scores and weights must be finite, weights non-negative and not all zero")
    return s, w
