"""Faults on real processes, loopback, bounded: a server killed under load, corrupt registry
entries, a 20-second network outage to the broker, and files written while SIGKILL lands."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from learners.checkpoint import load_checkpoint
from learners.registry import Registry
from learners.schema import FeatureSchema
from perennial.client import Client, PerennialError
from streams.broker import LocalBroker, free_port
from streams.simulator import FEATURES

from .conftest import SIM, Outage, Stack, produce_stream, producer, read_topic, wait_for

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
        with Client(self.url, timeout=5) as c:
            i = 0
            while not self.stop.is_set():
                features = dict(zip(FEATURES, self.rows[i % len(self.rows)].tolist()))
                i += 1
                try:
                    self.results.append((200, c.predict(features).version))
                except PerennialError as exc:
                    self.results.append((exc.status, None))
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
    with Client(stack.url) as c:
        assert c.model()["version"] == "v000002"
    after = load.results[served_after:]
    assert after and all(status == 200 and version == "v000002" for status, version in after)


def refusals(url: str) -> float:
    """The server's refused-swap counter; -1 while it does not answer."""
    try:
        text = httpx.get(f"{url}/metrics").text
    except httpx.HTTPError:
        return -1
    for line in text.splitlines():
        if line.startswith('perennial_server_swaps_total{result="refused"}'):
            return float(line.split()[1])
    return -1


