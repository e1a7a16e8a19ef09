"""The figures of `perennial evaluate` on inputs whose answer is known: what was served (log-loss,
Brier, accuracy, calibration, recall at a daily budget, alerts per version), the paired bootstrap
intervals and their verdicts, and the marking of figures that rest on too few frauds."""

from __future__ import annotations

import numpy as np
import pytest

from learners.quality import average_precision
from learners.stats import paired_ap_replicates
from perennial.evaluation.report import cell
from perennial.evaluation.scores import (
    BOOTSTRAP_SEED,
    MIN_CELL_FRAUDS,
    acc,
    accuracy,
    alert_threshold,
    alerts,
    ap_interval,
    ap_replicates,
    brier,
    bwt,
    calibration_error,
    largest_alert_change,
    log_loss,
    paired_difference,
    recall_at_daily_budget,
    served_quality,
    verdict,
)


def test_log_loss_and_brier_of_known_probabilities():
    y, p = np.array([1, 0]), np.array([0.8, 0.4])
    assert log_loss(y, p) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    assert brier(y, p) == pytest.approx((0.2**2 + 0.4**2) / 2)
    assert np.isfinite(log_loss(np.array([1]), np.array([0.0])))  # clipped, not infinite


def test_accuracy_only_where_positives_are_not_rare():
    y = np.array([1] * 10 + [0] * 90)
    p = np.r_[np.full(10, 0.9), np.full(85, 0.1), np.full(5, 0.7)]
    assert accuracy(y, p) == pytest.approx(0.95)
    assert accuracy(np.array([1] * 3 + [0] * 97), np.zeros(100)) == pytest.approx(0.97)  # 3%: shown
    assert accuracy(np.array([1] * 1 + [0] * 99), np.zeros(100)) is None  # 1%: rare


def test_calibration_error_over_equal_width_bins():
    assert calibration_error(np.array([0, 1] * 50), np.full(100, 0.5)) == pytest.approx(0.0)  # calibrated
    # bin [0.9, 1]: mean score 0.95, fraud rate 0.5 -> 0.45 on half the events; bin [0, 0.1): 0.05 vs 0
    y = np.array([1, 0, 0, 0])
    p = np.array([0.95, 0.95, 0.05, 0.05])
    assert calibration_error(y, p) == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    assert calibration_error(np.array([1]), np.array([1.0])) == pytest.approx(0.0)  # a score of 1 is in the last bin


def test_recall_at_budget_reviews_the_top_share_of_each_day():
    day = np.repeat([0, 1], 200)
    y = np.zeros(400, int)
    y[[0, 1, 2, 200]] = 1
    s = np.zeros(400)
    s[[0, 1, 2]] = [0.9, 0.8, 0.7]  # day 0: three frauds on top, one reviewed (0.5% of 200)
    s[[200, 201]] = [0.5, 0.6]  # day 1: a legitimate event above the fraud
    assert recall_at_daily_budget(day, y, s, budget=0.005) == pytest.approx(1 / 4)
    assert recall_at_daily_budget(day, y, s, budget=0.01) == pytest.approx(3 / 4)  # two a day
    assert recall_at_daily_budget(day, np.zeros(400, int), s) is None


def test_the_alert_threshold_gives_the_rate_on_its_sample_and_counts_others():
    scores = np.random.default_rng(0).random(20_000)
    t = alert_threshold(scores, 0.005)
    assert alerts(scores, t) == 100
    assert alerts(scores * 0.5, t) == 0 and alerts(np.sqrt(scores), t) > 100


def test_the_largest_alert_change_between_consecutive_versions():
    assert largest_alert_change([100]) is None
    assert largest_alert_change([100, 120, 90, 91]) == {"relative": 0.25, "alerts": 30, "swap": 2}
    assert largest_alert_change([0, 3])["relative"] == 3.0  # from no alert at all: counted against one


