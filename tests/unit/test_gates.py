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
