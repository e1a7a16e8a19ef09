"""The HTTP API's contract, in process (the real server on a real port is in tests/integration)."""

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from learners.model import TabularNet, state_numpy
from learners.registry import Registry
from learners.schema import FeatureSchema
from perennial.settings import Settings
from service.app import create_app
from service.schemas import PREDICT_ANSWER, PREDICT_REASONS, ModelInfo, PredictError, Prediction, Predictions
from tests.unit.conftest import DECLARED, served_scores
from tests.unit.conftest import TWO_FEATURES as NAMES


@pytest.fixture
def client(two_feature_registry):
    settings = Settings(registry={"path": two_feature_registry}, kafka={"bootstrap_servers": "127.0.0.1:1"},
                        serve={"max_batch": 3, "max_body_bytes": 2000})
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
    "body, status, words, reason",
    [
        ({"features": {"amount": 1}}, 422, "'hour' is missing; the model expects amount, hour", "missing_feature"),
        ({"features": {"amount": 1, "hour": 2, "x": 3}}, 422, "unknown feature 'x'", "unknown_feature"),
        ({"features": {"amount": 1, "x": 3}}, 422, "the model expects amount, hour", "missing_feature"),  # misnamed: issue 12
        ([{"features": {"amount": 1, "hour": 1}}, {"features": {"hour": 1, "x": 3}}], 422, "event 1: ", "missing_feature"),
        ({"features": {"amount": "1", "hour": 2}}, 422, "'amount' must be a number", "bad_value"),
        ({"features": [1, 2]}, 422, "'features' must be an object", "bad_features"),
        (b'{"features": {"amount": NaN, "hour": 2}}', 422, "NaN and Infinity are not allowed", "not_json"),
        (b'{"features": {"amount": Infinity, "hour": 2}}', 422, "not valid JSON", "not_json"),
        ([], 422, "empty", "empty_batch"),
        ("text", 422, "event object or a list", "not_object"),
        ([{"features": {"amount": 1, "hour": 1}}, 5], 422, "event 1: each event must be an object", "not_object"),
        ([{"features": {"amount": 1, "hour": 1}}] * 4, 413, "limit is 3", "too_many_events"),
        ({"features": {"amount": 1, "hour": 1}, "pad": "x" * 3000}, 413, "limit is 2000", "too_large"),
    ],
)
def test_bad_requests_are_4xx_naming_the_problem_with_a_reason_code(client, body, status, words, reason):
    r = post(client, body)
    assert r.status_code == status and words in r.json()["error"] and r.json()["reason"] == reason
    PredictError.model_validate_json(r.content)  # the documented refusal


def test_answers_are_the_documented_models_and_the_openapi_schemas_are_theirs(client):
    one = PREDICT_ANSWER.validate_json(post(client, {"id": "tx-1", "features": {"amount": 1, "hour": 2}}).content)
    many = PREDICT_ANSWER.validate_json(post(client, [{"features": {"amount": i, "hour": 1}} for i in range(3)]).content)
    assert isinstance(one, Prediction) and one.id == "tx-1" and 0 <= one.score <= 1
    assert isinstance(many, Predictions) and len(many.predictions) == 3 and many.predictions[0].id is None
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["Prediction"]["properties"]["score"] == {**Prediction.model_json_schema()["properties"]["score"]}
    assert set(schemas["PredictError"]["properties"]["reason"]["anyOf"][0]["enum"]) == set(PREDICT_REASONS)


def test_streamed_body_over_the_limit_is_refused(client):
    def chunks():
        for _ in range(10):
            yield b" " * 500

    r = client.post("/v1/predict", content=chunks())  # chunked: no Content-Length to trust
    assert r.status_code == 413 and "limit of 2000 bytes" in r.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"id": "a", "features": {"amount": 3, "hour": 1}},
        [{"id": i, "features": {"amount": i, "hour": 2}} for i in range(3)],
        {"features": {"amount": 1}},
        b"not json",
        [{"features": {"amount": 1, "hour": 1}}] * 4,
        {"features": {"amount": 1, "hour": 1}, "pad": "x" * 3000},
    ],
)
def test_the_documented_fastapi_route_answers_as_the_lean_front(client, body):
    """The front answers POST /v1/predict before FastAPI; FastAPI's own route (used when its app is
    mounted alone) runs the same code and must give the same answer."""
    with TestClient(client.app.app) as direct:
        ours, theirs = post(client, body), post(direct, body)
    assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json())
    assert ours.headers["content-type"] == theirs.headers["content-type"] == "application/json"
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/v1/predict").status_code == 405  # other methods are FastAPI's


