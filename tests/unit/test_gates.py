import numpy as np

from learners.gates import GateThresholds, decide

rng = np.random.default_rng(0)
Y = (rng.random(400) < 0.2).astype(int)
GOOD = np.clip(Y * 0.6 + rng.random(400) * 0.5, 0, 1)  # separates well
WEAK = rng.random(400)  # random scores


def gate(cand_recent, cand_ret, inc_recent=WEAK, inc_ret=GOOD, latency=0.05, y=Y, **t):
    return decide(
        recent_y=y, candidate_recent=cand_recent, incumbent_recent=inc_recent,
        retention_y=Y, candidate_retention=cand_ret, incumbent_retention=inc_ret,
        candidate_latency_ms=latency, thresholds=GateThresholds(**t),
    )


def failed(decision):
    return {c.name for c in decision.checks if not c.passed}


def test_better_on_recent_and_keeping_retention_passes():
    d = gate(GOOD, GOOD)
    assert d.passed and failed(d) == set()
    assert d.metrics["candidate_recent_ap"] > d.metrics["incumbent_recent_ap"]
    assert len(d.reasons) == len(d.checks)  # a pass lists every check with its figures


def test_forgetting_fails_with_figures():
    d = gate(GOOD, WEAK)
    assert not d.passed and failed(d) == {"retention"}
    assert d.reasons[0].startswith("retention: candidate AP") and "max drop 0.02" in d.reasons[0]


def test_worse_on_recent_fails():
    d = gate(WEAK, GOOD, inc_recent=GOOD)
    assert failed(d) == {"recent"}


def test_non_finite_scores_fail():
    bad = GOOD.copy()
    bad[3] = np.nan
    d = gate(bad, GOOD)
    assert "finite" in failed(d)


def test_collapsed_scores_fail():
    d = gate(np.full(400, 0.3), np.full(400, 0.3))
    assert "score_spread" in failed(d)


def test_too_few_recent_frauds_is_no_evidence():
    y = np.zeros(400, int)
    y[:2] = 1
    d = gate(GOOD, GOOD, y=y)
    assert "evidence" in failed(d)


def test_slow_candidate_fails():
    assert failed(gate(GOOD, GOOD, latency=9.0)) == {"latency"}


def test_small_retention_drops_cannot_add_up_below_the_pretrained_version():
    """Each candidate within 0.02 of the served version, but the served one has already slid: the
    floor under the pretrained version's retention AP stops the ratchet."""
    from learners.quality import average_precision

    slid = np.clip(GOOD - 0.6 * Y * rng.random(400), 0, 1)  # a served version that lost some ground
    baseline = average_precision(Y, GOOD)
    assert baseline - average_precision(Y, slid) > 0.05
    kwargs = dict(recent_y=Y, candidate_recent=GOOD, incumbent_recent=WEAK, retention_y=Y, candidate_retention=slid,
                  incumbent_retention=slid, candidate_latency_ms=0.05)
    assert decide(**kwargs).passed  # against the served version alone, no drop at all
    d = decide(**kwargs, baseline_retention_ap=baseline)
    assert not d.passed and failed(d) == {"retention"} and "pretrained version" in d.reasons[0]
    assert decide(**{**kwargs, "candidate_retention": GOOD}, baseline_retention_ap=baseline).passed
