"""The built-in scenarios of `perennial evaluate --scenario`: seeded, the shape each one promises,
clean probes, and the contract the harness relies on."""

import numpy as np
import pytest

from perennial.evaluation import scenarios
from perennial.evaluation.data import PROBE_SHARE
from streams.simulator import DAY, EPOCH

SYNTHETIC = [n for n in scenarios.CATALOGUE if n != "default"]


@pytest.fixture(scope="module")
def built():
    return {name: scenarios.build(name, 0) for name in SYNTHETIC}


def arrays(s):
    return [s.history_x, s.history_y, s.x, s.y, s.time, s.label_time, s.pattern, s.period_edges,
            *(a for x, y in s.period_probes for a in (x, y)), *(a for x, y in s.pattern_probes.values() for a in (x, y))]


@pytest.mark.parametrize("name", SYNTHETIC)
def test_same_seed_same_arrays_other_seed_other_events(built, name):
    again = scenarios.build(name, 0)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(built[name]), arrays(again), strict=True))
    assert again.concept_spans == built[name].concept_spans and again.name == built[name].name
    assert not np.array_equal(scenarios.build(name, 1).x[:100], again.x[:100])


@pytest.mark.parametrize("name", SYNTHETIC)
def test_stream_contract(built, name):
    s = built[name]
    assert (np.diff(s.time) >= 0).all() and (s.label_time >= s.time).all()
    assert s.period_edges[0] <= s.time[0] and s.time[-1] < s.period_edges[-1] and (np.diff(s.period_edges) > 0).all()
    assert len(s.period_probes) == len(s.period_edges) - 1
    assert s.x.shape == (len(s.y), len(s.names)) and s.history_x.shape == (len(s.history_y), len(s.names))
    assert np.array_equal(s.y, (s.pattern > 0).astype(int)) and s.history_y.sum() >= 30
    assert set(np.unique(s.pattern[s.pattern > 0])) == set(range(1, len(s.pattern_names) + 1))
    held = sum(len(y) for _, y in s.period_probes)
    assert abs(held / (held + len(s.y)) - PROBE_SHARE) < 0.01
    assert s.concept_spans[0][0] == s.period_edges[0] and s.concept_spans[-1][1] == s.period_edges[-1]
    assert all(a[1] == b[0] for a, b in zip(s.concept_spans, s.concept_spans[1:]))
    for x, y in s.pattern_probes.values():
        assert len(x) == len(y) and 100 <= y.sum() < len(y)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_catalogue_sentence_states_the_fraud_rate(built, name):
    s = built[name]
    rate = s.y.mean()
    stated = {"rare": 0.0015, "bursts": 0.003 + 0.045 * 6 / 96, "recurrence": 0.05, "threshold": 0.05, "backlog": 0.002,
              "paced": 0.002, "delays": 0.005}[name]
    assert abs(rate - stated) < 0.25 * stated


def test_rare_has_a_handful_of_frauds_per_round_and_hundreds_in_all(built):
    s = built["rare"]
    frauds = s.y.sum() + sum(y.sum() for _, y in s.period_probes)
    assert 0.001 <= s.y.mean() <= 0.002 and frauds >= 200
    per_round = [int(s.y[i : i + 2048].sum()) for i in range(0, len(s.y) - 2047, 2048)]
    assert np.median(per_round) <= 6
    assert "new" in s.pattern_names and "new" not in s.history_patterns


def test_bursts_pattern_appears_for_a_few_thousand_events_at_10_to_20_times_the_base_rate(built):
    s = built["bursts"]
    code = s.pattern_names.index("card_testing") + 1
    hits = np.flatnonzero(s.pattern == code)
    window = slice(hits[0], hits[-1] + 1)
    assert 2000 <= window.stop - window.start <= 8000
    base = (s.pattern[: hits[0]] > 0).mean()
    assert 10 <= (s.pattern[window] == code).mean() / base <= 20
    assert not (s.pattern[hits[-1] + 1 :] == code).any() and "card_testing" not in s.history_patterns


def test_recurrence_flips_the_boundary_and_returns(built):
    s = built["recurrence"]
    assert [c for _, _, c in s.concept_spans] == ["concept_A", "concept_B", "concept_A"]
    a, b = (s.pattern_names.index(n) + 1 for n in ("concept_A", "concept_B"))
    for t0, t1, concept in s.concept_spans:
        live = (s.time >= t0) & (s.time < t1)
        frauds = set(np.unique(s.pattern[live & (s.pattern > 0)]))
        assert frauds == {a if concept == "concept_A" else b}
    # A's frauds sit where B's honest segment is: the same region, opposite labels
    xa, ya = s.pattern_probes["concept_A"]
    xb, yb = s.pattern_probes["concept_B"]
    centre = xa[ya == 1, :2].mean(0)
    near_a, near_b = (np.linalg.norm(x[:, :2] - centre, axis=1) < 1.0 for x in (xa, xb))
    assert near_b.sum() > 100 and ya[near_a].mean() > 0.8 and yb[near_b].mean() < 0.01