def asgi_call(front, messages):
    """Drive the front with raw ASGI messages; returns what it sent."""
    import asyncio

    sent, queue = [], list(messages)

    async def receive():
        return queue.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": []}
    asyncio.run(front(scope, receive, send))
    return sent


def test_a_client_gone_before_its_body_gets_no_answer_and_is_counted(client):
    front = client.app
    sent = asgi_call(front, [{"type": "http.request", "body": b'{"featu', "more_body": True}, {"type": "http.disconnect"}])
    assert sent == []
    assert 'perennial_server_requests_total{code="499",route="/v1/predict"} 1.0' in client.get("/metrics").text


def test_a_body_in_chunks_is_joined(client):
    body = orjson.dumps({"id": "c", "features": {"amount": 3, "hour": 1}})
    sent = asgi_call(client.app, [{"type": "http.request", "body": body[:7], "more_body": True}, {"type": "http.request", "body": body[7:]}])
    assert sent[0]["status"] == 200 and orjson.loads(sent[1]["body"])["id"] == "c"
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(sent[1]["body"])).encode()


def test_an_unexpected_failure_is_a_500_without_details_and_counted(client, monkeypatch):
    model = client.app.app.state.store.model
    monkeypatch.setattr(type(model), "score", lambda self, x: (_ for _ in ()).throw(RuntimeError("boom")))
    r = post(client, {"features": {"amount": 1, "hour": 1}})
    assert r.status_code == 500 and "boom" not in r.text and "server log" in r.json()["error"]
    assert 'perennial_server_requests_total{code="500",route="/v1/predict"} 1.0' in client.get("/metrics").text


def test_model_health_readiness_metrics(client):
    m = client.get("/v1/model").json()
    assert m["version"] == "v000001" and m["features"] == list(NAMES) and m["manifest"]["gate_report"] == {"passed": True}
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json() == {"status": "ready", "version": "v000001"}
    post(client, {"features": {"amount": 1, "hour": 1}})
    text = client.get("/metrics").text
    assert 'perennial_server_predictions_total{outcome="scored",version="v000001"} 1.0' in text
    assert 'perennial_server_model_info{parent="",sha256=' in text


def test_the_model_route_says_why_the_last_candidates_were_or_were_not_served(client):
    registry = Registry(client.app.app.state.store.registry.root)
    assert client.get("/v1/model").json()["decisions"] == []
    registry.save_decisions([{"round": 3, "outcome": "inconclusive", "reasons": ["recent: ... 12 frauds"], "figures": {"recent_frauds": 12}}])
    assert client.get("/v1/model").json()["decisions"][0]["figures"] == {"recent_frauds": 12}
    registry.decisions_path.write_text("{torn")
    r = client.get("/v1/model")
    assert r.status_code == 200 and "not JSON" in r.json()["decisions"]["error"]  # the served model is still described


def test_every_route_is_counted_under_its_path_and_unknown_paths_as_one(client):
    post(client, {"features": {"amount": 1, "hour": 1}})
    client.get("/healthz")
    client.get("/v1/predict")
    client.get("/openapi.json")
    for path in ("/nope", "/nope/2", "/.env"):
        client.get(path)
    counts = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in client.get("/metrics").text.splitlines() if line.startswith("perennial_server_requests_total{")
    }
    assert counts == {
        'perennial_server_requests_total{code="200",route="/v1/predict"}': 1.0,
        'perennial_server_requests_total{code="200",route="/healthz"}': 1.0,
        'perennial_server_requests_total{code="405",route="/v1/predict"}': 1.0,
        'perennial_server_requests_total{code="200",route="/openapi.json"}': 1.0,
        'perennial_server_requests_total{code="404",route="other"}': 3.0,
    }


