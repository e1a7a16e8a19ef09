"""The Open Inference Protocol (V2) routes, in process: metadata, readiness, both input forms, binary
tensors, and a 4xx naming each problem (tritonclient on a real port is in tests/integration/test_v2.py)."""

import asyncio
import math

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from learners.registry import Registry
from perennial import package_version
from perennial.settings import Settings
from service.app import create_app
from tests.unit.conftest import TWO_FEATURES as NAMES
from tests.unit.conftest import served_scores

ROWS = [[3.0, 1.0], [250.5, 23.0], [0.0, 0.0]]
INFER = "/v2/models/perennial/infer"


def settings_for(tmp_path, **serve):
    return Settings(registry={"path": tmp_path / "reg"}, kafka={"bootstrap_servers": "127.0.0.1:1"},
                    serve={"max_batch": 3, "max_body_bytes": 2000, **serve})


@pytest.fixture
def client(tmp_path, two_feature_registry):
    with TestClient(create_app(settings_for(tmp_path))) as c:
        yield c


def v1_scores(client, rows=ROWS):
    events = [{"features": dict(zip(NAMES, row, strict=True))} for row in rows]
    r = client.post("/v1/predict", content=orjson.dumps(events))
    assert r.status_code == 200
    return [p["score"] for p in r.json()["predictions"]]


def infer(client, body, path=INFER, headers=None):
    return client.post(path, content=body if isinstance(body, bytes) else orjson.dumps(body), headers=headers or {})


def matrix(rows=ROWS, datatype="FP32", **extra):
    return {"name": "features", "datatype": datatype, "shape": [len(rows), len(rows[0])], "data": rows, **extra}


def column(name, data, shape=None, datatype="FP32"):
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


def test_server_metadata_and_health(client):
    server = {"name": "perennial", "version": package_version(), "extensions": ["binary_tensor_data"]}
    assert client.get("/v2").json() == server
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


@pytest.mark.parametrize("path", ["/v2/models/perennial", "/v2/models/perennial/versions/v000001"])
def test_model_metadata_lists_one_fp32_tensor_per_feature_in_schema_order(client, path):
    r = client.get(path)
    assert r.status_code == 200
    assert r.json() == {
        "name": "perennial", "versions": ["v000001"], "platform": "perennial",
        "inputs": [{"name": n, "datatype": "FP32", "shape": [-1]} for n in ("amount", "hour")],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
    }


def test_model_readiness_and_unknown_models_and_versions(client):
    assert client.get("/v2/models/perennial/ready").json() == {"ready": True, "name": "perennial"}
    assert client.get("/v2/models/perennial/versions/v000001/ready").status_code == 200
    for path in ("/v2/models/fraud", "/v2/models/fraud/ready", "/v2/models/fraud/versions/v000001"):
        r = client.get(path)
        assert r.status_code == 404 and r.json() == {"error": "unknown model 'fraud'; this server serves 'perennial'"}
    for path in ("/v2/models/perennial/versions/v000002", "/v2/models/perennial/versions/1/ready"):
        r = client.get(path)
        assert r.status_code == 400 and "is not served; the served version is v000001" in r.json()["error"]
    assert infer(client, {"inputs": [matrix()]}, "/v2/models/fraud/infer").status_code == 404
    assert infer(client, {"inputs": [matrix()]}, "/v2/models/perennial/versions/v000009/infer").status_code == 400


def test_the_model_name_is_a_setting(tmp_path):
    with TestClient(create_app(settings_for(tmp_path, model_name="fraud-scorer"))) as c:
        assert c.get("/v2/models/perennial").status_code == 404
        assert c.get("/v2/models/fraud-scorer").status_code == 503  # known, but the registry is empty


