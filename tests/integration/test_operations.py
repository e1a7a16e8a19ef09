"""Operators on the real stack, through perennial.client: roll back (to the parent, then to a named
version), pause and resume learning, release quarantined labels, confirm a concept change; the
learner applies the commands (it alone writes the registry), records them, and keeps them across a
restart."""

from __future__ import annotations

import dataclasses
import signal
import time

import numpy as np
import pytest

from learners.registry import Registry
from perennial.client import Client, PerennialError
from streams.simulate import encode_rows

from .conftest import ADMIN_TOKEN, SIM, produce_stream, producer, wait_for

pytestmark = pytest.mark.integration


def produce_flood(stack, day: int, events: int = 1024, seed: int = 0) -> int:
    """``events`` transactions of ``day`` with 30% of them claimed as fraud at random: a label flood
    the label-rate guard quarantines (random labels cannot be learned, so it is not released by
    itself). Returns how many were sent."""
    tx = SIM.generate(day, 1).take(np.arange(events))
    # labels at random only: keeping the day's real frauds (a pattern the served version may not know
    # yet) made the flood learnable, so the quarantine released it by itself in some runs
    fake = (np.random.default_rng(seed).random(events) < 0.3).astype(np.int8)
    p = producer(stack.bootstrap, stack.topic)
    for key, value in encode_rows(dataclasses.replace(tx, pattern=fake)):
        p.send(stack.topic, key=key, value=value)
    p.flush(30)
    p.close()
    return events


def test_operator_commands_through_the_client(stack):
    stack.env["PERENNIAL_SERVE__REGISTRY_POLL_S"] = "60"  # swaps within seconds can only come from announcements
    # this test is about the commands, not the gates: candidates are served on thinner evidence
    stack.env.update({"PERENNIAL_LEARN__GATES__CONFIDENCE": "0.6", "PERENNIAL_LEARN__GATES__MIN_RECENT_POSITIVES": "10"})
    stack.start("serve")
    stack.start("learn")
    stack.wait_ready()
    anonymous, admin = Client(stack.url), Client(stack.url, token=ADMIN_TOKEN)
    served = lambda: anonymous.model()["version"]
    metric = stack.learner_metric
    reg = Registry(stack.registry)
    produced = produce_stream(stack.bootstrap, stack.topic, 45, 48)
    consumed = lambda: metric("perennial_learner_events_consumed_total")
    wait_for(lambda: consumed() >= len(produced), 120, "learner to consume")
    wait_for(lambda: len(reg.versions()) >= 2, 60, "a published version")  # a candidate is judged on the events after it
    # the learner is idle (its last, time-triggered round done), so nothing is published under the rollback
    wait_for(stack.learner_idle, 30, "learner idle")
    wait_for(lambda: served() == reg.current_version(), 10, "announcement-driven swap")
    current = reg.current_version()
    parent = reg.manifest(current)["parent"]
    assert parent is not None and parent != current

    # -- a successful rollback: to the served version's parent, then forward again to a named version
    with pytest.raises(PerennialError) as refused:
        anonymous.rollback()
    assert refused.value.status == 401
    assert admin.rollback(reason="incident 7")["command"]["version"] == parent
    wait_for(lambda: served() == parent, 10, "server to serve the parent")
    assert admin.model()["version"] == parent
    entry = reg.history()[-1]
    assert (entry["from"], entry["to"], entry["trigger"], entry["reason"]) == (current, parent, "manual", "incident 7")
    wait_for(lambda: metric("perennial_learner_paused") == 1, 10, "learner paused by the rollback")
    with pytest.raises(PerennialError) as refused:
        admin.rollback(parent)
    assert refused.value.status == 409 and "already served" in refused.value.message
    with pytest.raises(PerennialError) as refused:
        admin.rollback("v999999")
    assert refused.value.status == 404
    assert admin.rollback(current, reason="false alarm")["command"]["version"] == current
    wait_for(lambda: served() == current, 10, "server to serve the named version again")
    entry = reg.history()[-1]
    assert (entry["from"], entry["to"], entry["trigger"], entry["reason"]) == (parent, current, "manual", "false alarm")
    assert metric('perennial_learner_rollbacks_total{trigger="manual"}') == 2

    before = consumed()
    more = produce_stream(stack.bootstrap, stack.topic, 48, 49)
    time.sleep(4)
    assert consumed() == before, "a paused learner must not consume"

    assert stack.stop("learn") == 0  # paused survives a restart
    stack.start("learn")
    wait_for(lambda: metric("perennial_learner_paused") == 1, 60, "restarted learner still paused")
    time.sleep(3)
    assert consumed() == 0  # counters are per process: nothing read since the restart

    assert admin.resume()["command"]["action"] == "resume"
    wait_for(lambda: consumed() >= len(more), 90, "resumed learner to consume the rest")
    assert metric("perennial_learner_paused") == 0
    assert reg.current_version() != current or served() == reg.current_version()
    # a remainder under round_min_events (64) waits for more events
    idle = lambda: stack.learner_idle(below=64)
    wait_for(idle, 60, "learner idle after the rest")

    # -- release-quarantine: a label flood is kept aside; the operator's release sends it to training
    kept = lambda: metric("perennial_learner_quarantine_kept_events")
    released = lambda trigger: metric(f'perennial_learner_quarantine_released_events_total{{trigger="{trigger}"}}')
    label_rate = lambda: metric('perennial_learner_events_quarantined_total{reason="label_rate"}')
    learn_log = lambda: stack.log("learn")[-4000:]
    sent = consumed() + produce_flood(stack, 50, seed=1)
    wait_for(lambda: consumed() >= sent and idle(), 120, "the first flood read", detail=learn_log)
    flood = kept()
    assert flood > 0 and label_rate() == flood, stack.log("learn")[-3000:]
    rounds = metric("perennial_learner_rounds_total")
    assert admin.release_quarantine("checked: a card-testing burst")["command"]["action"] == "release_quarantine"
    wait_for(lambda: kept() == 0, 10, "the learner to release the kept events")
    assert released("operator") == flood and released("concept_change") == 0
    wait_for(lambda: metric("perennial_learner_rounds_total") > rounds and idle(), 30, "a round on the released events")

    # -- concept-change: what is kept is released, and for its rounds a flood is no longer quarantined
    sent = consumed() + produce_flood(stack, 51, seed=2)
    wait_for(lambda: consumed() >= sent and idle() and kept() > 0, 120, "the second flood read and kept", detail=learn_log)
    flood, quarantined = kept(), label_rate()
    assert metric("perennial_learner_concept_change_rounds") == 0
    assert admin.concept_change(rounds=10, reason="card testing is the new normal")["command"]["rounds"] == 10
    wait_for(lambda: kept() == 0, 10, "the learner to apply the concept change")
    assert released("concept_change") == flood
    assert 0 < metric("perennial_learner_concept_change_rounds") <= 10
    trained = metric("perennial_learner_events_trained_total")
    sent = consumed() + produce_flood(stack, 52, seed=3)
    wait_for(lambda: consumed() >= sent and idle(), 120, "the third flood read", detail=learn_log)
    assert label_rate() == quarantined and kept() == 0, "no flood is quarantined during a confirmed concept change"
    assert metric("perennial_learner_events_trained_total") > trained

    assert admin.pause()["command"]["action"] == "pause"
    wait_for(lambda: metric("perennial_learner_paused") == 1, 10, "explicit pause")
    assert stack.stop("learn", signal.SIGTERM) == 0
    anonymous.close()
    admin.close()