def test_openapi_documents_the_answers_and_the_served_features(tmp_path):
    settings = Settings(registry={"path": tmp_path / "reg"}, kafka={"bootstrap_servers": "127.0.0.1:1"})
    with TestClient(create_app(settings)) as c:
        assert "required" not in c.get("/openapi.json").json()["components"]["schemas"]["Features"]  # no model yet
        schema = FeatureSchema.fit(NAMES, np.random.default_rng(0).uniform(0, 10, (50, 2)))
        Registry(tmp_path / "reg").publish(state_numpy(TabularNet(2, hidden=8).state_dict()), schema, parent=None)
        c.app.app.state.store.refresh()
        doc = c.get("/openapi.json").json()
    features = doc["components"]["schemas"]["Features"]
    assert features["required"] == list(NAMES) and set(features["properties"]) == set(NAMES) and features["additionalProperties"] is False
    responses = doc["paths"]["/v1/predict"]["post"]["responses"]
    assert set(responses) == {"200", "413", "422", "503"}
    assert all(r["content"]["application/json"]["schema"] for r in responses.values())


def test_not_ready_without_a_model(tmp_path):
    settings = Settings(registry={"path": tmp_path / "empty"}, kafka={"bootstrap_servers": "127.0.0.1:1"})
    with TestClient(create_app(settings)) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "the registry has no version yet" in ready.json()["reason"]
        assert post(c, {"features": {}}).status_code == 503
        assert c.get("/healthz").status_code == 200


class RecordingSender:
    """Stands in for the Kafka producer of control commands (the real path is in tests/integration)."""

    def __init__(self):
        self.sent = []

    async def send(self, cmd):
        self.sent.append(cmd)

    def close(self):
        pass


def admin_client(tmp_path, token):
    reg = Registry(tmp_path / "reg")
    schema = FeatureSchema.fit(NAMES, np.random.default_rng(0).uniform(0, 10, (50, 2)))
    w = state_numpy(TabularNet(2, hidden=8).state_dict())
    reg.publish(w, schema, parent=None)
    reg.publish(w, schema, parent="v000001")
    settings = Settings(registry={"path": tmp_path / "reg"}, kafka={"bootstrap_servers": "127.0.0.1:1"}, serve={"admin_token": token})
    sender = RecordingSender()
    return TestClient(create_app(settings, sender=sender)), sender


def test_admin_endpoints_are_disabled_without_a_token(tmp_path):
    client, sender = admin_client(tmp_path, None)
    with client:
        for path in ("/v1/model/rollback", "/v1/learner/pause", "/v1/learner/resume", "/v1/learner/release-quarantine", "/v1/learner/concept-change"):
            r = client.post(path, headers={"authorization": "Bearer anything"})
            assert r.status_code == 403 and "disabled" in r.json()["error"]
    assert sender.sent == []


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic s3cret", "s3cret", "Bearer "])
def test_admin_endpoints_refuse_a_wrong_token(tmp_path, header):
    client, sender = admin_client(tmp_path, "s3cret")
    with client:
        r = client.post("/v1/learner/pause", headers={"authorization": header} if header else {}, content=b"not even json")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"  # the token first: the body is never read
    assert r.headers["connection"] == "close"
    assert sender.sent == []


def test_admin_bodies_over_the_limit_are_refused(tmp_path):
    client, sender = admin_client(tmp_path, "s3cret")
    with client:
        r = client.post("/v1/learner/pause", headers={"authorization": "Bearer s3cret"}, json={"reason": "x" * 20000})
        chunked = client.post("/v1/learner/pause", headers={"authorization": "Bearer s3cret"}, content=iter([b" " * 10000] * 2))
    assert r.status_code == 413 and "the limit is 16384" in r.json()["error"]
    assert chunked.status_code == 413 and "over the limit of 16384 bytes" in chunked.json()["error"]
    assert sender.sent == []