def test_a_matrix_scores_as_v1_predict_with_the_version_and_id(client):
    r = infer(client, {"id": "req-7", "inputs": [matrix()]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["model_name"] == "perennial" and doc["model_version"] == "v000001" and doc["id"] == "req-7"
    (out,) = doc["outputs"]
    assert out["name"] == "score" and out["datatype"] == "FP32" and out["shape"] == [3]
    np.testing.assert_allclose(out["data"], v1_scores(client), rtol=1e-6)
    versioned = infer(client, {"inputs": [matrix()]}, "/v2/models/perennial/versions/v000001/infer").json()
    assert "id" not in versioned and versioned["outputs"][0]["data"] == out["data"]


@pytest.mark.parametrize(
    "inputs",
    [
        [matrix(datatype="FP64", data=[v for row in ROWS for v in row])],  # flat, row-major
        [{"name": "input__0", "datatype": "INT64", "shape": [3, 2], "data": [[3, 1], [250, 23], [0, 0]]}],
        [column(n, [row[i] for row in ROWS]) for i, n in enumerate(NAMES)],
        [column(n, [[row[i]] for row in ROWS], [3, 1], "FP64") for i, n in reversed(list(enumerate(NAMES)))],
    ],
    ids=["fp64-flat", "int64-matrix", "fp32-per-feature", "fp64-per-feature-column-any-order"],
)
def test_both_input_forms_and_any_numeric_datatype_score_the_same_rows(client, inputs):
    r = infer(client, {"inputs": inputs})
    assert r.status_code == 200, r.text
    rows = ROWS if inputs[0]["datatype"] != "INT64" else [[3, 1], [250, 23], [0, 0]]
    np.testing.assert_allclose(r.json()["outputs"][0]["data"], v1_scores(client, rows), rtol=1e-6)


def binary_request(tensors: dict[str, np.ndarray], parameters=None):
    """A request of the binary tensor extension, as tritonclient sends it: JSON, then raw tensors."""
    datatype = {"float32": "FP32", "float64": "FP64"}
    head = {"inputs": [{"name": n, "datatype": datatype[str(a.dtype)], "shape": list(a.shape),
                        "parameters": {"binary_data_size": a.nbytes}} for n, a in tensors.items()]}
    if parameters:
        head["parameters"] = parameters
    head_bytes = orjson.dumps(head)
    body = head_bytes + b"".join(a.tobytes() for a in tensors.values())
    return body, {"Inference-Header-Content-Length": str(len(head_bytes))}


def test_binary_tensors_in_and_out(client):
    x = np.array(ROWS, np.float32)
    tensors = {"amount": x[:, 0].astype(np.float64), "hour": x[:, 1]}
    body, headers = binary_request(tensors, {"binary_data_output": True})
    r = infer(client, body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    size = int(r.headers["inference-header-content-length"])
    head = orjson.loads(r.content[:size])
    assert head["outputs"] == [{"name": "score", "datatype": "FP32", "shape": [3],
                                "parameters": {"binary_data_size": 12}}]
    np.testing.assert_allclose(np.frombuffer(r.content[size:], "<f4"), v1_scores(client), rtol=1e-6)
    json_out = {"inputs": [matrix()], "parameters": {"binary_data_output": True},
                "outputs": [{"name": "score", "parameters": {"binary_data": False}}]}
    assert "data" in infer(client, json_out).json()["outputs"][0]  # an output's own choice wins


def ids(values, shape=None):
    """The optional ``id`` input: each row's event id, as JSON strings."""
    return {"name": "id", "datatype": "BYTES", "shape": shape or [len(values)], "data": values}


def bytes_elements(values: list[bytes]) -> bytes:
    """BYTES elements as the binary tensor extension sends them: a 4-byte little-endian length, then the bytes."""
    return b"".join(len(v).to_bytes(4, "little") + v for v in values)


def binary_ids_request(rows: np.ndarray, raw_ids: bytes, n_ids: int, id_shape=None):
    """Binary features, then binary event ids (``raw_ids``, ``n_ids`` elements), as tritonclient sends them."""
    head = orjson.dumps({"inputs": [
        {"name": "features", "datatype": "FP32", "shape": list(rows.shape), "parameters": {"binary_data_size": rows.nbytes}},
        {"name": "id", "datatype": "BYTES", "shape": id_shape or [n_ids], "parameters": {"binary_data_size": len(raw_ids)}},
    ]})
    return head + rows.tobytes() + raw_ids, {"Inference-Header-Content-Length": str(len(head))}


BAD_IDS, BAD_IDS_HEADERS = binary_ids_request(np.ones((1, 2), np.float32), (9).to_bytes(4, "little") + b"ab", 1)
LATIN1_IDS, LATIN1_IDS_HEADERS = binary_ids_request(np.ones((1, 2), np.float32), bytes_elements(["café".encode("latin-1")]), 1)
NAN_BODY, NAN_HEADERS = binary_request({"features": np.array([[np.nan, 1.0]], np.float32)})
ONE_ROW, ONE_ROW_HEADERS = binary_request({"features": np.array([[1.0, 2.0]], np.float32)})


@pytest.mark.parametrize(
    "sent, words",
    [
        (b"{nope", "not valid JSON"),
        (b'{"inputs": [{"name": "f", "datatype": "FP32", "shape": [1, 2], "data": [NaN, 1]}]}', "NaN and Infinity"),
        ([1], "inference request object"),
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"id": 5, "inputs": [matrix()]}, "'id' must be a string"),
        ({"inputs": [matrix([r + [1.0] for r in ROWS])]}, "has shape [3, 3]; the model takes [N, 2]: amount, hour"),
        ({"inputs": [matrix(shape=[2, 2])]}, "holds 6 values; its shape holds 4"),
        ({"inputs": [matrix(shape=[3, -2])]}, "a shape is a list of sizes"),
        ({"inputs": [matrix(datatype="BYTES")]}, "datatype 'BYTES'; the model takes FP32, FP64, INT8"),
        ({"inputs": [matrix(datatype="BOOL", data=[[True, False]] * 3)]}, "datatype 'BOOL'"),
        ({"inputs": [matrix(datatype=["FP32"])]}, "datatype ['FP32']"),
        ({"inputs": [matrix(data=[[1, "2"]] * 3)]}, "is FP32: its values must be numbers"),
        ({"inputs": [matrix(data=[[1, True]] * 3)]}, "is FP32: its values must be numbers"),
        ({"inputs": [matrix(datatype="INT32", data=[[1, 2.5]] * 3)]}, "is INT32: its values must be integers"),
        ({"inputs": [matrix(datatype="INT8", data=[[1, 300]] * 3)]}, "beyond the range of INT8"),
        ({"inputs": [matrix(data=[[1e300, 1]] * 3)]}, "not a finite FP32"),
        ((NAN_BODY, NAN_HEADERS), "input 'features' holds a value that is not a finite FP32"),
        ({"inputs": [column("amount", [1])]},
         "feature 'hour' is missing; send one tensor per feature (amount, hour), each [N] or [N, 1], or one tensor"),
        ({"inputs": [column(n, [1]) for n in ("amount", "hour", "minute")]}, "input 'minute' is not a feature"),
        ({"inputs": [column("amount", [1])] * 2}, "input 'amount' is given twice"),
        ({"inputs": [column("amount", [1, 2]), column("hour", [1])]}, "different numbers of rows"),
        ({"inputs": [column(n, [1, 2], [1, 2]) for n in NAMES]}, "'amount' has shape [1, 2]; a feature's tensor is"),
        ({"inputs": [{"name": "f", "datatype": "FP32", "shape": [2]}]}, "neither 'data' nor parameters.binary_data"),
        ({"inputs": [matrix(shape=[0, 2], data=[])]}, "the inputs hold no rows"),
        ({"inputs": [matrix()], "outputs": [{"name": "label"}]}, "unknown output 'label'; the model gives 'score'"),
        ((ONE_ROW, {"Inference-Header-Content-Length": "99999"}), "Inference-Header-Content-Length is '99999'"),
        ((ONE_ROW + b"\0", ONE_ROW_HEADERS), "1 bytes of binary data follow"),
        ((ONE_ROW[:-1], ONE_ROW_HEADERS), "binary_data_size is 8; its shape [1, 2] of FP32 takes 8 bytes, and 7"),
        ((orjson.dumps({"inputs": [matrix()]}), {"Content-Encoding": "gzip"}), "compressed request bodies are not"),
        ({"inputs": [matrix(), ids(["a", "b"])]}, "input 'id' holds 2 ids; the features hold 3 rows"),
        ({"inputs": [matrix(), ids(["a", 2, "c"])]}, "input 'id' must hold 3 strings (its shape [3])"),
        ({"inputs": [matrix(), ids(["a", "b", "c"], [1, 3])]}, "the event ids are [N] or [N, 1]"),
        ({"inputs": [matrix(), ids(["a", "b", "c"]), ids(["d", "e", "f"])]}, "input 'id' is given twice"),
        ({"inputs": [ids(["a"])]}, "the inputs hold no features"),
        ({"inputs": [matrix(), {"name": "id", "datatype": "BYTES", "shape": [3]}]}, "input 'id' has neither 'data' nor"),
        ({"inputs": [column("amount", [1]), column("hour", [2]), column("id", [7])]},
         "input 'id' is not a feature of the model (each row's event id goes in a BYTES tensor named 'id')"),
        ((BAD_IDS, BAD_IDS_HEADERS), "input 'id': its 6 bytes of binary data do not hold 1 BYTES elements"),
        ((LATIN1_IDS, LATIN1_IDS_HEADERS), "input 'id' holds an id that is not UTF-8"),
    ],
)
def test_bad_requests_are_400_in_the_v2_error_format_naming_the_problem(client, sent, words):
    body, headers = sent if isinstance(sent, tuple) else (sent, None)  # a body, or a body and its headers
    r = infer(client, body, headers=headers)
    assert r.status_code == 400, r.text
    assert list(r.json()) == ["error"] and words in r.json()["error"]


def test_the_limits_of_v1_predict_apply(client):
    r = infer(client, {"inputs": [matrix(ROWS + ROWS[:1])]})
    assert r.status_code == 413 and r.json() == {"error": "4 rows in one request; the limit is 3"}
    r = infer(client, {"id": "x" * 3000, "inputs": [matrix()]})
    assert r.status_code == 413 and "limit is 2000" in r.json()["error"]


def test_without_a_model_the_v2_routes_answer_503(tmp_path):
    with TestClient(create_app(settings_for(tmp_path))) as c:
        assert c.get("/v2/health/live").status_code == 200
        ready = c.get("/v2/health/ready")
        assert ready.status_code == 503 and "the registry has no version yet" in ready.json()["error"]
        assert c.get("/v2/models/perennial").status_code == 503
        assert c.get("/v2/models/perennial/ready").status_code == 503
        r = infer(c, {"inputs": [matrix()]})
        assert r.status_code == 503 and r.json() == {"error": "no model is loaded yet; the registry has no version yet"}


def test_v2_requests_are_counted_under_their_route_and_as_predictions(client):
    infer(client, {"inputs": [matrix()]})
    infer(client, {"inputs": [matrix()]}, "/v2/models/perennial/versions/v000001/infer")
    infer(client, {"inputs": []})
    client.get("/v2/models/other-name")
    text = client.get("/metrics").text
    infer_route, versioned = "/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{version}/infer"
    metadata = "/v2/models/{model_name}"
    for code, route in (("200", infer_route), ("200", versioned), ("400", infer_route), ("404", metadata)):
        assert f'perennial_server_requests_total{{code="{code}",route="{route}"}} 1.0' in text
    assert 'perennial_server_predictions_total{outcome="scored",version="v000001"} 6.0' in text
    assert 'perennial_server_predictions_total{outcome="rejected",version="v000001"} 1.0' in text


def test_openapi_documents_the_v2_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    infer_doc = paths["/v2/models/{model_name}/infer"]["post"]
    assert infer_doc["requestBody"]["content"]["application/json"]["schema"]["required"] == ["inputs"]
    assert set(infer_doc["responses"]) >= {"200", "400", "404", "413", "503"}
    assert {"/v2", "/v2/health/ready", "/v2/models/{model_name}/versions/{version}/ready"} <= set(paths)


def test_concurrent_v2_and_v1_requests_share_one_forward_pass_and_get_their_own_scores(client):
    """V2 infer goes through /v1/predict's micro-batcher: requests parsed in the same turn of the
    event loop, of either protocol, in any input form, are scored by one forward pass."""
    x = np.array(ROWS, np.float32)
    binary, binary_headers = binary_request({"features": x[:2]})
    v2 = [orjson.dumps({"inputs": [matrix(ROWS[i:] or ROWS)]}) for i in range(3)]
    v2 += [orjson.dumps({"inputs": [column(n, [row[j] for row in ROWS]) for j, n in enumerate(NAMES)]}), binary]
    headers = [{}] * 4 + [binary_headers]
    v1 = [orjson.dumps([{"id": f"e{i}", "features": dict(zip(NAMES, row, strict=True))} for row in ROWS[i:]]) for i in range(3)]
    alone_v2 = [infer(client, body, headers=h).json()["outputs"][0]["data"] for body, h in zip(v2[:4], headers)]
    alone_v2.append(v1_scores(client, ROWS[:2]))
    alone_v1 = [v1_scores(client, ROWS[i:]) for i in range(3)]
    passes, rows = (metric(client, f"perennial_server_forward_pass_rows_{m}") for m in ("count", "sum"))

    async def call(path: str, body: bytes, extra: dict[str, str]):
        sent, messages = [], [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        head += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        scope = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "root_path": "", "query_string": b"", "headers": head, "server": ("testserver", 80), "client": ("test", 1)}
        await client.app(scope, receive, send)
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")

    async def together():
        calls = [call(INFER, body, h) for body, h in zip(v2, headers)] + [call("/v1/predict", body, {}) for body in v1]
        return await asyncio.wait_for(asyncio.gather(*calls), 10)

    answers = asyncio.run(together())
    assert [status for status, _ in answers] == [200] * len(answers), answers
    for (_, body), alone in zip(answers[: len(v2)], alone_v2, strict=True):
        assert orjson.loads(body)["outputs"][0]["data"] == pytest.approx(alone, abs=1e-6)  # its own rows', as alone
    for (_, body), alone in zip(answers[len(v2):], alone_v1, strict=True):
        assert [p["score"] for p in orjson.loads(body)["predictions"]] == pytest.approx(alone, abs=1e-6)
    assert metric(client, "perennial_server_forward_pass_rows_count") - passes == 1  # all eight requests, one pass
    assert metric(client, "perennial_server_forward_pass_rows_sum") - rows == 3 + 2 + 1 + 3 + 2 + 3 + 2 + 1


def metric(client, name: str) -> float:
    line = next(x for x in client.get("/metrics").text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


def test_rows_sent_with_event_ids_are_logged_with_them_and_rows_without_are_counted(tmp_path, two_feature_registry, monkeypatch):
    """The prediction log is what late labels are joined against: a V2 row with an id (the ``id``
    BYTES input, JSON or binary) is logged with it, its features and its score, like a /v1 event."""
    from service import app as app_module
    from service.prediction_log import PredictionLog

    recorded = []

    class Recording(PredictionLog):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "start": False})  # no Kafka: what would be sent stays queued

        def record(self, ids, times, rows, scores, version, names):
            recorded.append((list(ids), list(times), rows.copy(), scores.copy(), version, tuple(names)))
            super().record(ids, times, rows, scores, version, names)

    monkeypatch.setattr(app_module, "PredictionLog", Recording)
    x = np.array(ROWS, np.float32)
    with TestClient(create_app(settings_for(tmp_path, prediction_log=True))) as c:
        as_json = infer(c, {"id": "request-1", "inputs": [matrix(), ids(["tx-1", "tx-2", "tx-3"])]})
        body, headers = binary_ids_request(x[:2], bytes_elements([b"tx-4", "tx-\u00e9".encode()]), 2, [2, 1])
        as_binary = infer(c, body, headers=headers)
        without = infer(c, {"id": "request-3", "inputs": [matrix()]})
        assert [r.status_code for r in (as_json, as_binary, without)] == [200] * 3, (as_json.text, as_binary.text)
        text = c.get("/metrics").text
    scores = [r.json()["outputs"][0]["data"] for r in (as_json, as_binary, without)]
    assert [event_ids for event_ids, *_ in recorded] == [["tx-1", "tx-2", "tx-3"], ["tx-4", "tx-\u00e9"], [None] * 3]
    for (_, times, rows, logged, version, names), sent, answered in zip(recorded, (x, x[:2], x), scores, strict=True):
        assert times == [None] * len(sent)  # logged at the time of scoring
        assert np.array_equal(rows, sent) and logged.tolist() == pytest.approx(answered, abs=1e-6)
        assert version == "v000001" and names == NAMES
    assert 'perennial_prediction_log_events_total{outcome="queued"} 5.0' in text
    assert 'perennial_prediction_log_events_total{outcome="no_id"} 3.0' in text