def test_concept_probes_are_fresh_draws_of_one_concept(built):
    s = built["recurrence"]
    stream_rows = {r.tobytes() for r in s.x}
    for x, y in s.pattern_probes.values():
        assert 0.04 < y.mean() < 0.06
        assert not any(r.tobytes() in stream_rows for r in x[:500])
    # A's probe negatives come from A only: none lies in A's fraud region (B's honest segment)
    xa, ya = s.pattern_probes["concept_A"]
    centre = xa[ya == 1, :2].mean(0)
    assert (np.linalg.norm(xa[ya == 0, :2] - centre, axis=1) < 1.0).mean() < 0.01


def test_threshold_moves_every_event_along_the_fraud_direction_keeping_the_rate(built):
    s = built["threshold"]
    (_, t1, before), (_, _, after) = s.concept_spans
    assert (before, after) == ("before_shift", "after_shift")
    early, late = s.time < t1, s.time >= t1
    assert abs(s.y[early].mean() - s.y[late].mean()) < 0.01
    move = s.x[late & (s.y == 0), :2].mean(0) - s.x[early & (s.y == 0), :2].mean(0)
    assert np.allclose(move, scenarios.THRESHOLD_SHIFT, atol=0.05)
    moved_frauds = s.x[late & (s.y == 1), :2].mean(0) - s.x[early & (s.y == 1), :2].mean(0)
    assert np.allclose(moved_frauds, move, atol=0.15)


def test_backlog_and_paced_share_the_events_and_differ_in_label_times(built):
    backlog, paced = built["backlog"], built["paced"]
    for a, b in ((backlog.x, paced.x), (backlog.y, paced.y), (backlog.time, paced.time)):
        assert np.array_equal(a, b)
    day_end = EPOCH + (np.floor((backlog.time - EPOCH) / DAY) + 1) * DAY
    assert np.array_equal(backlog.label_time, day_end) and len(np.unique(backlog.label_time)) == 4
    delay = paced.label_time - paced.time
    assert np.quantile(delay, 0.99) < 6 * 3600


def test_delays_have_a_long_tail(built):
    delay_days = (built["delays"].label_time - built["delays"].time) / DAY
    assert 0.75 < (delay_days < 2).mean() < 0.85
    assert 0.15 < (delay_days > 10).mean() < 0.25
    assert np.quantile(delay_days, 0.95) > 14


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: default, rare"):
        scenarios.build("nope", 0)


def test_table_probes_of_a_concept_column_hold_only_that_concepts_rows(tmp_path):
    """A column naming every row's concept (negatives included) gives probes of that concept's rows;
    a pattern column whose negatives name no fraud pattern keeps every negative in each probe."""
    import pandas as pd

    from perennial.evaluation.data import table_scenario

    rng = np.random.default_rng(0)
    n = 8000
    concept = np.where(np.arange(n) // 1000 % 2 == 0, "A", "B")
    kind = np.where(rng.random(n) < 0.1, concept, "legit")
    df = pd.DataFrame({"i": np.arange(n, dtype=float), "v": rng.normal(size=n), "concept": concept, "kind": kind,
                       "y": (kind != "legit").astype(int)})
    path = tmp_path / "concepts.csv"
    df.to_csv(path, index=False)
    common = {"label_column": "y", "time_column": None, "features": ["i", "v"], "history_fraction": 0.25}
    by_concept = table_scenario(path, pattern_column="concept", **common)
    by_kind = table_scenario(path, pattern_column="kind", **common)
    held = df.iloc[np.concatenate([x[:, 0] for x, _ in by_concept.period_probes]).astype(int)]
    assert len(held) + len(by_concept.y) == n - 2000
    for name in ("A", "B"):
        x, y = by_concept.pattern_probes[name]
        own = held[held["concept"] == name]
        assert sorted(x[:, 0]) == sorted(own["i"]) and y.sum() == own["y"].sum() > 0 and (y == 0).any()
        x, y = by_kind.pattern_probes[name]
        assert sorted(x[y == 0, 0]) == sorted(held.loc[held["kind"] == "legit", "i"])
        assert sorted(x[y == 1, 0]) == sorted(held.loc[held["kind"] == name, "i"])


def test_label_times_before_event_times_are_refused():
    from perennial.evaluation.data import Phase, concept_scenario

    with pytest.raises(ValueError, match="label times before event times"):
        concept_scenario(0, title="early labels", history=[Phase(scenarios.BEFORE_SHIFT, 1, 1000)],
                         stream=[Phase(scenarios.BEFORE_SHIFT, 1, 1000)], label_times=lambda t, rng: t - 1,
                         period_days=0.5, probes=scenarios.concept_probes(scenarios.BEFORE_SHIFT))
