"""Figures of a prequential run.

Examples
--------
Card precision@k: each day the k cards with the highest score are checked; cards found fraudulent on
an earlier day are known already and left out.

>>> import numpy as np
>>> day = np.array([0, 0, 0, 1, 1, 1]); card = np.array([1, 2, 3, 1, 2, 3])
>>> y = np.array([1, 0, 0, 1, 1, 0]); s = np.array([0.9, 0.1, 0.2, 0.99, 0.5, 0.1])
>>> card_precision_at_k(day, card, y, s, k=1)  # day 1: card 1 is known, card 2 is next
[1.0, 1.0]

R matrix figures (rows: after each period, the first row before any; columns: tasks):

>>> R = np.array([[0.5, 0.2], [0.8, 0.3], [0.6, 0.9]])
>>> round(forgetting(R)[0], 2), round(acc(R), 2), round(bwt(R[:, :2]), 2)
(0.2, 0.75, -0.2)
>>> adaptation_events([(100, 0.1), (200, 0.85), (300, 0.95), (400, 1.0)])
300
>>> adaptation_events([(100, 0.01), (200, 0.02)]) is None  # never learned
True

A model whose scores do not spread ranks nothing: its AP is the fraud rate, which is a bug to report,
not a figure.

>>> log_odds_spread(np.array([0.01, 0.2, 0.9])) > MIN_LOG_ODDS_SPREAD > log_odds_spread(np.full(3, 0.4))
True

What was served, at a fraud team's operating points: recall when the top share of each day's events
is reviewed, and the alerts a fixed threshold raises.

>>> day = np.array([0, 0, 0, 0, 1, 1, 1, 1]); y = np.array([1, 0, 0, 1, 0, 1, 0, 0])
>>> s = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.7, 0.1, 0.2])
>>> recall_at_daily_budget(day, y, s, budget=0.25)  # one event a day reviewed: 2 of 3 frauds found
0.6666666666666666
>>> t = alert_threshold(np.array([0.1, 0.5, 0.3, 0.9]), rate=0.5); t, alerts(np.array([0.2, 0.4, 0.6]), t)
(0.5, 1)
>>> largest_alert_change([100, 110, 88, 90])  # the swap from 110 to 88 alerts
{'relative': 0.2, 'alerts': 22, 'swap': 2}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np
from numpy.typing import ArrayLike

from learners.quality import average_precision, roc_auc
from learners.stats import interval, paired_ap_replicates

MIN_CELL_FRAUDS = 30
"""Fewest frauds a figure (an R-matrix cell, a period, a pattern) may rest on: below it the AP of a
good model swings by more than 0.05 from one sample to the next, so the cell is shown as its fraud
count instead of a number, and ACC, BWT and forgetting leave it out."""
ALERT_BUDGET = 0.005
"""The share of each day's events a fraud team reviews (recall at budget), and the alert rate that
fixes the threshold of the alert-volume figure under the pretrained version."""
ACCURACY_MIN_FRAUD_RATE = 0.02
"""Accuracy (at a 0.5 threshold) is reported only from this fraud rate up: below it, predicting
"legitimate" for everything is already over 98% accurate. (Not 5%: the scenarios drawn at 5% fraud,
where a threshold-only change shows in accuracy alone, realise 4.9%.)"""
ECE_BINS = 10
"""Calibration error: equal-width score bins on [0, 1]."""
CONFIDENCE = 0.95
"""Confidence of the bootstrap intervals the report's verdicts use."""
RESAMPLES = 200
"""Bootstrap resamples per interval: 200 keep the bootstrap of a 160,000-event stream to seconds per run
(each end of a 95% interval then rests on 5 replicates); `--resamples` asks for more."""
BOOTSTRAP_SEED = 13
"""The same resamples for every strategy and every seed of a scenario (paired, and averaged by index)."""
ALERT_SAMPLE_SIZE = 20_000
"""Most held-out events the alert volume of every served version is counted on."""

