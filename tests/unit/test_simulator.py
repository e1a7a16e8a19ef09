import numpy as np

from streams.simulator import DAY, EPOCH, FEATURES, PATTERNS, Simulator

SIM = Simulator(seed=3, customers=1500, terminals=500)


def counts(tx):
    return {p: int((tx.pattern == i + 1).sum()) for i, p in enumerate(PATTERNS)}


def test_seeded_and_chunks_regenerate_exactly():
    whole = SIM.generate(40, 6)
    again = Simulator(seed=3, customers=1500, terminals=500).generate(40, 6)
    assert np.array_equal(whole.features, again.features) and np.array_equal(whole.id, again.id)
    part = SIM.generate(43, 3)
    tail = whole.take(np.flatnonzero(whole.day >= 43))
    assert np.array_equal(part.id, tail.id) and np.allclose(part.features, tail.features)
    assert not np.array_equal(Simulator(seed=4, customers=1500, terminals=500).generate(40, 6).amount[:100], whole.amount[:100])


def test_schedule_is_respected():
    before = SIM.generate(30, 10)  # days 30-39: card testing has not started
    assert counts(before)["card_testing"] == 0 and counts(before)["card_compromise"] > 0
    gap = SIM.generate(58, 8)  # days 58-65: card compromise vanished (its last cards expired at 56)
    assert counts(gap)["card_compromise"] == 0 and counts(gap)["card_testing"] > 0
    recur = SIM.generate(68, 5)
    assert counts(recur)["card_compromise"] > 0


def test_fraud_rate_is_sane_and_ids_unique():
    tx = SIM.generate(0, 30)
    assert 0.002 < tx.label.mean() < 0.03
    assert len(np.unique(tx.id)) == len(tx)
    assert tx.features.shape == (len(tx), len(FEATURES)) and np.isfinite(tx.features).all()


def test_features_are_what_production_would_know():
    tx = SIM.generate(10, 5)
    col = {n: i for i, n in enumerate(FEATURES)}
    f = tx.features
    assert (f[:, col["card_nb_tx_1h"]] >= 1).all()  # the transaction itself
    assert (f[:, col["card_nb_tx_1d"]] >= f[:, col["card_nb_tx_1h"]]).all()
    assert (f[:, col["card_nb_tx_30d"]] >= f[:, col["card_nb_tx_7d"]]).all()
    assert ((f[:, col["terminal_risk_7d"]] >= 0) & (f[:, col["terminal_risk_7d"]] <= 1)).all()
    assert np.array_equal(f[:, col["is_night"]] == 1, (tx.time - EPOCH) % DAY < 6 * 3600)


def test_terminal_risk_only_sees_delayed_labels():
    from streams.simulator import _features

    # one terminal: a fraud at t=0, then legitimate transactions 12 h and 36 h later; labels take 1 day
    time = EPOCH + np.array([0, DAY // 2, DAY + DAY // 2])
    f = _features(time, np.array([1, 2, 3]), np.zeros(3, int), np.array([10.0, 10.0, 10.0]), np.array([1.0, 0.0, 0.0]), DAY)
    risk = f[:, FEATURES.index("terminal_risk_1d")]
    assert risk[0] == 0 and risk[1] == 0  # the fraud label is not known yet
    assert risk[2] == 0.5  # both earlier labels are known by now: one fraud out of two


def test_stream_is_in_label_order_and_loses_nothing():
    chunks = list(SIM.labeled_stream(45, chunk_days=2, end_day=51))
    ids = np.concatenate([c.id for c in chunks])
    assert len(np.unique(ids)) == len(ids) == len(SIM.generate(45, 6))
    for c in chunks:
        assert (np.diff(c.label_time) >= 0).all()


def test_pattern_sets_isolate_each_pattern():
    sets = SIM.pattern_sets(50, 3)
    assert set(sets) == set(PATTERNS)
    for x, y in sets.values():
        assert 0 < y.sum() < len(y) and x.shape[0] == len(y)