# -- a schema with optional and categorical features (issue 16) ----------------------------------




def strings(name, values, shape=None):
    """A BYTES tensor of JSON strings (a categorical feature's, or the ids)."""
    return {"name": name, "datatype": "BYTES", "shape": shape or [len(values)], "data": values}


def test_the_metadata_lists_a_categorical_feature_as_bytes(declared):
    inputs = declared.get("/v2/models/perennial").json()["inputs"]
    assert inputs == [{"name": "amount", "datatype": "FP32", "shape": [-1]}, {"name": "device_age", "datatype": "FP32", "shape": [-1]},
                      {"name": "country", "datatype": "BYTES", "shape": [-1]}, {"name": "channel", "datatype": "BYTES", "shape": [-1]}]


def test_categories_by_key_and_missing_optional_features_score_as_v1_predict(declared, declared_registry):
    r = infer(declared, {"inputs": [column("amount", [3.0, 3.0, 3.0, 8.0]), strings("country", ["GB", "FR", None, "US"]),
                                    strings("channel", [["app"], ["web"], ["web"], ["phone"]], [4, 1])]})  # device_age left out: missing
    assert r.status_code == 200, r.text
    raw = [[3, np.nan, 3, 3], [3, np.nan, 0, 2], [3, np.nan, 1, 2], [8, np.nan, 2, 0]]
    np.testing.assert_allclose(r.json()["outputs"][0]["data"], served_scores(declared_registry, raw), rtol=1e-6)
    events = [{"features": {"amount": 3, "country": "GB", "channel": "app"}}, {"features": {"amount": 3, "country": "FR", "channel": "web"}},
              {"features": {"amount": 3, "country": None, "channel": "web"}}, {"features": {"amount": 8, "country": "US", "channel": "phone"}}]
    v1 = [p["score"] for p in declared.post("/v1/predict", content=orjson.dumps(events)).json()["predictions"]]
    np.testing.assert_allclose(r.json()["outputs"][0]["data"], v1, rtol=1e-6)
    text = declared.get("/metrics").text
    assert 'perennial_server_unseen_categories_total{feature="country"} 2.0' in text  # FR, once by each protocol
    assert 'perennial_server_unseen_categories_total{feature="channel"} 2.0' in text


