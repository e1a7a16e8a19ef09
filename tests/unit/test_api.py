"""The HTTP API's contract, in process (the real server on a real port is in tests/integration)."""

import numpy as np
import orjson
import pytest
import torch
from fastapi.testclient import TestClient

from learners.model import TabularNet, state_numpy
from learners.registry import Registry
from learners.schema import FeatureSchema
from perennial.settings import Settings
from service.app import create_app

NAMES = ("amount", "hour")


@pytest.fixture
def client(tmp_path):
    reg = Registry(tmp_path / "reg")
    torch.manual_seed(0)
    schema = FeatureSchema.fit(NAMES, np.random.default_rng(0).uniform(0, 10, (50, 2)))
    reg.publish(state_numpy(TabularNet(2, hidden=8).state_dict()), schema, parent=None, gate_report={"passed": True})
    settings = Settings(registry={"path": tmp_path / "reg"}, kafka={"bootstrap_servers": "127.0.0.1:1"}, serve={"max_batch": 3, "max_body_bytes": 2000})
    with TestClient(create_app(settings)) as c:
        yield c


def post(client, body):
    return client.post("/v1/predict", content=body if isinstance(body, bytes) else orjson.dumps(body))


def test_single_event(client):
    r = post(client, {"id": "a", "features": {"amount": 3, "hour": 1}})
    assert r.status_code == 200
    doc = r.json()
    assert doc["id"] == "a" and doc["version"] == "v000001" and 0 <= doc["score"] <= 1


def test_batch_keeps_order_and_version_per_item(client):
    r = post(client, [{"id": i, "features": {"amount": i, "hour": 1}} for i in range(3)])
    doc = r.json()
    assert r.status_code == 200 and [p["id"] for p in doc["predictions"]] == [0, 1, 2]
    assert all(p["version"] == "v000001" for p in doc["predictions"])


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"features": {"amount": 1}}, 422, "'hour' is missing; the model expects amount, hour"),
        ({"features": {"amount": 1, "hour": 2, "x": 3}}, 422, "unknown feature 'x'"),
        ({"features": {"amount": "1", "hour": 2}}, 422, "'amount' must be a number"),
        (b'{"features": {"amount": NaN, "hour": 2}}', 422, "NaN and Infinity are not allowed"),
        (b'{"features": {"amount": Infinity, "hour": 2}}', 422, "not valid JSON"),
        ([], 422, "empty"),
        ("text", 422, "event object or a list"),
        ([{"features": {"amount": 1, "hour": 1}}, 5], 422, "event 1: each event must be an object"),
        ([{"features": {"amount": 1, "hour": 1}}] * 4, 413, "limit is 3"),
        ({"features": {"amount": 1, "hour": 1}, "pad": "x" * 3000}, 413, "limit is 2000"),
    ],
)
def test_bad_requests_are_4xx_naming_the_problem(client, body, status, words):
    r = post(client, body)
    assert r.status_code == status and words in r.json()["error"]


def test_model_health_readiness_metrics(client):
    m = client.get("/v1/model").json()
    assert m["version"] == "v000001" and m["features"] == list(NAMES) and m["manifest"]["gate_report"] == {"passed": True}
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json() == {"status": "ready", "version": "v000001"}
    post(client, {"features": {"amount": 1, "hour": 1}})
    text = client.get("/metrics").text
    assert 'perennial_server_predictions_total{outcome="scored",version="v000001"} 1.0' in text
    assert 'perennial_server_model_info{parent="",sha256=' in text


def test_not_ready_without_a_model(tmp_path):
    settings = Settings(registry={"path": tmp_path / "empty"}, kafka={"bootstrap_servers": "127.0.0.1:1"})
    with TestClient(create_app(settings)) as c:
        assert c.get("/readyz").status_code == 503
        assert post(c, {"features": {}}).status_code == 503
        assert c.get("/healthz").status_code == 200
