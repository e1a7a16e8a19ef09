import numpy as np
import orjson
import pytest

from learners.calibration import IDENTITY, MIN_SLOPE, Calibration, expected_calibration_error, fit_platt, log_loss
from learners.quality import average_precision


def overconfident(n: int, fraud_rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels, and raw scores that overstate fraud the way class-balanced fine-tuning does: the true
    log-odds are 2 * logit(score) - 9 (a legitimate event averages about 0.7)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < fraud_rate).astype(np.int64)
    logit = rng.normal(1.0, 1.0, n) + 2.5 * y
    return 1 / (1 + np.exp(-logit)), y


def test_fitting_brings_the_calibration_error_of_new_events_down():
    raw, y = overconfident(40000, 0.01, seed=0)
    cal = fit_platt(raw[:20000], y[:20000])
    before = expected_calibration_error(y[20000:], raw[20000:])
    after = expected_calibration_error(y[20000:], cal.apply(raw[20000:]))
    assert before > 0.5 and after < 0.002, (before, after)
    assert log_loss(y[20000:], cal.apply(raw[20000:])) < log_loss(y[20000:], raw[20000:]) / 10
    f = cal.figures
    assert f["events"] == 20000 and f["frauds"] == int(y[:20000].sum()) and f["bins"] == 10
    assert f["ece_after"] < f["ece_before"] and f["log_loss_after"] < f["log_loss_before"]


def test_ranking_and_average_precision_are_unchanged():
    raw, y = overconfident(5000, 0.02, seed=1)
    cal = fit_platt(raw, y)
    served = cal.apply(raw)
    assert cal.slope > 0
    assert np.array_equal(np.argsort(raw, kind="stable"), np.argsort(served, kind="stable"))
    assert average_precision(y, served) == pytest.approx(average_precision(y, raw), abs=1e-12)


def test_weights_bring_a_sample_of_negatives_back_to_the_real_fraud_rate():
    """Every fraud and one negative in 20, the negatives weighted 20: the calibrated scores average
    the real fraud rate, not the sample's (twenty times higher)."""
    raw, y = overconfident(200000, 0.002, seed=2)
    rng = np.random.default_rng(3)
    kept = (y == 1) | (rng.random(len(y)) < 1 / 20)
    weights = np.where(y[kept] == 1, 1.0, 20.0)
    weighted = fit_platt(raw[kept], y[kept], weights)
    unweighted = fit_platt(raw[kept], y[kept])
    real_rate = y.mean()
    assert weighted.apply(raw).mean() == pytest.approx(real_rate, rel=0.15)
    assert unweighted.apply(raw).mean() > 5 * real_rate
    assert weighted.figures["weighted_fraud_rate"] == pytest.approx(real_rate, rel=0.15)


@pytest.mark.parametrize("frauds", [1, 3, 10, 30])
def test_few_frauds_do_not_blow_up(frauds):
    """Perfectly separated frauds: without Platt's prior the slope runs off to infinity (scores of 0
    and 1). With it the slope stays moderate (measured 2.2 to 3.4), the frauds average at most their
    smoothed target (F + 1) / (F + 2), and the scores add up to the frauds plus about one."""
    rng = np.random.default_rng(frauds)
    raw = np.r_[rng.uniform(0.9, 0.99, frauds), rng.uniform(0.01, 0.5, 5000)]
    y = np.r_[np.ones(frauds), np.zeros(5000)].astype(np.int64)
    cal = fit_platt(raw, y)
    served = cal.apply(raw)
    assert 1 < cal.slope < 5 and np.isfinite(cal.intercept)
    assert served[:frauds].mean() <= (frauds + 1) / (frauds + 2)
    assert 0 < served[frauds:].max() < 0.01
    assert frauds < served.sum() < frauds + 1


def test_thirty_frauds_calibrate_unseen_events_close_to_many_frauds():
    """What a held-out set of ~30 frauds gives: on 100,000 new events the calibrated scores' mean is
    within a quarter of the real rate, and the calibration error is a small share of the raw one."""
    raw, y = overconfident(103000, 0.01, seed=4)
    fit_on = slice(0, 3000)
    assert 20 <= y[fit_on].sum() <= 40
    cal = fit_platt(raw[fit_on], y[fit_on])
    served = cal.apply(raw[3000:])
    assert served.mean() == pytest.approx(y[3000:].mean(), rel=0.25)
    assert expected_calibration_error(y[3000:], served) < expected_calibration_error(y[3000:], raw[3000:]) / 50


def test_identity_is_the_default_and_round_trips_through_json():
    assert Calibration() == IDENTITY and IDENTITY.method == "identity" and IDENTITY.to_dict() == {"method": "identity"}
    p = np.array([0.0, 0.3, 1.0])
    assert IDENTITY.apply(p) is p
    assert Calibration.from_dict(orjson.loads(orjson.dumps(IDENTITY.to_dict()))) == IDENTITY


def test_a_fitted_calibration_round_trips_through_json_exactly():
    raw, y = overconfident(3000, 0.05, seed=5)
    cal = fit_platt(raw, y)
    again = Calibration.from_dict(orjson.loads(orjson.dumps(cal.to_dict())))
    assert again == cal and again.figures == cal.figures and again.method == "platt"
    assert np.array_equal(again.apply(raw), cal.apply(raw))


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([1, 2], "not an object"),
        ({"method": "isotonic"}, "'method'"),
        ({"method": "platt", "intercept": 0.0}, "'slope'"),
        ({"method": "platt", "slope": "2", "intercept": 0.0}, "'slope'"),
        ({"method": "platt", "slope": True, "intercept": 0.0}, "'slope'"),
        ({"method": "platt", "slope": -1.0, "intercept": 0.0}, "'slope'.*positive"),
        ({"method": "platt", "slope": 1.0, "intercept": 1e300}, "'intercept'"),
        ({"method": "platt", "slope": 1.0, "intercept": 0.0, "figures": []}, "'figures'"),
    ],
)
def test_a_malformed_calibration_is_refused_naming_the_field(doc, field):
    with pytest.raises(ValueError, match=field):
        Calibration.from_dict(doc)


def test_fitting_needs_both_classes():
    with pytest.raises(ValueError, match="0 frauds"):
        fit_platt(np.array([0.1, 0.2]), np.array([0, 0]))


def test_scores_that_rank_frauds_last_get_the_least_slope_and_keep_their_ranking():
    raw, y = overconfident(3000, 0.05, seed=6)
    cal = fit_platt(1 - raw, y)
    assert cal.slope == MIN_SLOPE and cal.figures["slope_at_minimum"] is True
    served = cal.apply(1 - raw)
    assert served.mean() == pytest.approx(y.mean(), rel=0.1) and served.std() < 0.002
    assert np.array_equal(np.argsort(served, kind="stable"), np.argsort(1 - raw, kind="stable"))
    assert fit_platt(raw, y).figures["slope_at_minimum"] is False


def test_calibration_error_is_weighted_over_bins_of_equal_weight():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.2, 0.2, 0.6, 0.6])
    # two bins: |0 - 0.2| and |1 - 0.6|, each half the weight
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.3)
    # the first two events weigh 3 each: the lower bin holds 6 of 8, the upper bin 2
    assert expected_calibration_error(y, p, np.array([3.0, 3.0, 1.0, 1.0]), bins=2) == pytest.approx((6 * 0.2 + 2 * 0.4) / 8)
    assert expected_calibration_error(y, y.astype(float)) == 0