MIN_LOG_ODDS_SPREAD = 1e-2
"""Below this standard deviation of the log-odds of a model's scores on a probe, the model is
collapsed. Working models on fraud data spread by whole units; a collapsed one (every ReLU dead, or
logits past the scorer's clip) by 1e-4 or nothing."""


class CollapsedModel(RuntimeError):
    """A served model scored a probe with (nearly) one value: every figure from it would be noise."""


def log_odds_spread(scores: np.ndarray) -> float:
    """Standard deviation of the log-odds of fraud probabilities."""
    p = np.clip(np.asarray(scores, np.float64), 1e-300, 1 - 1e-16)
    return float(np.std(np.log(p) - np.log1p(-p)))


def assert_spread(scores: np.ndarray, what: str) -> None:
    """Raise ``CollapsedModel`` (naming ``what``) when ``scores`` do not spread."""
    if len(scores) > 1 and (spread := log_odds_spread(scores)) < MIN_LOG_ODDS_SPREAD:
        raise CollapsedModel(
            f"{what}: a collapsed model, its {len(scores)} scores spread by {spread:.2g} in log-odds "
            f"(under {MIN_LOG_ODDS_SPREAD:g}; min {np.min(scores):.6g}, max {np.max(scores):.6g}); it ranks "
            "nothing and its AP would be the fraud rate. This is a defect of the strategy's training, "
            "not a result: fix it rather than report the figures"
        )


def card_precision_at_k(day: np.ndarray, card: np.ndarray, y: np.ndarray, scores: np.ndarray, k: int) -> list[float]:
    """Per day: the share of frauds among the top-k cards (by their highest score of the day),
    cards detected on earlier days excluded."""
    detected: set = set()
    out = []
    for d in np.unique(day):
        m = day == d
        cards, inv = np.unique(card[m], return_inverse=True)
        top = np.full(len(cards), -np.inf)
        np.maximum.at(top, inv, scores[m])
        fraud = np.zeros(len(cards), bool)
        np.logical_or.at(fraud, inv, y[m] == 1)
        fresh = np.array([c not in detected for c in cards.tolist()], bool)
        cand = np.flatnonzero(fresh)
        chosen = cand[np.argsort(-top[cand], kind="stable")[:k]]
        out.append(float(fraud[chosen].sum() / k))
        detected.update(cards[chosen[fraud[chosen]]].tolist())
    return out


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels, probabilities clipped to [1e-7, 1 - 1e-7]."""
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(np.where(np.asarray(y) == 1, np.log(p), np.log1p(-p))))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared difference between the probability and the label."""
    return float(np.mean((np.asarray(p, np.float64) - np.asarray(y)) ** 2))


