"""The loop on real components: pretrain → serve + learn → labeled events of a new pattern → a
version passes the gates → the server swaps to it while a client keeps posting, none failing."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import orjson
import pytest

from learners.quality import average_precision
from learners.registry import Registry
from perennial.client import Client, PerennialError
from streams.simulator import FEATURES

from .conftest import SIM, produce_stream, producer, read_topic, wait_for

pytestmark = pytest.mark.integration


class Traffic(threading.Thread):
    """Posts single events through perennial.client until stopped; records every status (0 for a
    connection error) and served version."""

    def __init__(self, url: str, rows: np.ndarray):
        super().__init__(daemon=True)
        self.url, self.rows = url, rows
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.versions: list[str] = []

    def run(self) -> None:
        with Client(self.url, timeout=10) as c:
            i = 0
            while not self.stop.is_set():
                row = self.rows[i % len(self.rows)].tolist()
                i += 1
                try:
                    version = c.predict(dict(zip(FEATURES, row)), id=str(i)).version
                except PerennialError as exc:
                    self.statuses.append(exc.status)
                except httpx.HTTPError:
                    self.statuses.append(0)
                else:
                    self.statuses.append(200)
                    self.versions.append(version)


def test_new_pattern_is_learned_gated_and_swapped_in_under_traffic(stack):
    sets = SIM.pattern_sets(50, 4)
    new_x, new_y = sets["card_testing"]
    before = average_precision(new_y, Registry(stack.registry).load("v000001").score(new_x))

    # registry retention at its tightest: every publication prunes to the 3 newest (and the protected ones)
    stack.env.update({"PERENNIAL_REGISTRY__KEEP_LAST": "3", "PERENNIAL_REGISTRY__KEEP_WITHIN_S": "0", "PERENNIAL_REGISTRY__PRUNE_EVERY_S": "0"})
    stack.start("serve")
    stack.start("learn")
    stack.wait_ready()
    traffic = Traffic(stack.url, new_x[:500])
    traffic.start()
    produced = produce_stream(stack.bootstrap, stack.topic, 45, 57)  # card testing is new from day 45

    running_seen = set()  # the round_running gauge, sampled while the stream is consumed: it must show rounds running

    def consumed() -> bool:
        running_seen.add(stack.learner_metric("perennial_learner_round_running"))
        return stack.learner_metric("perennial_learner_events_consumed_total") >= len(produced)

    wait_for(consumed, 120, "learner to consume the stream", interval=0.1)
    wait_for(stack.learner_idle, 30, "last round")
    reg = Registry(stack.registry)
    current = reg.current_version()
    with Client(stack.url) as c:
        wait_for(lambda: c.model()["version"] == current, 15, f"server to serve CURRENT ({current})",
                 detail=lambda: f"now CURRENT is {reg.current_version()}\nserve:\n{stack.log('serve')[-3000:]}\nlearn:\n{stack.log('learn')[-4000:]}")
    traffic.stop.set()
    traffic.join(10)

    assert current != "v000001", stack.log("learn")[-3000:]
    assert {0.0, 1.0} <= running_seen, running_seen  # (-1 is a scrape that timed out)
    assert traffic.statuses and set(traffic.statuses) == {200}, "a prediction request failed during swaps"
    assert len(set(traffic.versions)) >= 2 and traffic.versions[-1] == current
    manifest = reg.manifest(current)
    assert manifest["gate_report"]["passed"] is True and manifest["parent"] is not None
    assert any(r.startswith("retention:") for r in manifest["gate_report"]["reasons"])
    assert sum(manifest["offsets"].values()) > 0
    after = average_precision(new_y, reg.load(current).score(new_x))
    assert after > before + 0.2, (before, after)
    # retention removed old versions while the server swapped, and kept the first, the served one and its parent
    kept = reg.versions()
    assert {"v000001", current, manifest["parent"]} <= set(kept) and len(kept) <= 3 + 4 + 2  # newest, the last 3 history entries, first + parent

    def accounted() -> bool:  # every id ever written is kept or was removed, and the gauge says how many are kept (the learner may publish meanwhile)
        now = reg.versions()
        return (stack.learner_metric("perennial_registry_versions") == len(now)
                and stack.learner_metric("perennial_registry_versions_removed_total") + len(now) == int(now[-1][1:]))

    wait_for(accounted, 30, "the registry's size metrics to account for every version")
    old_x, old_y = sets["compromised_terminal"]
    old_before = average_precision(old_y, reg.load("v000001").score(old_x))
    assert average_precision(old_y, reg.load(current).score(old_x)) > old_before - 0.05  # not forgotten


def test_malformed_events_go_to_the_dead_letter_topic_and_learning_goes_on(stack):
    stack.start("learn")
    valid = produce_stream(stack.bootstrap, stack.topic, 45, 46)
    good = orjson.loads(valid[0])
    bad = {
        "not_json": b"{oops",
        "bad_label": orjson.dumps({**good, "id": "b1", "label": 3}),
        "missing_feature": orjson.dumps({**good, "id": "b2", "features": {"amount": 1.0}}),
        "unknown_feature": orjson.dumps({**good, "id": "b3", "features": {**good["features"], "colour": 1}}),
        "bad_value": orjson.dumps({**good, "id": "b4", "features": {**good["features"], "amount": "12"}}),
        "too_large": orjson.dumps({**good, "id": "b5", "pad": "x" * 70000}),
    }
    p = producer(stack.bootstrap, stack.topic)
    for value in bad.values():
        p.send(stack.topic, value=value)
    p.send(stack.topic, value=b'{"id": "b6", "features": {"amount": NaN}}')
    p.flush()
    dlq = read_topic(stack.bootstrap, f"{stack.topic}.dlq", len(bad) + 1, timeout=60)
    by_reason: dict[str, list] = {}
    for r in dlq:
        by_reason.setdefault(dict(r.headers)["perennial.reason"].decode(), []).append(r)
    assert set(by_reason) == set(bad), stack.log("learn")[-2000:]
    for reason, value in bad.items():
        assert value in [r.value for r in by_reason[reason]]  # the original bytes, untouched
        for record in by_reason[reason]:
            headers = dict(record.headers)
            assert headers["perennial.error"] and headers["perennial.source"].decode().startswith(f"{stack.topic}/")
    assert len(dlq) == len(bad) + 1
    # the learner is still alive and still consuming
    p.send(stack.topic, value=valid[1])
    p.flush()
    total = len(valid) + len(bad) + 2
    wait_for(lambda: stack.learner_metric("perennial_learner_events_consumed_total") == total, 60, "learner to consume everything")
    assert stack.learner_metric('perennial_learner_events_dead_lettered_total{reason="duplicate_id"}') == 1  # valid[1] was sent twice
    dup = read_topic(stack.bootstrap, f"{stack.topic}.dlq", len(bad) + 2, timeout=30)
    assert [r.value for r in dup if dict(r.headers)["perennial.reason"] == b"duplicate_id"] == [valid[1]]
    assert stack.procs["learn"].poll() is None