def holds(predicate, seconds: float, what: str, interval: float = 0.2) -> None:
    """Checks ``predicate`` again and again for ``seconds``: proves that something did not happen."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{what} stopped holding"
        time.sleep(interval)


POLL_S = 1.0  # PERENNIAL_SERVE__REGISTRY_POLL_S of the Stack


def test_corrupt_registry_entries_are_refused_once_and_the_model_kept(stack):
    stack.start("serve")
    stack.wait_ready()
    reg = Registry(stack.registry)
    good = reg.load_current()
    expected = 0
    client = Client(stack.url)

    def refused_once(what: str) -> None:
        """The server refuses the state just made, counts it once over several polls, serves on."""
        nonlocal expected
        expected += 1
        wait_for(lambda: refusals(stack.url) >= expected, 15, f"{what} refused")
        holds(lambda: refusals(stack.url) == expected, 5 * POLL_S, f"{what} counted once")
        assert client.predict(dict.fromkeys(FEATURES, 1.0)).version == good.version
        assert client.ready()

    def bad_version(corrupt) -> str:
        """A complete version, damaged by ``corrupt`` before CURRENT names it (no server can see it sound)."""
        version = reg.add_version(good.weights, good.schema, parent=good.version)["version"]
        corrupt(stack.registry / "versions" / version)
        reg.set_current(version)
        return version

    def truncate_weights(v: Path) -> None:
        (v / "model.safetensors").write_bytes((v / "model.safetensors").read_bytes()[:100])

    def edit_manifest(change):
        def corrupt(v: Path) -> None:
            doc = orjson.loads((v / "manifest.json").read_bytes())
            change(doc)
            (v / "manifest.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        return corrupt

    bad_version(truncate_weights)
    refused_once("truncated weights")
    bad_version(edit_manifest(lambda doc: doc.update(sha256="0" * 64)))
    refused_once("a wrong weights checksum")
    bad_version(edit_manifest(lambda doc: doc["feature_schema"]["mean"].__setitem__(0, doc["feature_schema"]["mean"][0] + 0.5)))
    refused_once("one normalisation value edited")
    bad_version(lambda v: (v / "manifest.json").write_bytes(b"[]"))
    refused_once("a manifest that is []")
    other = FeatureSchema(tuple(f"x{i}" for i in range(len(FEATURES))), good.schema.log1p, good.schema.mean, good.schema.std)
    reg.publish(good.weights, other, parent=good.version)
    refused_once("a version for other features")
    reg.current_path.unlink()
    reg.current_path.mkdir()
    refused_once("a CURRENT that is a directory")
    reg.current_path.rmdir()
    reg.current_path.write_bytes(b"\xff\xfe\x00 not a version")
    refused_once("a CURRENT of garbage bytes")

    log = stack.log("serve")
    for line in (
        "refused version v000002, keeping v000001: checksum mismatch for v000002",
        "refused version v000003, keeping v000001: the manifest of v000003 does not match its checksum",
        "refused version v000004, keeping v000001: the manifest of v000004 does not match its checksum",
        "refused version v000005, keeping v000001: the manifest of v000005 is an array, not an object",
        "refused version v000006, keeping v000001: version v000006 is for features x0",
        "refused the registry's CURRENT, keeping v000001: CURRENT is a directory, not a file",
        "refused the registry's CURRENT, keeping v000001: CURRENT holds b'\\xff\\xfe\\x00 not a version', not a version id",
    ):
        assert log.count(line) == 1, line
    assert "Traceback" not in log
    # and a sound version afterwards is served again (publishing repairs CURRENT)
    m = reg.publish(good.weights, good.schema, parent=good.version)
    wait_for(lambda: client.model()["version"] == m["version"], 15, "recovery")
    client.close()


def test_a_server_starting_on_a_bad_current_is_not_ready_until_a_sound_one_appears(stack):
    reg = Registry(stack.registry)
    reg.current_path.unlink()
    reg.current_path.mkdir()
    stack.start("serve")
    wait_for(lambda: refusals(stack.url) == 1, 60, "the server up, refusing CURRENT")
    holds(lambda: refusals(stack.url) == 1 and stack.procs["serve"].poll() is None, 5 * POLL_S, "one refusal, server running")
    ready = httpx.get(f"{stack.url}/readyz")  # raw: the body's reason is the point, Client.ready() is a bool
    assert ready.status_code == 503 and ready.json()["status"] == "not ready"
    assert "CURRENT is a directory" in ready.json()["reason"]
    client = Client(stack.url)
    assert not client.ready()
    for call in (client.model, lambda: client.predict(dict.fromkeys(FEATURES, 1.0))):
        with pytest.raises(PerennialError) as refused:
            call()
        assert refused.value.status == 503
    reg.current_path.rmdir()
    reg.set_current("v000001", reason="repaired")
    stack.wait_ready(15)
    assert client.ready() and client.model()["version"] == "v000001"
    client.close()
    assert "refused the registry's CURRENT, keeping none: CURRENT is a directory" in stack.log("serve")


def test_the_learner_refuses_an_edited_manifest_as_incumbent(stack):
    path = stack.registry / "versions" / "v000001" / "manifest.json"
    doc = orjson.loads(path.read_bytes())
    doc["feature_schema"]["std"][0] *= 2
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    assert stack.start("learn").wait(120) == 2
    log = stack.log("learn")
    assert "perennial learn: the manifest of v000001 does not match its checksum" in log and "Traceback" not in log


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
        consumed = lambda: stack.learner_metric("perennial_learner_events_consumed_total")
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


def attempts_logged(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"cannot reach the Kafka broker at .*; attempt (\d+) failed", log)]


def test_learner_started_before_the_broker_waits_for_it_then_learns(tmp_path, base_registry):
    broker = LocalBroker()  # its port stays closed until start()
    stack = Stack(tmp_path, broker.bootstrap, base_registry)
    stack.env["PERENNIAL_LEARN__BROKER_RETRY_MAX_S"] = "2"
    try:
        learner = stack.start("learn")
        wait_for(lambda: stack.learner_metric("perennial_learner_broker_errors_total") >= 3, 60, "failed attempts on /metrics")
        assert stack.learner_metric("perennial_learner_broker_up") == 0
        broker.start()
        produced = produce_stream(broker.bootstrap, stack.topic, 45, 46)
        consumed = lambda: stack.learner_metric("perennial_learner_events_consumed_total")
        wait_for(lambda: consumed() == len(produced), 120, "the learner to consume once the broker is up")
        wait_for(lambda: stack.learner_metric("perennial_learner_rounds_total") >= 1, 60, "a training round")
        assert learner.poll() is None, "the same process, never restarted"
        assert stack.learner_metric("perennial_learner_broker_up") == 1
        log = stack.log("learn")
        assert f"cannot reach the Kafka broker at {broker.bootstrap} (ConnectionError: {broker.bootstrap}: Connection refused)" in log
        attempts = attempts_logged(log)
        assert attempts == list(range(1, len(attempts) + 1)) and len(attempts) >= 3, "one line per failed attempt"
        assert stack.stop("learn") == 0
    finally:
        stack.close()
        broker.stop()


def test_learner_waiting_for_the_broker_stops_on_sigterm(tmp_path, base_registry):
    stack = Stack(tmp_path, f"127.0.0.1:{free_port()}", base_registry)
    stack.env["PERENNIAL_LEARN__BROKER_RETRY_INITIAL_S"] = "120"  # after the first attempt it waits a minute or more
    stack.env["PERENNIAL_LEARN__BROKER_RETRY_MAX_S"] = "120"
    try:
        stack.start("learn")
        wait_for(lambda: stack.learner_metric("perennial_learner_broker_errors_total") == 1, 60, "the first failed attempt")
        assert stack.stop("learn", timeout=20) == 0
        assert attempts_logged(stack.log("learn")) == [1]
    finally:
        stack.close()


class LagSeries(threading.Thread):
    """Scrapes the learner's /metrics until stopped; records whether each scrape had the lag of partition 0."""

    def __init__(self, stack: Stack):
        super().__init__(daemon=True)
        self.stack, self.stop = stack, threading.Event()
        self.present: list[bool] = []

    def run(self) -> None:
        while not self.stop.wait(0.3):
            try:
                text = httpx.get(f"http://127.0.0.1:{self.stack.metrics_port}/metrics", timeout=2).text
            except httpx.HTTPError:
                continue
            self.present.append('perennial_learner_consumer_lag{partition="0"} ' in text)


