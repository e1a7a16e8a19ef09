"""The label-rate guard during a confirmed concept change: it learns the new rate instead of
quarantining, so the rounds after the change are judged against the rate the change brought."""

import numpy as np

from learners.label_guard import LabelRateGuard


def test_not_enforced_a_flood_moves_the_usual_rate_and_is_not_quarantined():
    guard = LabelRateGuard(ratio=5.0, baseline=0.01)
    flood = np.r_[np.ones(300), np.zeros(2700)]  # 10%: ten times the usual
    assert guard.check(flood) is not None and guard.baseline == 0.01  # enforced: quarantined, the rate unmoved
    for _ in range(30):
        assert guard.check(flood, enforce=False) is None
    assert 0.09 < guard.baseline <= 0.1
    assert guard.check(flood) is None  # after the change, 10% is the usual rate
