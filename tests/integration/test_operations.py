"""Operators on the real stack: roll back over HTTP, pause and resume learning; the learner applies
the commands (it alone writes the registry), records them, and keeps them across a restart."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from learners.registry import Registry

from .conftest import ADMIN_TOKEN, produce_stream, wait_for

pytestmark = pytest.mark.integration
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def served(stack) -> str:
    return httpx.get(f"{stack.url}/v1/model").json()["version"]


def test_rollback_pause_resume_over_http(stack):
    stack.env["PERENNIAL_SERVE__REGISTRY_POLL_S"] = "60"  # swaps within seconds can only come from announcements
    # this test is about the commands, not the gates: candidates are served on thinner evidence
    stack.env.update({"PERENNIAL_LEARN__GATES__CONFIDENCE": "0.6", "PERENNIAL_LEARN__GATES__MIN_RECENT_POSITIVES": "10"})
    stack.start("serve")
    stack.start("learn")
    stack.wait_ready()
    reg = Registry(stack.registry)
    produced = produce_stream(stack.bootstrap, stack.topic, 45, 48)
    consumed = lambda: stack.learner_metric("perennial_learner_events_consumed_total")
    wait_for(lambda: consumed() >= len(produced), 120, "learner to consume")
    wait_for(lambda: len(reg.versions()) >= 2, 60, "a published version")  # a candidate is judged on the events after it
    # the learner is idle (its last, time-triggered round done), so nothing is published under the rollback
    wait_for(stack.learner_idle, 30, "learner idle")
    wait_for(lambda: served(stack) == reg.current_version(), 10, "announcement-driven swap")
    current = reg.current_version()
    parent = reg.manifest(current)["parent"]

    assert httpx.post(f"{stack.url}/v1/model/rollback").status_code == 401
    r = httpx.post(f"{stack.url}/v1/model/rollback", headers=AUTH, json={"reason": "incident 7"})
    assert r.status_code == 202 and r.json()["command"]["version"] == parent
    wait_for(lambda: served(stack) == parent, 10, "server to serve the parent")
    entry = reg.history()[-1]
    assert (entry["from"], entry["to"], entry["trigger"], entry["reason"]) == (current, parent, "manual", "incident 7")
    wait_for(lambda: stack.learner_metric("perennial_learner_paused") == 1, 10, "learner paused by the rollback")

    before = consumed()
    more = produce_stream(stack.bootstrap, stack.topic, 48, 49)
    time.sleep(4)
    assert consumed() == before, "a paused learner must not consume"

    assert stack.stop("learn") == 0  # paused survives a restart
    stack.start("learn")
    wait_for(lambda: stack.learner_metric("perennial_learner_paused") == 1, 60, "restarted learner still paused")
    time.sleep(3)
    assert consumed() == 0  # counters are per process: nothing read since the restart

    assert httpx.post(f"{stack.url}/v1/learner/resume", headers=AUTH).status_code == 202
    wait_for(lambda: consumed() >= len(more), 90, "resumed learner to consume the rest")
    assert stack.learner_metric("perennial_learner_paused") == 0
    assert reg.current_version() != current or served(stack) == reg.current_version()

    assert httpx.post(f"{stack.url}/v1/learner/pause", headers=AUTH).status_code == 202
    wait_for(lambda: stack.learner_metric("perennial_learner_paused") == 1, 10, "explicit pause")
    assert stack.stop("learn", signal.SIGTERM) == 0
