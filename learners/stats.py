"""Paired comparisons of two models' fraud scores, with their uncertainty.

With a few dozen frauds an average precision moves by several points on resampling, so a decision
between two models rests on the *paired* difference (both scored on the same events) and on how
much that difference moves when the events are resampled: a stratified bootstrap (frauds and
legitimate events resampled separately, so every replicate holds as many frauds as the sample).
Events may carry weights, e.g. legitimate events sampled at 1 in 20 and weighted 20, so that a
fraud-rich evaluation set estimates the AP at the real fraud rate.

The AP is sklearn's (``average_precision_score``, ties as one threshold), computed for many
replicates at once: the events are sorted once per model, and a replicate only changes how many
times each event counts.

Examples
--------
>>> import numpy as np
>>> from sklearn.metrics import average_precision_score
>>> rng = np.random.default_rng(0)
>>> y = (rng.random(2000) < 0.05).astype(int); s = rng.random(2000) + y * rng.random(2000)
>>> w = np.where(y == 1, 1.0, 3.0)
>>> abs(average_precision(y, s, w) - average_precision_score(y, s, sample_weight=w)) < 1e-12
True
>>> same = paired_ap_difference(y, s, s, resamples=200, seed=1)
>>> same.diff, same.low, same.high, same.verdict(0.9, 0.0)
(0.0, 0.0, 0.0, 'inconclusive')
>>> better = paired_ap_difference(y, s + y, s, resamples=200, seed=1)
>>> better.low > 0, better.p_better, better.verdict(0.9, 0.0)
(True, 1.0, 'better')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CHUNK = 64
"""Replicates computed together (memory: CHUNK x events floats per model)."""


def _ap_sorted(y: np.ndarray, ends: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AP of one score order for each row of ``counts`` (event weights in that order); ``ends`` are
    the last positions of each group of tied scores."""
    tp = np.cumsum(counts * y, axis=1)[:, ends]
    fp = np.cumsum(counts * (1 - y), axis=1)[:, ends]
    total = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        gained = np.diff(tp, axis=1, prepend=0.0)
        return np.where(total[:, 0] > 0, (gained * precision).sum(axis=1) / total[:, 0], np.nan)


def _order(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Descending order of the scores and the last index of every group of equal scores in it."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    return order, ends


def average_precision(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float | None:
    """Weighted AP (sklearn's definition); None when only one class is present."""
    y = np.asarray(y, np.float64)
    if y.sum() == 0 or y.sum() == len(y):
        return None
    w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
    order, ends = _order(np.asarray(scores, np.float64))
    return float(_ap_sorted(y[order], ends, w[order][None, :])[0])


def _replicate_counts(y: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How many times each event is drawn in each replicate: frauds and legitimate events resampled
    separately, each class keeping its size."""
    n = len(y)
    counts = np.zeros(resamples * n)
    offsets = (np.arange(resamples) * n)[:, None]
    for members in (np.flatnonzero(y == 1), np.flatnonzero(y == 0)):
        if len(members):
            draws = members[rng.integers(0, len(members), size=(resamples, len(members)))]
            counts += np.bincount((draws + offsets).ravel(), minlength=resamples * n)
    return counts.reshape(resamples, n)


@dataclass(frozen=True, eq=False)
class Comparison:
    """AP of ``a`` minus AP of ``b`` on the same events, with its bootstrap distribution's summary."""

    diff: float
    a: float
    b: float
    low: float  # central interval at ``confidence``
    high: float
    confidence: float
    p_better: float  # share of replicates where a beats b (ties count half)
    frauds: int
    events: int
    resamples: int

    def verdict(self, confidence: float, worse_margin: float, better_margin: float = 0.0) -> str:
        """"better" when a beats b by more than ``better_margin`` with probability ``confidence``;
        "worse" when a is, with that probability, more than ``worse_margin`` below b; "inconclusive"
        otherwise: not enough evidence either way."""
        if self.p_above(better_margin) >= confidence:
            return "better"
        if self.p_below(-worse_margin) >= confidence:
            return "worse"
        return "inconclusive"

    def p_above(self, gain: float) -> float:
        """Share of replicates where a beats b by more than ``gain``."""
        return float(np.mean(self._replicates > gain)) if self._replicates is not None and gain != 0 else self.p_better

    def p_below(self, level: float) -> float:
        """Share of replicates where a - b is under ``level`` (a negative level: a is worse by more)."""
        return float(np.mean(self._replicates < level)) if self._replicates is not None else 0.0

    _replicates: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_replicates")
        return d


def paired_ap_replicates(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, *, weights: np.ndarray | None = None, resamples: int = 400, seed: int = 0,
) -> tuple[float, np.ndarray]:
    """AP(a) - AP(b) on the sample and on ``resamples`` stratified bootstrap replicates of it (the
    same replicates for both models: the difference is paired). The replicates are the same for the
    same ``seed`` and sample size, so two runs give the same interval."""
    y = np.asarray(y, np.float64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
    (oa, ea), (ob, eb) = _order(np.asarray(a, np.float64)), _order(np.asarray(b, np.float64))
    diff = float(_ap_sorted(y[oa], ea, w[oa][None, :])[0] - _ap_sorted(y[ob], eb, w[ob][None, :])[0])
    rng = np.random.default_rng([seed, len(y), int(y.sum())])
    reps = []
    for start in range(0, resamples, CHUNK):
        counts = _replicate_counts(y, min(CHUNK, resamples - start), rng) * w
        reps.append(_ap_sorted(y[oa], ea, counts[:, oa]) - _ap_sorted(y[ob], eb, counts[:, ob]))
    return diff, np.concatenate(reps) if reps else np.zeros(0)


def interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """Central percentile interval of the replicates."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def paired_ap_difference(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, *, weights: np.ndarray | None = None, confidence: float = 0.9,
    resamples: int = 400, seed: int = 0,
) -> Comparison:
    """The paired comparison of two models' AP on the same events; needs both classes present."""
    y = np.asarray(y)
    frauds = int(np.sum(y))
    if frauds == 0 or frauds == len(y):
        raise ValueError(f"a comparison needs frauds and legitimate events; the sample has {frauds} frauds among {len(y)}")
    diff, reps = paired_ap_replicates(y, a, b, weights=weights, resamples=resamples, seed=seed)
    low, high = interval(reps, confidence)
    ap_a, ap_b = average_precision(y, a, weights), average_precision(y, b, weights)
    assert ap_a is not None and ap_b is not None  # both classes are present (checked above)
    p_better = float(np.mean(reps > 0) + 0.5 * np.mean(reps == 0))
    return Comparison(diff, float(ap_a), float(ap_b), low, high, confidence, p_better, frauds, len(y), resamples, reps)
