"""The join's state on a real SQLite file: each rule of joining, maturing, correcting and parking,
and a step that fails leaving nothing half done."""

from __future__ import annotations

import orjson
import pytest

from learners.join import CORRECTION_SUFFIX, JoinState
from perennial.settings import JoinSettings
from streams.predictions import Label, Prediction

DAY = 86400.0
NAMES = ("amount", "hour")


def state(tmp_path, **settings) -> JoinState:
    return JoinState(JoinSettings(**{"maturity_s": 30 * DAY, "correction_window_s": 60 * DAY, "orphan_keep_s": 7 * DAY, **settings}),
                     NAMES, tmp_path / "join.sqlite")


def p(event_id: str, day: float, amount: float = 1.5) -> Prediction:
    return Prediction(event_id, day * DAY, (amount, 0.25), 0.1, "v1")


def lab(event_id: str, label: int, source: str = "chargeback") -> Label:
    return Label(event_id, label, None, source)


def sent(s: JoinState) -> list[tuple[str, int, float]]:
    out = [orjson.loads(value) for _, value in s.outbox()]
    if out:
        s.sent(s.outbox()[-1][0])
    return [(e["id"], e["label"], e["features"]["amount"]) for e in out]


def test_a_label_joins_its_prediction_with_the_features_as_scored(tmp_path):
    s = state(tmp_path)
    s.step([p("a", 0, amount=0.1), p("b", 0)], [], {("t.predictions", 0): 2})
    step = s.step([], [lab("a", 1, "analyst")], {("t.labels", 0): 1})
    assert sent(s) == [("a", 1, pytest.approx(0.1))]  # float32 as scored: 0.1 becomes 0.10000000149
    assert step.labels == {("analyst", "joined"): 1} and s.pending == 1
    assert s.offsets() == {("t.predictions", 0): 2, ("t.labels", 0): 1}


def test_unlabeled_predictions_mature_into_negatives_and_a_late_fraud_corrects_them(tmp_path):
    s = state(tmp_path)
    s.step([p("old", 0), p("young", 20)], [], {})
    assert sent(s) == [] and s.pending == 2
    step = s.step([p("now", 31)], [], {})  # the clock is the latest event time: day 31
    assert sent(s) == [("old", 0, 1.5)] and step.matured == 1 and s.pending == 2
    step = s.step([], [lab("old", 1), lab("young", 0, "analyst"), lab("young", 0, "analyst")], {})
    assert sent(s) == [("old" + CORRECTION_SUFFIX, 1, 1.5), ("young", 0, 1.5)]
    assert step.labels == {("chargeback", "correction"): 1, ("analyst", "joined"): 1, ("analyst", "duplicate"): 1}
    step = s.step([], [lab("old", 0), lab("young", 1)], {})  # legitimate after fraud: not applied; fraud after legitimate: corrected
    assert sent(s) == [("young" + CORRECTION_SUFFIX, 1, 1.5)] and step.labels == {("chargeback", "conflict"): 1, ("chargeback", "correction"): 1}


def test_an_event_time_far_ahead_of_the_wall_clock_matures_nothing(tmp_path):
    """One client with a wrong clock (a time in 2100) must not mature every pending prediction."""
    s = state(tmp_path)
    s.step([p("old", 0), p("young", 20)], [], {})
    step = s.step([Prediction("wrong-clock", 4.1e9, (1.0, 0.0), 0.1, "v1")], [], {})
    assert step.predictions == {"future_time": 1} and step.matured == 0 and sent(s) == [] and s.pending == 3
    s.step([p("now", 31)], [], {})  # a right clock still moves it
    assert sent(s) == [("old", 0, 1.5)]
    assert JoinState(s.settings, NAMES, s.path).clock == 31 * DAY  # and the saved clock is the right one


def test_an_explicit_label_inside_the_window_wins_over_maturity(tmp_path):
    s = state(tmp_path)
    s.step([p("a", 0)], [lab("a", 1)], {})
    s.step([p("later", 45)], [], {})
    assert sent(s) == [("a", 1, 1.5)]  # never matured into a negative


def test_settled_predictions_are_forgotten_after_the_correction_window(tmp_path):
    s = state(tmp_path)
    s.step([p("a", 0)], [], {})
    s.step([p("b", 89)], [], {})  # day 89: matured at 30, kept for corrections until 90
    sent(s)
    s.step([], [lab("a", 1)], {})
    assert sent(s) == [("a" + CORRECTION_SUFFIX, 1, 1.5)]
    s.step([p("c", 91)], [], {})
    step = s.step([], [lab("b", 1), lab("zz", 1)], {})
    assert step.labels == {("chargeback", "joined"): 1, ("chargeback", "parked"): 1}  # b pending still; zz unknown
    s.step([], [lab("a", 1)], {})  # forgotten: parked as an orphan, not applied
    assert s.parked == 2