def test_admin_commands_are_validated_then_sent(tmp_path):
    client, sender = admin_client(tmp_path, "s3cret")
    auth = {"authorization": "Bearer s3cret"}
    with client:
        r = client.post("/v1/model/rollback", headers=auth)
        assert r.status_code == 202 and r.json()["command"]["version"] == "v000001"  # the parent
        assert client.post("/v1/model/rollback", headers=auth, json={"version": "v000009"}).status_code == 404
        assert client.post("/v1/model/rollback", headers=auth, json={"version": "v000002"}).status_code == 409  # already served
        assert client.post("/v1/model/rollback", headers=auth, json={"version": "../x"}).status_code == 422
        assert client.post("/v1/learner/pause", headers=auth, json={"reason": "incident 42"}).status_code == 202
        assert client.post("/v1/learner/resume", headers=auth).status_code == 202
        for bad in ({"rounds": 0}, {"rounds": "many"}, {"rounds": 5, "colour": "red"}):
            r = client.post("/v1/learner/concept-change", headers=auth, json=bad)
            assert r.status_code == 422, bad
        r = client.post("/v1/learner/concept-change", headers=auth, json={"rounds": 8, "reason": "fraud moved to night-time terminals"})
        assert r.status_code == 202 and r.json()["command"]["rounds"] == 8
        assert client.post("/v1/learner/concept-change", headers=auth).status_code == 202  # the learner's default rounds
    assert [c["action"] for c in sender.sent] == ["rollback", "pause", "resume", "concept_change", "concept_change"]
    assert sender.sent[1]["reason"] == "incident 42" and len({c["id"] for c in sender.sent}) == 5
    assert sender.sent[-1]["rounds"] is None and sender.sent[-2]["reason"] == "fraud moved to night-time terminals"


# -- a schema with optional and categorical features (issue 16) ----------------------------------




def unseen_metric(client) -> dict[str, float]:
    return {line.split()[0]: float(line.split()[1]) for line in client.get("/metrics").text.splitlines()
            if line.startswith("perennial_server_unseen_categories_total{")}


def test_optional_features_may_be_absent_or_null_and_categories_are_strings_scored_as_their_codes(declared, declared_registry):
    events = [
        {"id": "a", "features": {"amount": 3, "device_age": 4.5, "country": "GB", "channel": "app"}},
        {"id": "b", "features": {"amount": 3, "channel": "web"}},  # both optional features absent
        {"id": "c", "features": {"amount": 3, "device_age": None, "country": None, "channel": "web"}},  # null: as absent
        {"id": "d", "features": {"amount": 3, "device_age": 1, "country": "FR", "channel": "web"}},  # unseen: other
        {"id": "e", "features": {"amount": 3, "device_age": 1, "country": "ZZ", "channel": "web"}},
    ]
    r = post(declared, events)
    assert r.status_code == 200, r.text
    raw = [[3, 4.5, 3, 3], [3, np.nan, 1, 2], [3, np.nan, 1, 2], [3, 1, 0, 2], [3, 1, 0, 2]]  # codes: other 0, missing 1, then the vocabulary
    scores = [p["score"] for p in r.json()["predictions"]]
    assert scores == pytest.approx(served_scores(declared_registry, raw), abs=1e-6)
    assert scores[1] == scores[2] and scores[3] == scores[4]
    assert len({scores[0], scores[1], scores[3]}) == 3  # imputed, flagged and embedded: each input matters


def test_a_category_may_be_an_integer_or_a_boolean_taken_as_its_text(declared):
    scores = [post(declared, {"features": {"amount": 1, "country": value, "channel": "web"}}).json()["score"] for value in (7, "7", 7.0, True)]
    assert scores[0] == scores[1] == scores[2] == scores[3]


