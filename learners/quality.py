"""Fraud-quality figures. Accuracy is meaningless at a 1% fraud rate, so none is offered.

Examples
--------
>>> import numpy as np
>>> y = np.array([0, 0, 1, 1]); s = np.array([0.1, 0.4, 0.35, 0.8])
>>> round(average_precision(y, s), 3), round(roc_auc(y, s), 3)
(0.833, 0.75)
>>> average_precision(np.zeros(3), np.ones(3)) is None
True
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

# scikit-learn's definitions, computed directly: the gates score every round, and sklearn's input
# validation costs more than the sums themselves (tests hold both to sklearn's values).


def average_precision(y: np.ndarray, scores: np.ndarray) -> float | None:
    """PR-AUC (average precision, as sklearn's ``average_precision_score``: precision at each distinct
    score threshold, weighted by the recall it adds); None when there is no fraud to find."""
    y = np.asarray(y)
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        return None
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    s, hits = np.asarray(scores, np.float64)[order], y[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last row of each distinct threshold
    tp = np.cumsum(hits)[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0.0, tp]) / positives
    return float(np.sum(recall_gain * precision))


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC-AUC (the Mann-Whitney statistic, ties counted half); None when only one class is present."""
    y = np.asarray(y)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(np.asarray(scores, np.float64))
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def recall_at_budget(y: np.ndarray, scores: np.ndarray, budget: float = 0.01) -> float | None:
    """Share of frauds found when alerting on the top ``budget`` fraction of events by score."""
    y = np.asarray(y)
    if y.sum() == 0:
        return None
    k = max(1, int(round(budget * len(y))))
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return float(y[top].sum() / y.sum())