def test_orphan_labels_are_parked_joined_when_their_prediction_comes_and_expire_otherwise(tmp_path):
    s = state(tmp_path)
    step = s.step([], [lab("early", 1), lab("never", 1), lab("never", 0)], {})  # before any prediction: no clock yet
    assert step.labels == {("chargeback", "parked"): 2, ("chargeback", "conflict"): 1} and s.parked == 2
    step = s.step([p("early", 100)], [], {})
    assert sent(s) == [("early", 1, 1.5)] and step.orphans == {"joined": 1} and s.parked == 1 and s.pending == 0
    s.step([p("x", 106)], [], {})
    assert s.parked == 1  # parked at day 100 (the first clock), kept 7 days
    step = s.step([p("y", 108)], [], {})
    assert step.orphans == {"expired": 1} and s.parked == 0


def test_parked_labels_beyond_the_limit_expire_oldest_first(tmp_path):
    s = state(tmp_path, max_orphans=3)
    s.step([p("x", 0)], [lab(f"o{i}", 1) for i in range(5)], {})
    assert s.parked == 3


def test_a_duplicate_prediction_keeps_the_first_scoring(tmp_path):
    s = state(tmp_path)
    step = s.step([p("a", 0, amount=1.0), p("a", 0, amount=2.0)], [lab("a", 1)], {})
    assert step.predictions == {"logged": 1, "duplicate": 1} and sent(s) == [("a", 1, 1.0)]


def test_a_failed_step_changes_nothing_and_the_state_survives_a_reopen(tmp_path):
    s = state(tmp_path)
    s.step([p("a", 0)], [], {("t.predictions", 0): 1})
    with pytest.raises(TypeError):
        s.step([p("b", 1), Prediction("c", "not a time", (1.0, 2.0), None, None)], [lab("a", 1)], {("t.predictions", 0): 3})
    assert s.offsets() == {("t.predictions", 0): 1} and s.outbox() == [] and s.pending == 1
    s.close()
    again = state(tmp_path)
    assert again.pending == 1 and again.offsets() == {("t.predictions", 0): 1} and again.clock == 0.0
    again.step([], [lab("a", 0)], {})
    assert sent(again) == [("a", 0, 1.5)]


def test_the_join_retries_with_backoff_and_a_new_outage_starts_from_the_short_wait(tmp_path, monkeypatch):
    """Failures in a row wait longer and longer; once it has connected, the next outage starts again
    from the first wait (not from where the last outage left off)."""
    import threading

    from prometheus_client import CollectorRegistry

    from learners.joiner import Joiner
    from perennial.settings import Settings

    settings = Settings(join={"path": tmp_path / "join.sqlite"},
                        learn={"broker_retry_initial_s": 1.0, "broker_retry_max_s": 64.0, "checkpoint_path": tmp_path / "ckpt"})
    joiner = Joiner(settings, NAMES, CollectorRegistry())
    stop = threading.Event()
    script = iter(["fail", "fail", "fail", "connect", "fail", "fail", "stop"])
    waits: list[float] = []

    def attempt(_stop):
        step = next(script)
        if step == "stop":
            return
        if step == "connect":
            joiner.connected = True  # what _run_connected sets once assigned
        raise OSError("broker unreachable")

    monkeypatch.setattr(joiner, "_run_connected", attempt)
    monkeypatch.setattr(stop, "wait", lambda delay: waits.append(delay))
    joiner.run(stop)
    # each drawn between half and all of 1, 2, 4 s; after the connection 1, 2 s again
    assert [0.5 <= w / c <= 1.0 for w, c in zip(waits, (1, 2, 4, 1, 2, 4))] == [True] * 6 and len(waits) == 6


def test_raw_vectors_of_a_declared_schema_come_back_to_the_learner_as_the_server_scored_them(tmp_path):
    """Server rows -> prediction log -> join -> joined event -> the learner's parse_event: the same raw
    vector (a missing optional number, a missing category, one scored as other, the vocabulary's codes)."""
    import numpy as np

    from streams.events import parse_event
    from streams.predictions import encode_batch, parse_predictions
    from tests.unit.conftest import DECLARED

    features = DECLARED.features
    rows = np.float32([[3.0, np.nan, 3, 2], [0.5, 4.25, 0, 3], [1.0, 2.0, 1, 0]])
    s = JoinState(JoinSettings(maturity_s=30 * DAY), features, tmp_path / "join.sqlite")
    logged = parse_predictions(encode_batch(["a", "b", "c"], [DAY] * 3, rows, np.full(3, 0.5), "v1", features), features)
    s.step(logged, [lab("a", 1), lab("b", 0), lab("c", 1)], {("t.predictions", 0): 1})
    events = [orjson.loads(value) for _, value in s.outbox()]
    assert events[0]["features"] == {"amount": 3.0, "device_age": None, "country": "GB", "channel": "web"}
    learned = [parse_event(value, features) for _, value in s.outbox()]
    assert [e.id for e in learned] == ["a", "b", "c"] and [e.label for e in learned] == [1, 0, 1]
    np.testing.assert_array_equal(np.float32([e.features for e in learned]), rows)
