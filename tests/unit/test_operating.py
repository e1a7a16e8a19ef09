import numpy as np
import pytest

from learners.operating import AlertRate, alert_rate, negative_flip_rate, relative_change, threshold_for_alert_rate


def test_the_threshold_for_a_rate_alerts_on_that_share_of_events():
    scores = np.random.default_rng(0).random(10000)
    t = threshold_for_alert_rate(scores, 0.005)
    assert alert_rate(scores, t) == AlertRate(rate=0.005, alerts=50, events=10000)


def test_tied_scores_alert_together_and_the_rate_is_never_exceeded():
    scores = np.r_[np.full(3, 0.9), np.full(4, 0.5), np.zeros(93)]
    assert threshold_for_alert_rate(scores, 0.05) == 0.9  # the four at 0.5 would make 7%
    assert alert_rate(scores, 0.9).alerts == 3
    assert threshold_for_alert_rate(scores, 0.07) == 0.5
    above = threshold_for_alert_rate(scores, 0.02)  # even the top tie is 3%
    assert above > 0.9 and alert_rate(scores, above).alerts == 0


def test_weights_give_the_alert_rate_at_the_real_fraud_rate():
    """Every fraud and one negative in twenty, weighted twenty: the threshold for 0.5% alerts and the
    rate at it are the full population's, where unweighted the sample would alert on far more."""
    rng = np.random.default_rng(1)
    y = (rng.random(400000) < 0.002).astype(np.int64)
    scores = rng.beta(1, 30, len(y)) + 0.3 * y * rng.random(len(y))
    kept = (y == 1) | (rng.random(len(y)) < 1 / 20)
    w = np.where(y[kept] == 1, 1.0, 20.0)
    t_population = threshold_for_alert_rate(scores, 0.005)
    t_sample = threshold_for_alert_rate(scores[kept], 0.005, w)
    assert alert_rate(scores, t_sample).rate == pytest.approx(0.005, rel=0.1)
    assert alert_rate(scores[kept], t_population, w).rate == pytest.approx(0.005, rel=0.1)
    assert alert_rate(scores[kept], t_population).rate > 0.02
    counted = alert_rate(scores[kept], t_population, w)
    assert counted.events == kept.sum() and counted.alerts == (scores[kept] >= t_population).sum()


def test_negative_flip_rate_counts_the_incumbents_alerted_frauds_the_candidate_drops():
    y = np.array([1, 1, 1, 1, 0, 0])
    incumbent = np.array([0.9, 0.8, 0.7, 0.1, 0.9, 0.1])
    candidate = np.array([0.9, 0.2, 0.1, 0.95, 0.1, 0.9])
    flips = negative_flip_rate(y, incumbent, candidate, 0.5)
    # the incumbent alerts on three frauds; the candidate drops two of them (its new catch and its
    # legitimate alerts do not count)
    assert (flips.rate, flips.flipped, flips.alerted_frauds, flips.gained) == (pytest.approx(2 / 3), 2, 3, 1)
    assert negative_flip_rate(y, candidate, candidate, 0.5).rate == 0
    none = negative_flip_rate(y, np.zeros(6), candidate, 0.5)
    assert none.rate is None and none.alerted_frauds == 0


def test_relative_change_of_the_alert_volume():
    base = AlertRate(0.005, 40, 8000)
    assert relative_change(base, AlertRate(0.004, 32, 8000)) == pytest.approx(-0.2)
    assert relative_change(AlertRate(0.0, 0, 8000), base) is None


@pytest.mark.parametrize("rate", [0, 1, -0.1, 1.5])
def test_an_alert_rate_outside_zero_and_one_is_refused(rate):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        threshold_for_alert_rate(np.array([0.1, 0.2]), rate)


def test_odd_inputs_are_refused_naming_the_problem():
    with pytest.raises(ValueError, match="one length"):
        alert_rate(np.array([0.1, 0.2]), 0.5, np.array([1.0]))
    with pytest.raises(ValueError, match="finite"):
        alert_rate(np.array([np.nan]), 0.5)
    with pytest.raises(ValueError, match="no scores"):
        threshold_for_alert_rate(np.array([]), 0.1)
    with pytest.raises(ValueError, match="differ in shape"):
        negative_flip_rate(np.array([1]), np.array([0.5, 0.1]), np.array([0.5, 0.1]), 0.5)


def test_the_operating_point_is_exported_with_its_counts():
    from prometheus_client import generate_latest

    from learners.metrics import LearnerMetrics

    metrics = LearnerMetrics()
    text = generate_latest(metrics.registry).decode()
    assert 'perennial_learner_alert_rate{model="candidate"} NaN' in text and "perennial_learner_negative_flip_rate NaN" in text
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    incumbent = np.array([0.9, 0.8, 0.1, 0.7, 0.1, 0.1, 0.1, 0.1])
    candidate = np.array([0.9, 0.2, 0.6, 0.7, 0.6, 0.1, 0.1, 0.1])
    metrics.observe_operating_point(0.5, alert_rate(incumbent, 0.5), alert_rate(candidate, 0.5), negative_flip_rate(y, incumbent, candidate, 0.5))
    text = generate_latest(metrics.registry).decode()
    for line in (
        'perennial_learner_alert_rate{model="incumbent"} 0.375', 'perennial_learner_alert_rate{model="candidate"} 0.5',
        'perennial_learner_alerts{model="candidate"} 4.0', "perennial_learner_negative_flip_rate 0.5",
        "perennial_learner_negative_flip_base_frauds 2.0", "perennial_learner_operating_threshold 0.5",
    ):
        assert line in text.splitlines(), line