def test_binary_bytes_categories_and_nan_for_an_optional_number(declared, declared_registry):
    amount, device_age = np.float32([3.0, 5.0]), np.float64([np.nan, 2.5])
    country, channel = bytes_elements([b"GB", "Z\u00fcrich".encode()]), bytes_elements([b"web", b"app"])
    head = orjson.dumps({"inputs": [
        {"name": "amount", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": amount.nbytes}},
        {"name": "device_age", "datatype": "FP64", "shape": [2, 1], "parameters": {"binary_data_size": device_age.nbytes}},
        {"name": "country", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(country)}},
        {"name": "channel", "datatype": "BYTES", "shape": [2, 1], "parameters": {"binary_data_size": len(channel)}},
    ]})
    body = head + amount.tobytes() + device_age.tobytes() + country + channel
    r = infer(declared, body, headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["outputs"][0]["data"], served_scores(declared_registry, [[3, np.nan, 3, 2], [5, 2.5, 0, 3]]), rtol=1e-6)


def declared_binary(name: str, values: np.ndarray, others: list) -> tuple[bytes, dict[str, str]]:
    """One binary numeric tensor ``name`` beside JSON tensors ``others``."""
    head = orjson.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": [len(values)], "parameters": {"binary_data_size": values.nbytes}},
                                    *others]})
    return head + values.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


