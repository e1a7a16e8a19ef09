"""Labels that come later, joined to what was served, on the real broker: a running server logs what
it scored; a plain Kafka client sends labels by id later (a chargeback feed); the learner's join sends
each joined event with the features as scored to the labeled-event topic and trains on them;
unlabeled predictions mature into negatives; labels for unknown ids are parked and counted; malformed
labels are dead-lettered; and a learner killed with SIGKILL mid-join loses nothing."""

from __future__ import annotations

import random
import signal
import time

import numpy as np
import orjson
import pytest

from learners.checkpoint import load_checkpoint
from learners.join import CORRECTION_SUFFIX
from perennial.client import Client
from streams.simulator import FEATURES

from .conftest import SIM, Stack, producer, read_to_end, wait_for
from .test_crash import _pending

pytestmark = pytest.mark.integration

DAY = 86400.0


def enable_join(stack: Stack, maturity_days: float = 2.0) -> None:
    stack.env.update({
        "PERENNIAL_SERVE__PREDICTION_LOG": "true",
        "PERENNIAL_JOIN__ENABLED": "true",
        "PERENNIAL_JOIN__MATURITY_S": str(maturity_days * DAY),
        "PERENNIAL_JOIN__CORRECTION_WINDOW_S": str(30 * DAY),
    })


def score_over_http(stack: Stack, n: int, days: float) -> tuple[list[dict], np.ndarray]:
    """``n`` simulated transactions scored by the server (batches of 100), their event times spread
    over ``days``; the events as sent and their true labels."""
    tx = SIM.generate(31, int(np.ceil(days)) + 1)
    take = np.linspace(0, len(tx.id) - 1, n).astype(int)
    start = float(tx.time[take[0]])
    events = [{"id": f"tx-{k}", "time": start + days * DAY * k / n, "features": dict(zip(FEATURES, map(float, tx.features[i])))}
              for k, i in enumerate(take)]
    with Client(stack.url) as client:
        for b in range(0, n, 100):
            assert [p.id for p in client.predict_many(events[b : b + 100])] == [e["id"] for e in events[b : b + 100]]
    return events, (tx.pattern[take] > 0).astype(int)


def joined_events(stack: Stack) -> dict[str, dict]:
    return {doc["id"]: doc for doc in (orjson.loads(r.value) for r in read_to_end(stack.bootstrap, stack.topic))}


def learner_count(stack: Stack, name: str) -> float:
    return max(0.0, stack.learner_metric(name))


def test_late_labels_join_what_was_served_and_the_rest_matures(stack):
    enable_join(stack)
    stack.start("serve")
    stack.start("learn")
    stack.wait_ready()
    events, truth = score_over_http(stack, 2000, days=6.0)  # event times over 6 days; maturity 2 days
    wait_for(lambda: learner_count(stack, "perennial_join_predictions_total{outcome=\"logged\"}") == 2000, 60, "2000 predictions logged")

    # Labels later, by id, from a plain client: every fraud (a chargeback), some legitimate events (an
    # analyst), ids nobody scored, and records that are not labels.
    frauds = [e["id"] for e, y in zip(events, truth) if y == 1]
    cleared = [e["id"] for e, y in zip(events, truth) if y == 0][-50:]  # the last: not yet matured
    labels = [orjson.dumps({"id": i, "label": 1, "source": "chargeback"}) for i in frauds]
    labels += [orjson.dumps({"id": i, "label": False, "source": "analyst", "time": "2026-01-01T00:00:00Z"}) for i in cleared]
    labels += [orjson.dumps({"id": f"unknown-{k}", "label": 1}) for k in range(7)]
    malformed = [b"{not json", orjson.dumps({"id": "tx-1", "label": 3}), orjson.dumps({"label": 1}), orjson.dumps([1])]
    p = producer(stack.bootstrap, f"{stack.topic}.labels")
    for value in labels + malformed:
        p.send(f"{stack.topic}.labels", value=value)
    p.flush()
    p.close()

    # Everything older than 2 days before the last event time had matured before the labels came:
    # its frauds are corrections (<id>#late, labeled 1); the younger frauds and the cleared ones join.
    last = events[-1]["time"]
    old = {e["id"] for e in events if e["time"] < last - 2 * DAY}
    assert not old & set(cleared)
    expected = {**{i: 0 for i in old}, **{i: 1 for i in frauds if i not in old}, **{i: 0 for i in cleared},
                **{i + CORRECTION_SUFFIX: 1 for i in frauds if i in old}}
    assert 0 < sum(i in old for i in frauds) < len(frauds)
    wait_for(lambda: learner_count(stack, "perennial_join_events_sent_total") >= len(expected), 60, f"{len(expected)} joined events sent")
    got = joined_events(stack)
    assert {i: d["label"] for i, d in got.items()} == expected
    by_id = {e["id"]: e for e in events}
    for event_id, doc in got.items():
        sent = by_id[event_id.removesuffix(CORRECTION_SUFFIX)]
        # the features as scored: the float32 values of what the client sent, never recomputed
        assert np.array_equal(np.float32([doc["features"][n] for n in FEATURES]), np.float32([sent["features"][n] for n in FEATURES]))
        assert doc["time"] == sent["time"]
    matured = len(old)
    assert learner_count(stack, "perennial_join_matured_total") == matured
    assert learner_count(stack, 'perennial_join_labels_total{outcome="parked",source="unknown"}') == 7
    assert learner_count(stack, "perennial_join_parked_labels") == 7
    assert learner_count(stack, "perennial_join_pending_predictions") == 2000 - len(old) - len((set(frauds) | set(cleared)) - old)
    dlq = [r for r in read_to_end(stack.bootstrap, f"{stack.topic}.dlq") if dict(r.headers)["perennial.source"].startswith(f"{stack.topic}.labels".encode())]
    assert sorted(dict(r.headers)["perennial.reason"] for r in dlq) == [b"bad_id", b"bad_label", b"not_json", b"not_object"]

    # The learner reads the joined events like any labeled events, and learns from them.
    wait_for(lambda: learner_count(stack, "perennial_learner_events_consumed_total") == len(expected), 60, "the learner reads every joined event")
    wait_for(lambda: learner_count(stack, "perennial_learner_events_trained_total") > 0, 60, "a round trained on joined events")


