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
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from learners.quality import average_precision, roc_auc


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


def quality(y: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    return {"ap": average_precision(y, scores), "auc": roc_auc(y, scores), "events": int(len(y)), "frauds": int(np.sum(y))}


def forgetting(R: np.ndarray) -> list[float]:
    """Per task: the best it was known at any earlier point minus how it is known at the end."""
    return [float(np.nanmax(R[:-1, j]) - R[-1, j]) if np.isfinite(R[:-1, j]).any() and np.isfinite(R[-1, j]) else float("nan") for j in range(R.shape[1])]


def acc(R: np.ndarray) -> float:
    """Mean quality over all tasks at the end."""
    return float(np.nanmean(R[-1]))


def bwt(R: np.ndarray) -> float:
    """Backward transfer for tasks that are periods: rows 1..P are after periods 0..P-1 and column j
    is period j; mean over j < P-1 of (final quality on j) - (quality on j right after period j)."""
    P = R.shape[1]
    diffs = [R[-1, j] - R[j + 1, j] for j in range(P - 1) if np.isfinite(R[-1, j]) and np.isfinite(R[j + 1, j])]
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
