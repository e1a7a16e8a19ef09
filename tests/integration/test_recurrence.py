"""A recurring concept through the real broker: A -> B -> A, where the decision boundary itself flips
(in B, A's fraud region is an honest segment and fraud sits where A's honest segment was) and comes
back. The learner, judging each candidate on the events labeled after it was cut, must serve a model
of B while B lasts and relearn A once it returns; a judge stuck on a window of B's events would keep
serving B."""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest

from learners.pretrain import pretrain
from learners.quality import average_precision
from learners.registry import Registry
from perennial.evaluation import scenarios
from streams.events import encode_event

from .conftest import Stack, producer, wait_for

pytestmark = pytest.mark.integration
EVERY = 2  # every other event of the scenario's stream: 40,000 events, 2,000 frauds


def served_ap(stack: Stack, probe: tuple[np.ndarray, np.ndarray], names: tuple[str, ...]) -> float:
    """AP of the served model on a probe, scored over HTTP."""
    x, y = probe
    scores = []
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        for start in range(0, len(y), 4000):
            rows = [{"features": dict(zip(names, row))} for row in x[start : start + 4000].tolist()]
            r = client.post("/v1/predict", content=orjson.dumps(rows))
            assert r.status_code == 200, r.text
            scores += [p["score"] for p in r.json()["predictions"]]
    return average_precision(y, np.array(scores))


def test_a_recurring_concept_is_relearned_through_the_real_broker(tmp_path, broker):
    scn = scenarios.build("recurrence", 0)
    base = tmp_path / "base"
    pretrain(scn.names, scn.history_x, scn.history_y, Registry(base), epochs=8, seed=0)
    stack = Stack(tmp_path, broker.bootstrap, base)
    try:
        stack.start("serve")
        stack.start("learn")
        stack.wait_ready()
        probes = {concept: scn.pattern_probes[concept] for concept in ("concept_A", "concept_B")}
        ap = {"start": {c: served_ap(stack, p, scn.names) for c, p in probes.items()}}
        assert ap["start"]["concept_A"] > 0.8 > 0.3 > ap["start"]["concept_B"], ap  # pretrained on A: blind to B

        p, sent = producer(stack.bootstrap, stack.topic), 0
        for phase, (t0, t1, concept) in enumerate(scn.concept_spans):
            rows = np.flatnonzero((scn.time >= t0) & (scn.time < t1))[::EVERY]
            for i in rows[np.argsort(scn.label_time[rows], kind="stable")].tolist():
                p.send(stack.topic, key=f"e{i}".encode(), value=encode_event(
                    f"e{i}", float(scn.time[i]), dict(zip(scn.names, scn.x[i].tolist())), int(scn.y[i]), {}))
            p.flush(30)
            sent += len(rows)
            wait_for(lambda: stack.learner_metric("perennial_learner_events_consumed_total") >= sent, 240, f"phase {phase} consumed")
            wait_for(lambda: stack.learner_metric("perennial_learner_pending_events") == 0, 60, f"phase {phase} trained")
            # the last candidate of the phase is judged on the next phase's events: allow for the swap to reach the server
            wait_for(lambda c=concept: served_ap(stack, probes[c], scn.names) > 0.7, 60 if phase else 5, f"a model of {concept} served")
            ap[f"after phase {phase} ({concept})"] = {c: served_ap(stack, pr, scn.names) for c, pr in probes.items()}
        p.close()

        during_b, back_to_a = ap["after phase 1 (concept_B)"], ap["after phase 2 (concept_A)"]
        assert during_b["concept_B"] > 0.7, ap  # B learned
        assert back_to_a["concept_A"] > ap["start"]["concept_A"] - 0.05, ap  # A relearned once it returned
        decisions = Registry(stack.registry).decisions()
        assert decisions and all(d["figures"].get("recent_frauds", 20) >= 20 for d in decisions if d["outcome"] == "passed")
    finally:
        stack.close()