REQUIRED_NAN = declared_binary("amount", np.float32([np.nan]), [strings("channel", ["web"])])
OPTIONAL_INF = declared_binary("device_age", np.float32([np.inf]), [column("amount", [1.0]), strings("channel", ["web"])])


@pytest.mark.parametrize(
    "sent, words",
    [
        (REQUIRED_NAN, "input 'amount' holds a value that is not a finite FP32"),
        (OPTIONAL_INF, "input 'device_age' holds a value that is not a finite FP32"),
        ({"inputs": [column("amount", [1.0]), column("channel", [1.0])]},
         "input 'channel' is a categorical feature: send it as a BYTES tensor of strings, not FP32"),
        ({"inputs": [column("amount", [1.0]), strings("channel", [None])]}, "input 'channel' must hold 1 strings (its shape [1])"),
        ({"inputs": [column("amount", [1.0]), strings("channel", [7])]}, "input 'channel' must hold 1 strings"),
        ({"inputs": [column("amount", [1.0]), strings("country", [7], [1]), strings("channel", ["web"])]},
         "input 'country' must hold 1 strings (or nulls: missing)"),
        ({"inputs": [column("amount", [1.0]), strings("channel", ["web"], [1, 2])]}, "'channel' has shape [1, 2]; the values are [N] or [N, 1]"),
        ({"inputs": [strings("channel", ["web"])]}, "feature 'amount' is missing; send one tensor per feature (amount, device_age, country, "
                                                    "channel), each [N] or [N, 1], BYTES for a categorical one (country, channel)"),
        ({"inputs": [column("amount", [1.0])]}, "feature 'channel' is missing"),
        ({"inputs": [matrix([[1.0, 2.0, 2.0, 2.0]])]}, "input 'features' is a matrix; the model has categorical features"),
        ({"inputs": [column("amount", [1.0]), strings("device_age", ["old"]), strings("channel", ["web"])]},
         "input 'device_age' has datatype 'BYTES'; the model takes FP32"),
        ({"inputs": [column("amount", [1.0, 2.0]), strings("channel", ["web"])]}, "different numbers of rows"),
    ],
)
def test_declared_features_refused_in_v2_naming_the_problem(declared, sent, words):
    body, headers = sent if isinstance(sent, tuple) else (sent, None)
    r = infer(declared, body, headers=headers)
    assert r.status_code == 400 and words in r.json()["error"], r.text