def accuracy(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float | None:
    """Share of events on the right side of ``threshold``; None when frauds are rare (under
    ``ACCURACY_MIN_FRAUD_RATE``), where it says nothing."""
    y = np.asarray(y)
    if not len(y) or y.mean() < ACCURACY_MIN_FRAUD_RATE:
        return None
    return float(np.mean((np.asarray(p) >= threshold) == (y == 1)))


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: over ``bins`` equal-width bins of the score, the gap between the
    mean score and the fraud rate, weighted by the bin's share of events."""
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    gap = np.abs(np.bincount(which, p, bins) - np.bincount(which, y, bins))
    return float(gap.sum() / len(p)) if len(p) else 0.0


def recall_at_daily_budget(day: np.ndarray, y: np.ndarray, scores: np.ndarray, budget: float = ALERT_BUDGET) -> float | None:
    """Share of all frauds among the top ``budget`` share of each day's events (at least one event a
    day): what a team reviewing that many alerts a day catches. None without frauds."""
    y = np.asarray(y)
    if not y.any():
        return None
    caught = 0
    for d in np.unique(day):
        m = np.flatnonzero(day == d)
        k = max(1, round(budget * len(m)))
        caught += int(y[m[np.argsort(-scores[m], kind="stable")[:k]]].sum())
    return caught / int(y.sum())


def alert_threshold(scores: np.ndarray, rate: float = ALERT_BUDGET) -> float:
    """The score at which ``rate`` of ``scores`` alert (score >= threshold)."""
    k = max(1, round(rate * len(scores)))
    return float(np.sort(scores)[::-1][k - 1])


def alerts(scores: np.ndarray, threshold: float) -> int:
    return int(np.sum(scores >= threshold))


def largest_alert_change(counts: Sequence[int]) -> dict[str, float | int] | None:
    """The largest change in alerts between consecutive served versions, relative to the earlier
    version's (``swap`` is the index of the later version); None with a single version."""
    if len(counts) < 2:
        return None
    c = np.asarray(counts, np.float64)
    rel = np.abs(np.diff(c)) / np.maximum(c[:-1], 1)
    i = int(np.argmax(rel))
    return {"relative": round(float(rel[i]), 6), "alerts": int(abs(c[i + 1] - c[i])), "swap": i + 1}


def served_quality(day: np.ndarray, y: np.ndarray, scores: np.ndarray, budget: float = ALERT_BUDGET) -> dict[str, float | int | None]:
    """The figures of what was served: every event scored by the version served at its moment."""
    out: dict[str, float | int | None] = {"events": len(y), "frauds": int(np.sum(y))}
    if not len(y):
        return out
    return {**out, "ap": average_precision(y, scores), "auc": roc_auc(y, scores), "log_loss": log_loss(y, scores),
            "brier": brier(y, scores), "recall_at_budget": recall_at_daily_budget(day, y, scores, budget),
            "accuracy": accuracy(y, scores), "ece": calibration_error(y, scores)}


def verdict(low: float, high: float) -> str:
    """What an interval of a difference says."""
    return "better" if low > 0 else "worse" if high < 0 else "no evidence either way"


def ap_replicates(y: np.ndarray, scores: np.ndarray, resamples: int = RESAMPLES) -> tuple[float, np.ndarray]:
    """AP of ``scores`` and its class-stratified bootstrap replicates. ``learners.stats`` draws the
    same resamples for the same seed and sample, so two models' replicates on the same events are
    paired: their difference, replicate by replicate, is the paired bootstrap of the AP difference.
    (Computed as the paired difference from a constant score, whose AP is the fraud rate in every
    replicate since each class keeps its count.)"""
    diff, replicates = paired_ap_replicates(y, scores, np.zeros(len(y)), resamples=resamples, seed=BOOTSTRAP_SEED)
    rate = float(np.mean(y))
    return diff + rate, replicates + rate


def ap_interval(runs: Sequence[tuple[float, np.ndarray]], confidence: float = CONFIDENCE) -> dict[str, float]:
    """The AP over seeds (``ap_replicates`` of each seed): the mean, and the interval of the
    replicates averaged over seeds (the same replicate index in every seed)."""
    low, high = interval(np.mean([r for _, r in runs], axis=0), confidence)
    return {"ap": float(np.mean([ap for ap, _ in runs])), "low": low, "high": high}


def paired_difference(a: Sequence[tuple[float, np.ndarray]], b: Sequence[tuple[float, np.ndarray]], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """AP(a) - AP(b) on the same events (``ap_replicates`` of each seed, in the same seed order):
    the mean over seeds, the interval of the paired replicates averaged over seeds, its verdict."""
    low, high = interval(np.mean([ra - rb for (_, ra), (_, rb) in zip(a, b)], axis=0), confidence)
    return {"difference": float(np.mean([pa - pb for (pa, _), (pb, _) in zip(a, b)])), "low": low, "high": high,
            "verdict": verdict(low, high)}


@overload
def enough_frauds(frauds: int) -> np.bool_: ...
@overload
def enough_frauds(frauds: np.ndarray | Sequence[int]) -> np.ndarray: ...
def enough_frauds(frauds: int | np.ndarray | Sequence[int]) -> np.bool_ | np.ndarray:
    """Whether a figure resting on ``frauds`` frauds is shown as a number (see ``MIN_CELL_FRAUDS``)."""
    return np.asarray(frauds) >= MIN_CELL_FRAUDS


def quality(y: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    return {"ap": average_precision(y, scores), "auc": roc_auc(y, scores), "events": len(y), "frauds": int(np.sum(y))}


def forgetting(R: np.ndarray) -> list[float]:
    """Per task: the best it was known at any earlier point minus how it is known at the end."""
    return [float(np.nanmax(R[:-1, j]) - R[-1, j]) if np.isfinite(R[:-1, j]).any() and np.isfinite(R[-1, j]) else float("nan") for j in range(R.shape[1])]


def acc(R: np.ndarray, usable: ArrayLike | None = None) -> float:
    """Mean quality over the tasks at the end (the ``usable`` ones: enough frauds in their probe)."""
    final = R[-1] if usable is None else R[-1, np.asarray(usable, bool)]
    return float(np.nanmean(final)) if np.isfinite(final).any() else float("nan")


def bwt(R: np.ndarray, usable: ArrayLike | None = None) -> float:
    """Backward transfer for tasks that are periods: rows 1..P are after periods 0..P-1 and column j
    is period j; mean over j < P-1 (``usable`` ones) of (final quality on j) - (quality on j right
    after period j)."""
    P = R.shape[1]
    ok = np.ones(P, bool) if usable is None else np.asarray(usable, bool)
    diffs = [R[-1, j] - R[j + 1, j] for j in range(P - 1) if ok[j] and np.isfinite(R[-1, j]) and np.isfinite(R[j + 1, j])]
    return float(np.mean(diffs)) if diffs else float("nan")


def adaptation_events(curve: Sequence[tuple[int, float | None]], share: float = 0.9, learned: float = 0.2) -> int | None:
    """Labeled events seen until the quality first reaches ``share`` of its best over the run;
    None when the pattern is never learned (best AP under ``learned``)."""
    points = [(n, q) for n, q in curve if q is not None and np.isfinite(q)]
    if not points:
        return None
    best = max(q for _, q in points)
    if best < learned:
        return None
    return next(n for n, q in points if q >= share * best)


def absence(present: Sequence[int]) -> tuple[int, int] | None:
    """The first and last period of a pattern's first absence between occurrences, or None if it
    never vanishes and comes back. ``present`` counts its frauds per period; a period with under a
    quarter of the median count of the periods where it occurs is an absence.

    >>> absence([90, 40, 9, 0, 26, 70]), absence([5, 5, 5])
    ((2, 3), None)
    """
    counts = np.asarray(present, float)
    if not (counts > 0).any():
        return None
    absent = counts < 0.25 * np.median(counts[counts > 0])
    gaps = [i for i in range(1, len(counts) - 1) if absent[i] and not absent[:i].all() and not absent[i + 1 :].all()]
    if not gaps:
        return None
    first = last = gaps[0]
    while last + 1 in gaps:
        last += 1
    return first, last


def recurrence(curve: Sequence[tuple[float, float | None]], present: Sequence[int], edges: np.ndarray) -> dict[str, float] | None:
    """For a pattern that vanishes and comes back (see ``absence``): its best quality before it
    vanished, its quality when it comes back (the end of the absence), and the drop as a share of
    the best. ``curve`` is (time, quality) through the stream."""
    gap = absence(present)
    if gap is None:
        return None
    first, last = gap
    before = [q for t, q in curve if q is not None and t <= edges[first]]
    at_return = [q for t, q in curve if q is not None and t <= edges[last + 1]]
    if not before or not at_return:
        return None
    peak, back = max(before), at_return[-1]
    return {"peak": float(peak), "at_return": float(back), "drop": float((peak - back) / peak) if peak > 0 else 0.0,
            "absent_from": float(edges[first]), "back_at": float(edges[last + 1])}
