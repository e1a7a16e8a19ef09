"""Your own data and your own model, end to end: a CSV with a category, gaps and an id column,
pretrained by the CLI into a network of the user's own (a factory in a module of theirs), served and
learned on the real broker; predictions with absent, null and unseen values; a published version
that keeps the network; a version whose network cannot be built is refused and the last good one kept."""

from __future__ import annotations

import math
import subprocess
import sys

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

from learners.network import NetworkSpec
from learners.registry import Registry

from .conftest import producer, wait_for
from .own_data import own_events, own_history, own_table, shifted_table

pytestmark = pytest.mark.integration

OWN = {"factory": "tests.unit.custom_networks:build", "kwargs": {"width": 16}}


def server_metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_your_own_csv_and_network_are_pretrained_served_learned_and_swapped(stack, tmp_path):
    # -- pretrain from the team's CSV into their own network (the stack's registry replaced by it)
    history = own_history(tmp_path / "history.csv", n=6000)
    for path in sorted(stack.registry.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    env = {**stack.env, "PERENNIAL_PRETRAIN__EPOCHS": "4", "PERENNIAL_PRETRAIN__RETENTION_SIZE": "1000"}
    r = subprocess.run([sys.executable, "-m", "perennial.cli", "pretrain", "--history", str(history), "--registry", str(stack.registry),
                        "--model", OWN["factory"], "--model-kwargs", orjson.dumps(OWN["kwargs"]).decode()],
                       capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    reg = Registry(stack.registry)
    first = reg.current_version()
    assert reg.manifest(first)["network"] == OWN

    # -- served: the schema is shown, and absent, null and unseen values are scored
    stack.env.update({"PERENNIAL_LEARN__GATES__CONFIDENCE": "0.6", "PERENNIAL_LEARN__GATES__MIN_RECENT_POSITIVES": "10"})
    stack.start("serve")
    stack.wait_ready()
    info = httpx.get(f"{stack.url}/v1/model", timeout=5).json()
    assert info["version"] == first and info["features"] == ["amount", "country", "device_age", "channel"]
    described = {f["name"]: f for f in info["schema"]["features"]}
    assert described["country"]["type"] == "category" and sorted(described["country"]["vocabulary"]) == ["FR", "GB", "NG", "US"]
    assert described["device_age"]["missing"] and not described["amount"]["missing"]
    unseen = 'perennial_server_unseen_categories_total{feature="country"}'
    events = [{"id": "absent", "features": {"amount": 20.0, "country": "US", "channel": 2}},
              {"id": "null", "features": {"amount": 20.0, "country": "US", "channel": 2, "device_age": None}},
              {"id": "unseen", "features": {"amount": 20.0, "country": "BR", "channel": 2, "device_age": 5.0}},
              {"id": "risky", "features": {"amount": 20.0, "country": "NG", "channel": 2}}]
    answer = httpx.post(f"{stack.url}/v1/predict", json=events, timeout=10)
    assert answer.status_code == 200, answer.text
    scores = {p["id"]: p["score"] for p in answer.json()["predictions"]}
    assert all(0 <= s <= 1 and math.isfinite(s) for s in scores.values())
    assert scores["absent"] == pytest.approx(scores["null"], abs=1e-6)  # both mean missing
    assert scores["risky"] > scores["absent"]  # the pretrained network learned the country
    assert server_metric(stack.url, unseen) == 1
    refused = httpx.post(f"{stack.url}/v1/predict", json={"features": {"amount": None, "country": "US", "channel": 2}}, timeout=10)
    assert refused.status_code == 422 and "amount" in refused.json()["error"]  # a required number stays required

    # -- learned on the broker: fraud spreads to GB and to a country never seen (BR)
    shifted = shifted_table(8000)
    stream = own_events(shifted, start=1_764_331_200.0, prefix="own")
    stack.start("learn")
    p = producer(stack.bootstrap, stack.topic)
    for value in stream:
        p.send(stack.topic, value=value)
    p.flush(30)
    p.close()
    metric = stack.learner_metric
    learn_log = lambda: stack.log("learn")[-4000:]
    wait_for(lambda: metric("perennial_learner_events_consumed_total") >= len(stream), 180, "the learner to consume", detail=learn_log)
    for reason in ("missing_feature", "bad_value"):  # absent and null are no errors, an unseen country neither
        assert metric(f'perennial_learner_events_dead_lettered_total{{reason="{reason}"}}') == 0
    assert metric('perennial_learner_unseen_categories_total{feature="country"}') == (shifted.country == "BR").sum()
    wait_for(lambda: len(reg.versions()) >= 2 and reg.current_version() != first, 180, "a published version", detail=learn_log)
    published = reg.current_version()
    assert reg.manifest(published)["network"] == OWN  # fine-tuned, the network is still the team's own
    wait_for(lambda: httpx.get(f"{stack.url}/v1/model", timeout=5).json()["version"] == published, 30, "the swap")
    after = httpx.post(f"{stack.url}/v1/predict", json=events, timeout=10).json()["predictions"]
    assert {p["version"] for p in after} == {published}
    assert stack.stop("learn") == 0

    # -- a version whose network cannot be built is refused: the server keeps the last good one
    good = reg.load(published)
    broken = reg.publish(good.weights, good.schema, network=NetworkSpec("tests.unit.custom_networks:broken"), parent=published,
                         calibration=good.calibration)
    refusals = lambda: server_metric(stack.url, 'perennial_server_swaps_total{result="refused"}')
    wait_for(lambda: refusals() >= 1, 30, f"the server to refuse {broken['version']}", detail=lambda: stack.log("serve")[-3000:])
    assert httpx.get(f"{stack.url}/v1/model", timeout=5).json()["version"] == published
    still = httpx.post(f"{stack.url}/v1/predict", json=events, timeout=10)
    assert still.status_code == 200 and {p["version"] for p in still.json()["predictions"]} == {published}
    assert "this factory needs a GPU" in stack.log("serve")
    assert np.isfinite([p["score"] for p in still.json()["predictions"]]).all()


def test_evaluate_replays_your_own_csv_through_your_own_network(tmp_path):
    """``perennial evaluate`` on a file with a category, gaps and an id column, with a declaration
    edited by hand and a network of the user's own: every strategy starts from that network, and the
    product learns the shift (fraud spreading to GB and to an unseen country) better than not learning."""
    history = own_table(6000)
    stream = shifted_table(14000).assign(session=lambda d: [f"t-{i:06x}" for i in range(len(d))])
    stream["time"] += history["time"].iloc[-1] + 60
    path = tmp_path / "own.csv"
    pd.concat([history, stream], ignore_index=True).to_csv(path, index=False)
    declaration = tmp_path / "schema.json"
    declaration.write_bytes(orjson.dumps([{"name": "channel", "type": "category"}]))
    work, out = tmp_path / "work", tmp_path / "report.md"
    r = subprocess.run([sys.executable, "-m", "perennial.cli", "evaluate", "--input", str(path), "--history-fraction", "0.3",
                        "--schema", str(declaration), "--model", OWN["factory"], "--model-kwargs", orjson.dumps(OWN["kwargs"]).decode(),
                        "--strategies", "product,frozen", "--workdir", str(work), "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [orjson.loads(line) for line in r.stdout.splitlines()]
    used = next(line for line in lines if line["event"] == "evaluate_data")
    assert used["features"] == ["amount", "country", "device_age", "channel"]  # not the session id
    manifest = orjson.loads((work / "own" / "seed-0" / "registry" / "versions" / "v000001" / "manifest.json").read_bytes())
    assert manifest["network"] == OWN
    assert manifest["feature_schema"]["optional"] == [False, False, True, False]
    assert [c is not None for c in manifest["feature_schema"]["categories"]] == [False, True, False, True]  # channel as declared
    (section,) = orjson.loads((work / "results.json").read_bytes())["scenarios"]
    product = next(x for x in section["results"] if x["strategy"] == "product")
    assert product["summary"]["published"] >= 1 and product["summary"]["quarantines"] == 0
    difference = section["intervals"]["difference"]["frozen"]
    assert difference["verdict"] == "better", difference


def test_evaluate_says_when_a_stream_is_too_short_for_a_round(tmp_path):
    """A stream of fewer labels than learn.round_events never trains: the figures are the pretrained
    version's, and the report and the output say so instead of a silent tie with frozen."""
    path = tmp_path / "short.csv"
    own_table(6000).to_csv(path, index=False)  # 4,200 rows pretrain, 1,800 stream
    out = tmp_path / "report.md"
    r = subprocess.run([sys.executable, "-m", "perennial.cli", "evaluate", "--input", str(path), "--history-fraction", "0.7", "--periods", "4",
                        "--strategies", "product,frozen",
                        "--workdir", str(tmp_path / "work"), "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    warned = [e for e in map(orjson.loads, r.stdout.splitlines()) if e["event"] == "evaluate_warning"]
    assert [w["strategy"] for w in warned] == ["product"]
    message = warned[0]["message"]  # (the labels streamed: the stream less its held-out probes)
    assert message.startswith("short, seed 0: product ran no round: its ") and "labels are fewer than learn.round_events (2,048)" in message
    assert f"**Warning**: {warned[0]['message']}." in out.read_text()