def test_nan_is_missing_in_the_matrix_only_in_an_optional_feature_column(tmp_path):
    """Numbers only, one optional: the matrix form stays, NaN allowed in that column alone."""
    import torch

    from learners.model import TabularNet, state_numpy
    from learners.schema import FeatureSchema

    torch.manual_seed(0)
    schema = FeatureSchema(NAMES, (True, False), (1.0, 2.0), (1.0, 1.0), optional=(False, True))
    Registry(tmp_path / "reg").publish(state_numpy(TabularNet.for_schema(schema, hidden=8).state_dict()), schema, parent=None)
    with TestClient(create_app(settings_for(tmp_path))) as c:
        body, headers = binary_request({"features": np.float32([[3.0, np.nan], [4.0, 1.0]])})
        r = infer(c, body, headers=headers)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], served_scores(tmp_path / "reg", [[3.0, np.nan], [4.0, 1.0]]), rtol=1e-6)
        body, headers = binary_request({"features": np.float32([[np.nan, 1.0]])})
        r = infer(c, body, headers=headers)
        assert r.status_code == 400 and "in the column of a required feature" in r.json()["error"]
        assert [i["datatype"] for i in c.get("/v2/models/perennial").json()["inputs"]] == ["FP32", "FP32"]


@pytest.mark.parametrize("name", [["amount"], {"a": 1}, 5, None])
def test_an_input_named_by_no_string_is_a_400_for_any_schema(client, declared, name):
    for c in (client, declared):
        r = infer(c, {"inputs": [{"name": name, "datatype": "BYTES", "shape": [1], "data": ["x"]}]})
        assert r.status_code == 400 and "must be an object with a 'name'" in r.json()["error"], r.text


