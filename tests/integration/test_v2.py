"""A V2 client we did not write: Triton's own ``tritonclient[http]`` reads the metadata of a real
`perennial serve` on a real port, checks readiness, and infers with both input forms, JSON and binary;
its scores are the ones /v1/predict gives for the same events. Concurrent V2 requests share forward
passes, and rows sent with event ids reach the prediction log on the real broker with them."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from perennial import package_version
from streams.predictions import parse_predictions
from streams.simulator import FEATURES

from .conftest import SIM, read_to_end, wait_for

pytestmark = pytest.mark.integration
N = 64


def test_tritonclient_reads_metadata_and_scores_as_v1_predict(stack):
    stack.start("serve")
    stack.wait_ready()
    rows = SIM.generate(46, 1).features[:N].astype(np.float32)
    events = [{"id": f"e{i}", "features": dict(zip(FEATURES, row.tolist(), strict=True))} for i, row in enumerate(rows)]
    v1 = httpx.post(f"{stack.url}/v1/predict", json=events, timeout=10).json()
    expected = np.array([p["score"] for p in v1["predictions"]])

    client = triton.InferenceServerClient(url=stack.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    server = {"name": "perennial", "version": package_version(), "extensions": ["binary_tensor_data"]}
    assert client.get_server_metadata() == server
    meta = client.get_model_metadata("perennial")
    assert meta["versions"] == [v1["version"]] and [t["name"] for t in meta["inputs"]] == list(FEATURES)
    assert client.is_model_ready("perennial") and client.is_model_ready("perennial", v1["version"])
    assert not client.is_model_ready("nope") and not client.is_model_ready("perennial", "v999999")

    def scores(inputs: list, binary: bool, version: str = "") -> np.ndarray:
        result = client.infer("perennial", inputs, model_version=version, request_id="r1",
                              outputs=[triton.InferRequestedOutput("score", binary_data=binary)])
        assert result.get_response()["model_version"] == v1["version"] and result.get_response()["id"] == "r1"
        return result.as_numpy("score")

    for binary in (True, False):
        matrix = triton.InferInput("features", [N, len(FEATURES)], "FP32")
        matrix.set_data_from_numpy(rows, binary_data=binary)
        np.testing.assert_allclose(scores([matrix], binary), expected, rtol=1e-5)
        per_feature = []
        for j, name in enumerate(FEATURES):
            column = triton.InferInput(name, [N], "FP64")
            column.set_data_from_numpy(rows[:, j].astype(np.float64), binary_data=binary)
            per_feature.append(column)
        np.testing.assert_allclose(scores(per_feature, binary, v1["version"]), expected, rtol=1e-5)

    short = triton.InferInput("features", [N, len(FEATURES) - 1], "FP32")
    short.set_data_from_numpy(np.ascontiguousarray(rows[:, 1:]))
    for model, inputs, status, words in (("nope", [matrix], "404", "unknown model 'nope'"),
                                         ("perennial", [short], "400", f"the model takes [N, {len(FEATURES)}]")):
        with pytest.raises(InferenceServerException) as refused:
            client.infer(model, inputs)
        assert refused.value.status() == status and words in refused.value.message()
    client.close()


def server_metric(url: str, name: str) -> float:
    line = next(x for x in httpx.get(f"{url}/metrics", timeout=5).text.splitlines() if x.startswith(name + " "))
    return float(line.rsplit(" ", 1)[1])


def test_concurrent_v2_requests_share_forward_passes(stack):
    """The issue asks V2 infer to share /v1/predict's micro-batching: requests on the wire together are
    scored by fewer forward passes than there are requests, every row once."""
    stack.start("serve")
    stack.wait_ready()
    requests, rows = 48, 4
    x = SIM.generate(46, 1).features[: requests * rows].astype(np.float32)
    bodies = [orjson.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [rows, len(FEATURES)],
                                        "data": x[i * rows : (i + 1) * rows].tolist()}]}) for i in range(requests)]
    wire = [f"POST /v2/models/perennial/infer HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            f"content-length: {len(b)}\r\nconnection: close\r\n\r\n".encode() + b for b in bodies]
    before = {m: server_metric(stack.url, f"perennial_server_forward_pass_rows_{m}") for m in ("count", "sum")}
    socks = [socket.create_connection(("127.0.0.1", stack.serve_port), timeout=30) for _ in wire]
    for sock, data in zip(socks, wire, strict=True):  # all but each request's last byte, then the last bytes together
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(data[:-1])
    in_flight = lambda: server_metric(stack.url, "perennial_server_requests_in_flight")
    wait_for(lambda: in_flight() >= requests, 10, "every request to wait for its last byte")
    # The last bytes arrive while the server is stopped, as they do in a pod whose CPU quota is spent:
    # without the pause, a server quicker than this client (or a loaded machine scheduling the two
    # apart) answers each request before the next one's last byte is sent, and nothing can be shared.
    server = stack.procs["serve"]
    server.send_signal(signal.SIGSTOP)
    try:
        for sock, data in zip(socks, wire, strict=True):
            sock.sendall(data[-1:])
    finally:
        server.send_signal(signal.SIGCONT)
    answers = []
    for sock in socks:
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        sock.close()
        head, _, body = received.partition(b"\r\n\r\n")
        answers.append((int(head.split(b" ", 2)[1]), body))
    assert [status for status, _ in answers] == [200] * requests, answers[:3]
    expected = {i: orjson.loads(b)["outputs"][0]["data"] for i, (_, b) in enumerate(answers)}
    alone = httpx.post(f"{stack.url}/v2/models/perennial/infer", content=bodies[7], timeout=10).json()
    np.testing.assert_allclose(expected[7], alone["outputs"][0]["data"], rtol=1e-5)  # its own rows' scores
    passes = server_metric(stack.url, "perennial_server_forward_pass_rows_count") - before["count"] - 1  # less the one alone
    scored = server_metric(stack.url, "perennial_server_forward_pass_rows_sum") - before["sum"] - rows
    assert scored == requests * rows  # every row in exactly one pass
    assert 1 <= passes < requests, f"{requests} concurrent V2 requests took {passes:.0f} forward passes: none shared"


def test_rows_with_event_ids_reach_the_prediction_log_with_them(stack):
    """Late labels are joined by event id against the prediction log: tritonclient sends each row's id
    as the BYTES input ``id`` (binary and JSON); those rows are logged with it, the rest counted."""
    stack.env["PERENNIAL_SERVE__PREDICTION_LOG"] = "true"
    stack.start("serve")
    stack.wait_ready()
    client = triton.InferenceServerClient(url=stack.url.removeprefix("http://"))
    x = SIM.generate(46, 1).features[:12].astype(np.float32)
    answered: dict[str, float] = {}
    for part, binary in ((slice(0, 5), True), (slice(5, 9), False)):
        features = triton.InferInput("features", list(x[part].shape), "FP32")
        features.set_data_from_numpy(x[part], binary_data=binary)
        event_ids = np.array([f"tx-{i}" for i in range(part.start, part.stop)], dtype=object)
        ids = triton.InferInput("id", [len(event_ids)], "BYTES")
        ids.set_data_from_numpy(event_ids, binary_data=binary)
        result = client.infer("perennial", [features, ids], request_id=f"r-{part.start}")
        answered.update(zip(event_ids, result.as_numpy("score").tolist(), strict=True))
    no_ids = triton.InferInput("features", list(x[9:].shape), "FP32")
    no_ids.set_data_from_numpy(x[9:])
    client.infer("perennial", [no_ids])
    client.close()

    sent = 'perennial_prediction_log_events_total{outcome="sent"}'
    wait_for(lambda: server_metric(stack.url, sent) == 9, 15, "9 events sent to the prediction log")
    logged = [p for r in read_to_end(stack.bootstrap, f"{stack.topic}.predictions") for p in parse_predictions(r.value, FEATURES)]
    assert sorted(p.id for p in logged) == sorted(f"tx-{i}" for i in range(9))  # once each, none without an id
    for p in logged:
        i = int(p.id.removeprefix("tx-"))
        assert np.array_equal(np.asarray(p.features, np.float32), x[i]) and p.version == "v000001"
        assert p.score == pytest.approx(answered[p.id], rel=1e-6) and abs(p.time - time.time()) < 60  # the time it was scored
    assert server_metric(stack.url, 'perennial_prediction_log_events_total{outcome="no_id"}') == 3