def test_a_learner_killed_mid_join_loses_no_label_and_trains_none_twice(stack):
    enable_join(stack, maturity_days=1.0)
    stack.start("serve")
    stack.start("learn")
    stack.wait_ready()
    events, _ = score_over_http(stack, 3000, days=4.0)
    rng = random.Random(3)
    labeled = rng.sample([e["id"] for e in events], 600)
    labels = {event_id: int(k % 5 == 0) for k, event_id in enumerate(labeled)}
    p = producer(stack.bootstrap, f"{stack.topic}.labels")
    for kill in range(4):
        for event_id in labeled[kill * 150 : (kill + 1) * 150]:
            p.send(f"{stack.topic}.labels", value=orjson.dumps({"id": event_id, "label": labels[event_id]}))
        p.flush()
        # this incarnation's join is connected and at work: kill it mid-read, mid-step or mid-send
        wait_for(lambda: stack.learner_metric("perennial_join_broker_up") == 1, 60, "the join connected")
        time.sleep(rng.uniform(0.0, 0.6))
        stack.stop("learn", signal.SIGKILL)
        stack.start("learn")
    p.close()

    last = events[-1]["time"]
    # Old predictions matured as they were read; a fraud label for one came as a correction
    # (<id>#late), or joined it directly when read in the same step, before the maturity sweep.
    expected = set(labels) | {e["id"] for e in events if e["time"] < last - DAY}

    def outcome() -> dict[str, int]:
        got = joined_events(stack)
        return {i: int(got[i]["label"] == 1 or i + CORRECTION_SUFFIX in got) for i in got if not i.endswith(CORRECTION_SUFFIX)}

    wait_for(lambda: set(outcome()) >= expected and sum(outcome().values()) >= sum(labels.values()), 120,
             f"{len(expected)} joined events after 4 kills")
    records = read_to_end(stack.bootstrap, stack.topic)
    assert outcome() == {i: labels.get(i, 0) for i in expected}  # nothing lost, nothing invented
    unique = {orjson.loads(r.value)["id"] for r in records}
    # An event the broker had before a kill may be sent again (at least once): the learner trains it
    # once and dead-letters the repeat as a duplicate id.
    wait_for(lambda: _consumed(stack) == len(records), 120, f"the learner to read all {len(records)} records")
    assert stack.stop("learn") == 0
    a = load_checkpoint(stack.checkpoint)[1]["accounting"]
    assert a["trained"] + a["held_out"] + a["quarantined"] + _pending(stack) == len(unique), a
    assert a["dead_lettered"].get("duplicate_id", 0) == len(records) - len(unique), a


def _consumed(stack: Stack) -> float:
    return stack.learner_metric("perennial_learner_events_consumed_total")
