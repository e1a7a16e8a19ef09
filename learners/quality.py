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
from sklearn.metrics import average_precision_score, roc_auc_score


def average_precision(y: np.ndarray, scores: np.ndarray) -> float | None:
    """PR-AUC (average precision); None when there is no fraud to find."""
    y = np.asarray(y)
    if y.sum() == 0 or y.sum() == len(y):
        return None
    return float(average_precision_score(y, scores))


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC-AUC; None when only one class is present."""
    y = np.asarray(y)
    if y.sum() == 0 or y.sum() == len(y):
        return None
    return float(roc_auc_score(y, scores))


def recall_at_budget(y: np.ndarray, scores: np.ndarray, budget: float = 0.01) -> float | None:
    """Share of frauds found when alerting on the top ``budget`` fraction of events by score."""
    y = np.asarray(y)
    if y.sum() == 0:
        return None
    k = max(1, round(budget * len(y)))
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return float(y[top].sum() / y.sum())
