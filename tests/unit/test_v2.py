"""The Open Inference Protocol (V2) routes, in process: metadata, readiness, both input forms, binary
tensors, and a 4xx naming each problem (tritonclient on a real port is in tests/integration/test_v2.py)."""

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from perennial import package_version
from perennial.settings import Settings
from service.app import create_app
from tests.unit.conftest import TWO_FEATURES as NAMES

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
        assert r.status_code == 503 and r.json() == {"error": "no model is loaded yet; the registry has no version"}


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
