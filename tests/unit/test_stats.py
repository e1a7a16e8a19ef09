"""The paired AP comparison the gates and the evaluation report decide with."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from learners.stats import average_precision, interval, paired_ap_difference, paired_ap_replicates


def _sample(n: int, frauds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.zeros(n, int)
    y[rng.choice(n, frauds, replace=False)] = 1
    return y, rng.normal(size=n) + 1.5 * y


def test_weighted_ap_is_sklearns_also_with_ties():
    y, s = _sample(3000, 60, 0)
    w = np.where(y == 1, 1.0, 7.0)
    for scores in (s, np.round(s, 1)):
        assert average_precision(y, scores, w) == pytest.approx(average_precision_score(y, scores, sample_weight=w), abs=1e-12)
    assert average_precision(np.zeros(5), np.ones(5)) is None


def test_weights_bring_a_sampled_set_back_to_the_real_rate_ap():
    """All frauds and 1 in 20 legitimate events, weighted 20: its AP estimates the full set's."""
    y, s = _sample(200_000, 300, 1)
    full = average_precision(y, s)
    keep = (y == 1) | (np.random.default_rng(2).random(len(y)) < 0.05)
    weighted = average_precision(y[keep], s[keep], np.where(y[keep] == 1, 1.0, 20.0))
    unweighted = average_precision(y[keep], s[keep])
    assert abs(weighted - full) < 0.03 < unweighted - full


def test_the_bootstrap_spread_is_that_of_resampling_the_events():
    y, s = _sample(5000, 40, 3)
    other = s + np.random.default_rng(4).normal(scale=0.8, size=len(s))
    _, reps = paired_ap_replicates(y, s, other, resamples=400, seed=0)
    rng = np.random.default_rng(5)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    direct = []
    for _ in range(300):
        i = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        direct.append(average_precision_score(y[i], s[i]) - average_precision_score(y[i], other[i]))
    assert np.std(reps) == pytest.approx(np.std(direct), rel=0.2)


def test_a_known_better_model_with_30_frauds_is_better_an_equal_one_is_not_worse():
    y, s = _sample(6000, 30, 6)
    noisy = s + np.random.default_rng(7).normal(scale=1.5, size=len(s))
    assert paired_ap_difference(y, s, noisy, seed=1).verdict(0.9, 0.0) == "better"
    assert paired_ap_difference(y, noisy, s, seed=1).verdict(0.9, 0.0) == "worse"
    twin = s + np.random.default_rng(8).normal(scale=1e-3, size=len(s))  # the same model, retrained
    assert paired_ap_difference(y, twin, s, seed=1).verdict(0.9, 0.01, 0.005) == "inconclusive"


def test_the_same_call_gives_the_same_interval():
    y, s = _sample(4000, 30, 9)
    other = s[::-1].copy()
    a, b = paired_ap_difference(y, s, other, seed=3), paired_ap_difference(y, s, other, seed=3)
    assert (a.low, a.high, a.p_better) == (b.low, b.high, b.p_better)
    assert a.low <= a.diff <= a.high
    assert interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))


def test_a_sample_of_one_class_is_refused_with_its_counts():
    with pytest.raises(ValueError, match="0 frauds among 10"):
        paired_ap_difference(np.zeros(10), np.ones(10), np.ones(10))
