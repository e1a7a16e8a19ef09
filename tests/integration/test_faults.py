"""Faults on real processes, loopback, bounded: a server killed under load, corrupt registry
entries, a 20-second network outage to the broker, and files written while SIGKILL lands."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time

import httpx
import orjson
import pytest

from learners.checkpoint import load_checkpoint
from learners.registry import Registry
from learners.schema import FeatureSchema
from streams.broker import LocalBroker
from streams.simulator import FEATURES

from .conftest import SIM, Outage, Stack, produce_stream, wait_for

pytestmark = pytest.mark.integration


class Load(threading.Thread):
    """Single-event predictions in a loop; records (status or 0 for a connection error, version)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.results: list[tuple[int, str | None]] = []
        self.rows = SIM.pattern_sets(46, 1)["card_testing"][0][:300]

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as c:
            i = 0
            while not self.stop.is_set():
                body = orjson.dumps({"features": dict(zip(FEATURES, self.rows[i % len(self.rows)].tolist()))})
                i += 1
                try:
                    r = c.post("/v1/predict", content=body)
                    self.results.append((r.status_code, r.json().get("version") if r.status_code == 200 else None))
                except httpx.HTTPError:
                    self.results.append((0, None))
                    time.sleep(0.05)


def test_killed_server_comes_back_serving_the_current_version(stack):
    stack.start("serve")
    stack.wait_ready()
    load = Load(stack.url)
    load.start()
    time.sleep(2)
    stack.stop("serve", signal.SIGKILL)
    reg = Registry(stack.registry)
    model = reg.load_current()
    reg.publish(model.weights, model.schema, parent=model.version)  # a version published while it is down
    stack.start("serve")
    stack.wait_ready()
    served_after = len(load.results)
    time.sleep(2)
    load.stop.set()
    load.join(10)
    assert httpx.get(f"{stack.url}/v1/model").json()["version"] == "v000002"
    after = load.results[served_after:]
    assert after and all(status == 200 and version == "v000002" for status, version in after)


def test_corrupt_registry_entries_are_refused_and_the_model_kept(stack):
    stack.start("serve")
    stack.wait_ready()
    reg = Registry(stack.registry)
    good = reg.load_current()

    def refusals() -> float:
        for line in httpx.get(f"{stack.url}/metrics").text.splitlines():
            if line.startswith('perennial_server_swaps_total{result="refused"}'):
                return float(line.split()[1])
        return -1

    # truncated weights
    m = reg.publish(good.weights, good.schema, parent=good.version)
    path = stack.registry / "versions" / m["version"] / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    wait_for(lambda: refusals() == 1, 15, "truncated weights refused")
    # checksum that does not match
    m = reg.publish(good.weights, good.schema, parent=good.version)
    manifest = stack.registry / "versions" / m["version"] / "manifest.json"
    doc = orjson.loads(manifest.read_bytes())
    doc["sha256"] = "0" * 64
    manifest.write_bytes(orjson.dumps(doc))
    wait_for(lambda: refusals() == 2, 15, "wrong checksum refused")
    # a version for another feature schema
    other = FeatureSchema(tuple(f"x{i}" for i in range(len(FEATURES))), good.schema.log1p, good.schema.mean, good.schema.std)
    reg.publish(good.weights, other, parent=good.version)
    wait_for(lambda: refusals() == 3, 15, "other schema refused")

    assert httpx.get(f"{stack.url}/v1/model").json()["version"] == good.version
    r = httpx.post(f"{stack.url}/v1/predict", content=orjson.dumps({"features": dict.fromkeys(FEATURES, 1.0)}))
    assert r.status_code == 200 and r.json()["version"] == good.version
    log = stack.log("serve")
    assert "refused version v000002, keeping v000001: checksum mismatch" in log  # truncated
    assert "refused version v000003, keeping v000001: checksum mismatch for v000003: manifest says 000" in log
    assert "refused version v000004, keeping v000001: version v000004 is for features x0" in log
    # and a sound version afterwards is served again
    m = reg.publish(good.weights, good.schema, parent=good.version)
    wait_for(lambda: httpx.get(f"{stack.url}/v1/model").json()["version"] == m["version"], 15, "recovery")


def test_broker_outage_of_20_seconds_loses_nothing(tmp_path, base_registry):
    broker = LocalBroker(advertised_port=None)
    outage = None
    try:
        outage = Outage(broker.port)
        broker.advertised_port = outage.port  # clients only ever reach the broker through the proxy
        broker.start()
        stack = Stack(tmp_path, f"127.0.0.1:{outage.port}", base_registry)
        stack.start("serve")
        stack.start("learn")
        stack.wait_ready()
        load = Load(stack.url)
        load.start()
        first = produce_stream(stack.bootstrap, stack.topic, 45, 47)
        consumed = lambda: stack.learner_metric("perennial_learner_events_consumed_total")  # noqa: E731
        wait_for(lambda: consumed() >= len(first), 90, "learner to consume before the outage")
        before_outage = len(load.results)
        outage.cut()
        time.sleep(20)
        during = load.results[before_outage:]
        outage.restore()
        second = produce_stream(stack.bootstrap, stack.topic, 47, 48)
        wait_for(lambda: consumed() >= len(first) + len(second), 120, "learner to resume after the outage")
        load.stop.set()
        load.join(10)
        assert stack.stop("learn") == 0
        assert len(during) > 100 and all(status == 200 for status, _ in during), "the server must answer during the outage"
        assert all(status == 200 for status, _ in load.results)
        a = load_checkpoint(stack.checkpoint)[1]["accounting"]
        tensors = load_checkpoint(stack.checkpoint)[0]
        pending = len(tensors["pending.y"]) + len(tensors["pending_holdout.y"])
        assert a["consumed"] == len(first) + len(second)
        assert a["trained"] + a["held_out"] + a["quarantined"] + pending + sum(a["dead_lettered"].values()) == a["consumed"]
        stack.close()
    finally:
        broker.stop()
        if outage:
            outage.cut()


WRITER = r"""
import sys, numpy as np, torch
from pathlib import Path
from learners.checkpoint import save_checkpoint
from learners.registry import Registry
root = Path(sys.argv[1]); reg = Registry(root / "registry"); model = reg.load_current()
big = {f"t{i}": torch.randn(256, 256) for i in range(8)}  # a few MB, so writes take time
print("ready", flush=True)
i = 0
while True:
    i += 1
    reg.publish(model.weights, model.schema, parent=model.version)
    save_checkpoint(root / "ckpt.safetensors", {**big, "i": torch.tensor([i])}, {"i": i})
"""


def test_sigkill_never_leaves_a_half_written_version_or_checkpoint(tmp_path, base_registry):
    import shutil

    shutil.copytree(base_registry, tmp_path / "registry")
    rng = random.Random(3)
    reg = Registry(tmp_path / "registry")
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE)
        proc.stdout.readline()
        time.sleep(rng.uniform(0.2, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        model = reg.load_current()  # CURRENT names a complete version whose checksum verifies
        assert model is not None
        loaded = load_checkpoint(tmp_path / "ckpt.safetensors")
        if loaded is not None:
            tensors, meta = loaded
            assert int(tensors["i"][0]) == meta["i"]  # tensors and metadata from the same write
        reg.remove_incomplete()
        for version in reg.versions():
            reg.load(version)
    assert len(reg.versions()) > 8
