"""The contradiction guard's test alone: what it flags, what it learns as usual, and what small counts
can never do."""

from __future__ import annotations

import numpy as np
import pytest

from learners.contradiction import ContradictionGuard

USUAL = (1000.0, 100.0)  # about 10% of the events the model calls fraud are usually labeled legitimate


def guard(**kw) -> ContradictionGuard:
    return ContradictionGuard(**{"score": 0.5, "alpha": 1e-6, "odds_ratio": 3.0, "usual": USUAL, **kw})


def round_of(called_fraud: int, contradicted: int, others: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels: ``called_fraud`` events scored 0.95, ``contradicted`` of them labeled legitimate."""
    scores = np.r_[np.full(called_fraud, 0.95), np.full(others, 0.02)]
    labels = np.r_[np.zeros(contradicted), np.ones(called_fraud - contradicted), np.zeros(others)]
    return scores, labels


def test_a_usual_round_is_not_flagged_and_joins_the_usual_rate():
    g = guard()
    found = g.check(*round_of(60, 9))
    assert not found.flagged and found.called_fraud == 60 and found.contradicted == 9
    assert g.usual == (pytest.approx(1000.0), pytest.approx(109 * 1000 / 1060))  # scaled back to a memory of 1,000 events


def test_a_round_of_relabeled_frauds_the_model_calls_fraud_is_flagged_and_leaves_the_usual_rate_alone():
    g = guard()
    found = g.check(*round_of(160, 110))
    assert found.flagged and found.p_value < 1e-20
    assert int(found.suspects.sum()) == 110 and not found.suspects[160:].any()  # only the contradicting events
    assert g.usual == USUAL


def test_frauds_the_model_scores_low_are_never_contradictions():
    """A burst of a new pattern: labeled fraud, scored low. Nothing to contradict."""
    scores = np.r_[np.full(50, 0.95), np.full(500, 0.01), np.full(1500, 0.02)]
    labels = np.r_[np.ones(45), np.zeros(5), np.ones(500), np.zeros(1500)]
    found = guard().check(scores, labels)
    assert not found.flagged and found.contradicted == 5


def test_small_counts_cannot_flag():
    """Without any usual rate (a registry pretrained at another score), even 4 contradictions out of
    4 events called fraud are not implausible enough; nor is a round with none called fraud."""
    blank = guard(usual=(0.0, 0.0))
    assert blank.usual_rate == 0.5
    assert not blank.check(*round_of(4, 4)).flagged
    assert not guard().check(*round_of(0, 0)).flagged
    assert guard().check(*round_of(0, 0)).rate is None


def test_a_large_round_with_a_modestly_higher_rate_is_not_flagged():
    """A backlog round of 30,000 events the model calls fraud, at twice the usual rate: a genuine
    change the margin absorbs, although a test without the margin would call it certain."""
    found = guard().check(*round_of(30_000, 6_000))
    assert not found.flagged and found.tested_rate > 0.2
    assert guard(odds_ratio=1.0).check(*round_of(30_000, 6_000)).flagged


def test_a_slow_genuine_change_moves_the_usual_rate_so_it_is_never_flagged():
    g = guard()
    for step in range(60):  # the usual 10% creeps up to 60% over 60 rounds
        rate = 0.10 + 0.50 * step / 59
        assert not g.check(*round_of(80, round(80 * rate))).flagged, step
    assert 0.45 < g.usual_rate < 0.6
    assert guard().check(*round_of(80, 48)).flagged  # the same last round, against the old usual rate


def test_not_enforced_a_round_is_counted_never_flagged_and_leaves_the_usual_rate():
    guard = ContradictionGuard(0.5, 1e-6, 3.0, usual=(1000.0, 50.0))
    scores, y = np.r_[np.full(200, 0.9), np.full(800, 0.1)], np.zeros(1000, int)  # 200 called fraud, all labeled legitimate
    found = guard.check(scores, y, enforce=False)
    assert not found.flagged and found.contradicted == 200 and found.p_value < 1e-6
    assert guard.usual == (1000.0, 50.0)
    assert guard.check(scores, y).flagged