@pytest.mark.parametrize(
    "features, words, reason",
    [
        ({"device_age": 1, "country": "US", "channel": "web"}, "feature 'amount' is missing; the model expects amount, device_age, country, channel",
         "missing_feature"),
        ({"amount": 1, "country": "US"}, "feature 'channel' is missing", "missing_feature"),
        ({"amount": None, "channel": "web"}, "feature 'amount' must be a number, got null", "bad_value"),
        ({"amount": 1, "channel": None}, "feature 'channel' is a category", "bad_value"),
        ({"amount": 1, "channel": "web", "country": 7.5}, "feature 'country' is a category: a string, an integer or a boolean, got the number 7.5",
         "bad_value"),
        ({"amount": 1, "channel": "web", "device_age": "old"}, "feature 'device_age' must be a number", "bad_value"),
        ({"amount": 1, "channel": "web", "colour": "red"}, "unknown feature 'colour'", "unknown_feature"),
    ],
)
def test_declared_features_are_still_refused_naming_what_is_wrong(declared, features, words, reason):
    r = post(declared, {"features": features})
    assert r.status_code == 422 and words in r.json()["error"] and r.json()["reason"] == reason, r.text


def test_unseen_categories_are_counted_by_feature_and_only_when_scored(declared):
    assert unseen_metric(declared) == {'perennial_server_unseen_categories_total{feature="country"}': 0.0,
                                       'perennial_server_unseen_categories_total{feature="channel"}': 0.0}
    post(declared, [{"features": {"amount": 1, "country": c, "channel": "web"}} for c in ("FR", "US", "DE")])
    post(declared, {"features": {"amount": 1, "country": "FR", "channel": "phone"}})
    post(declared, [{"features": {"amount": 1, "country": "FR", "channel": "web"}}, {"features": {"amount": 1}}])  # refused: not counted
    assert unseen_metric(declared) == {'perennial_server_unseen_categories_total{feature="country"}': 3.0,
                                       'perennial_server_unseen_categories_total{feature="channel"}': 1.0}


def test_a_schema_of_numbers_only_has_no_unseen_categories_series(client):
    post(client, {"features": {"amount": 1, "hour": 1}})
    assert unseen_metric(client) == {}


def test_the_model_route_shows_the_schema_with_each_feature_declared(declared):
    doc = declared.get("/v1/model").json()
    assert doc["features"] == list(DECLARED.names)
    assert FeatureSchema.from_dict(doc["schema"]) == DECLARED  # the stored form: a client can rebuild the schema
    assert doc["schema"]["features"] == [
        {"name": "amount", "type": "number", "missing": False, "log1p": True, "mean": 1.0, "std": 1.5},
        {"name": "device_age", "type": "number", "missing": True, "log1p": False, "mean": 2.0, "std": 3.0},
        {"name": "country", "type": "category", "missing": True, "vocabulary_size": 2, "vocabulary": ["US", "GB"]},
        {"name": "channel", "type": "category", "missing": False, "vocabulary_size": 2, "vocabulary": ["web", "app"]},
    ]
    assert ModelInfo.model_validate(doc).feature_schema.features[2].vocabulary == ["US", "GB"]


def test_the_model_route_of_a_schema_of_numbers_only_shows_it_too(client):
    doc = client.get("/v1/model").json()
    ModelInfo.model_validate(doc)
    assert [f["type"] for f in doc["schema"]["features"]] == ["number", "number"] and "categories" not in doc["schema"]
    assert [f["missing"] for f in doc["schema"]["features"]] == [False, False]


def test_openapi_says_which_features_are_optional_and_which_are_categories(declared):
    doc = declared.get("/openapi.json").json()
    features = doc["components"]["schemas"]["Features"]
    assert features["required"] == ["amount", "channel"] and features["additionalProperties"] is False
    props = features["properties"]
    assert props["amount"] == {"type": "number"}
    assert props["device_age"]["type"] == ["number", "null"] and "optional" in props["device_age"]["description"]
    assert props["country"]["type"] == ["string", "null"] and "US, GB" in props["country"]["description"]
    assert props["channel"]["type"] == "string" and "scored as other" in props["channel"]["description"]
    model = doc["paths"]["/v1/model"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert model == {"$ref": "#/components/schemas/ModelInfo"} and "schema" in doc["components"]["schemas"]["ModelInfo"]["properties"]