def test_learner_reads_on_after_the_broker_lost_its_data(tmp_path, base_registry):
    broker = LocalBroker().start()
    stack = Stack(tmp_path, broker.bootstrap, base_registry)
    lag_series = LagSeries(stack)
    try:
        stack.start("learn")
        first = produce_stream(broker.bootstrap, stack.topic, 45, 47)
        wait_for(lambda: checkpoint_positions(stack) == len(first), 120, "a checkpoint after the first events")
        lag = lambda: stack.learner_metric('perennial_learner_consumer_lag{partition="0"}')
        assert lag() == 0
        lag_series.start()
        broker.stop()
        broker = LocalBroker(port=broker.port).start()  # memory-only: no topics, offsets or groups any more
        second = produce_stream(broker.bootstrap, stack.topic, 47, 48)
        malformed = producer(broker.bootstrap, stack.topic)
        for i in range(5):
            malformed.send(stack.topic, value=b"not json %d" % i)
        malformed.close(10)
        assert len(second) + 5 < len(first)
        consumed = lambda: stack.learner_metric("perennial_learner_events_consumed_total")
        wait_for(lambda: consumed() == len(first) + len(second) + 5, 120, "the learner to read the new events")
        wait_for(lambda: checkpoint_positions(stack) == len(second) + 5, 60, "a checkpoint at the new positions")
        assert stack.learner_metric('perennial_learner_offset_resets_total{partition="0"}') == 1
        assert re.search(rf"offset {len(first)} is outside the partition \(offsets 0 to \d+\): the broker lost its data", stack.log("learn"))
        # Dead letters are still delivered: those sent before the topics were made again are refused
        # (unknown topic) and sent again at the next checkpoint.
        letters = read_topic(broker.bootstrap, f"{stack.topic}.dlq", 5)
        assert sorted(bytes(r.value) for r in letters) == [b"not json %d" % i for i in range(5)]
        assert lag() == 0
        lag_series.stop.set()
        lag_series.join(5)
        assert len(lag_series.present) > 10 and all(lag_series.present), "the lag is exported throughout"
        assert stack.stop("learn") == 0
        tensors, meta = load_checkpoint(stack.checkpoint)
        a = meta["accounting"]
        pending = len(tensors["pending.y"]) + len(tensors["pending_holdout.y"])
        assert a["consumed"] == len(first) + len(second) + 5
        assert a["trained"] + a["held_out"] + a["quarantined"] + pending + sum(a["dead_lettered"].values()) == a["consumed"]
    finally:
        lag_series.stop.set()
        stack.close()
        broker.stop()


def checkpoint_positions(stack: Stack) -> int:
    """Sum of the checkpoint's offsets on the topic's partitions (a broker may create it with several)."""
    loaded = load_checkpoint(stack.checkpoint)
    offsets = loaded[1]["offsets"] if loaded else {}
    return sum(offset for key, offset in offsets.items() if key.rpartition(":")[0] == stack.topic)


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
