import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from learners.quality import average_precision, roc_auc


@pytest.mark.parametrize("seed", range(6))
def test_figures_are_sklearns_with_and_without_tied_scores(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 4000))
    y = (rng.random(n) < rng.uniform(0.01, 0.6)).astype(np.int64)
    y[:2] = [0, 1]
    scores = rng.random(n).astype(np.float32)
    for s in (scores, np.round(scores, seed % 3)):  # rounding makes ties, down to two distinct values
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_one_class_has_no_figure():
    assert average_precision(np.ones(4), np.arange(4.0)) is None and roc_auc(np.zeros(4), np.arange(4.0)) is None