def test_served_quality_has_every_figure_with_its_sample_size():
    rng = np.random.default_rng(1)
    y = (rng.random(4000) < 0.01).astype(int)
    s = np.clip(rng.random(4000) * 0.3 + 0.6 * y, 0, 1)
    q = served_quality(np.repeat(np.arange(4), 1000), y, s)
    assert q["events"] == 4000 and q["frauds"] == int(y.sum())
    assert q["ap"] == pytest.approx(average_precision(y, s)) and q["accuracy"] is None  # 1% fraud: rare
    assert {"auc", "log_loss", "brier", "recall_at_budget", "ece"} <= q.keys()


def scores(n: int = 3000, rate: float = 0.03, seed: int = 0, skill: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)
    return y, 1 / (1 + np.exp(-(rng.normal(size=n) + skill * 2 * y - 3)))


def test_an_identical_pair_gives_an_interval_containing_zero():
    y, a = scores()
    d = paired_difference([ap_replicates(y, a)], [ap_replicates(y, a.copy())])
    assert d["low"] <= 0 <= d["high"] and d["difference"] == pytest.approx(0) and d["verdict"] == "no evidence either way"


def test_replicates_of_two_models_are_paired_on_the_same_resamples():
    """The difference of two models' replicates is stats' paired bootstrap of their AP difference."""
    y, a = scores(seed=1)
    b = scores(seed=1, skill=0.5)[1]
    (ap_a, ra), (ap_b, rb) = ap_replicates(y, a, 100), ap_replicates(y, b, 100)
    diff, paired = paired_ap_replicates(y, a, b, resamples=100, seed=BOOTSTRAP_SEED)
    assert ap_a - ap_b == pytest.approx(diff) and ra - rb == pytest.approx(paired)


def test_a_clearly_better_model_is_called_better_and_the_worse_one_worse():
    y, good = scores(skill=2.0)
    bad = 1 / (1 + np.exp(-np.random.default_rng(5).normal(size=len(y))))  # ranks nothing
    better = paired_difference([ap_replicates(y, good)], [ap_replicates(y, bad)])
    assert better["verdict"] == "better" and better["low"] > 0
    assert paired_difference([ap_replicates(y, bad)], [ap_replicates(y, good)])["verdict"] == "worse"


def test_several_seeds_average_the_differences_and_the_replicates():
    (y1, a1), (y2, a2) = scores(seed=1, skill=2.0), scores(seed=2, skill=2.0)
    b1, b2 = scores(seed=1)[1], scores(seed=2)[1]
    a, b = [ap_replicates(y1, a1), ap_replicates(y2, a2)], [ap_replicates(y1, b1), ap_replicates(y2, b2)]
    one, two, both = paired_difference(a[:1], b[:1]), paired_difference(a[1:], b[1:]), paired_difference(a, b)
    assert both["difference"] == pytest.approx((one["difference"] + two["difference"]) / 2)
    # averaging two seeds' replicates narrows the interval
    assert both["high"] - both["low"] < max(one["high"] - one["low"], two["high"] - two["low"])


def test_the_ap_interval_holds_the_ap():
    y, s = scores(seed=3)
    a = ap_interval([ap_replicates(y, s)])
    assert a["ap"] == pytest.approx(average_precision(y, s))
    assert a["low"] < a["ap"] < a["high"]


def test_verdicts_follow_the_interval():
    assert verdict(0.01, 0.03) == "better" and verdict(-0.03, -0.01) == "worse" and verdict(-0.01, 0.02) == "no evidence either way"


def test_a_cell_under_the_fraud_minimum_shows_its_count_not_a_number():
    assert cell(1.0, 12) == "— (12 frauds)"
    assert cell(0.8766, MIN_CELL_FRAUDS) == "0.877"
    assert cell(None, 40) == "n/a"


def test_acc_and_bwt_leave_out_probes_with_too_few_frauds():
    R = np.array([[0.5, 0.5, 0.5], [0.9, 1.0, 0.2], [0.7, 1.0, 0.3], [0.6, 1.0, 0.4]])
    usable = np.array([True, False, True])
    assert acc(R, usable) == pytest.approx((0.6 + 0.4) / 2)
    assert acc(R) == pytest.approx((0.6 + 1.0 + 0.4) / 3)
    assert bwt(R, usable) == pytest.approx(0.6 - 0.9)  # period 1 left out; period 2 is the last
    assert np.isnan(acc(R, np.zeros(3, bool)))