@pytest.mark.parametrize("fails", ["nan", "raise"])
def test_a_network_failing_on_some_rows_fails_those_requests_only_with_json_500s(tmp_path, fails):
    """A network of a user's own may give NaN, or raise, on rows it was never meant for: the request
    holding them gets a JSON 500 on /v1 and V2 alike (never a null score in a 200), every other
    request its scores, and the score histogram stays finite."""
    import torch

    from learners.model import state_numpy
    from learners.network import NetworkSpec, build
    from learners.schema import FeatureSchema

    torch.manual_seed(0)
    spec = NetworkSpec.parse("tests.unit.custom_networks:faulty", orjson.dumps({"fails": fails}).decode())
    schema = FeatureSchema(NAMES, (False, False), (0.0, 0.0), (1.0, 1.0))
    Registry(tmp_path / "reg").publish(state_numpy(build(spec, schema).state_dict()), schema, parent=None, network=spec)
    with TestClient(create_app(settings_for(tmp_path))) as c:
        fine = c.post("/v1/predict", json=[{"features": {"amount": 1.0, "hour": 3.0}}])
        assert fine.status_code == 200 and 0 < fine.json()["predictions"][0]["score"] < 1
        bad = c.post("/v1/predict", json=[{"features": {"amount": 1.0, "hour": 3.0}}, {"features": {"amount": 9.0, "hour": 3.0}}])
        assert bad.status_code == 500 and bad.json() == {"error": "internal error; the server log has the cause"}
        r = infer(c, {"inputs": [matrix([[9.0, 3.0]])]})
        assert r.status_code == 500 and r.json() == {"error": "internal error; the server log has the cause"}
        assert infer(c, {"inputs": [matrix([[1.0, 3.0]])]}).status_code == 200
        text = c.get("/metrics").text
        total = next(line for line in text.splitlines() if line.startswith("perennial_server_fraud_score_sum"))
        assert math.isfinite(float(total.split()[-1])), total


def test_a_boolean_category_is_one_key_in_any_spelling_on_v2_as_on_v1():
    from service.v2 import parse_infer
    from streams.events import MISSING, OTHER, Features, feature_vector

    features = Features(("flag", "c"), optional={"c"}, categories={"flag": {"true": 2, "false": 3}, "c": {"US": 2}})
    body = orjson.dumps({"inputs": [{"name": "flag", "datatype": "BYTES", "shape": [5], "data": ["true", "True", "TRUE", "FALSE", "x"]},
                                    {"name": "c", "datatype": "BYTES", "shape": [5], "data": ["US", "", None, "x", "US"]}]})
    rows = parse_infer(body, None, features, 8).rows
    assert rows[:, 0].tolist() == [2, 2, 2, 3, OTHER] and rows[:, 1].tolist() == [2, OTHER, MISSING, OTHER, 2]
    v1 = [feature_vector({"flag": f, "c": c}, features) for f, c in ((True, "US"), ("TRUE", ""), ("False", None), ("x", "x"))]
    assert v1 == [(2, 2), (2, OTHER), (3, MISSING), (OTHER, OTHER)]
