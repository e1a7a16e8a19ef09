"""A V2 client we did not write: Triton's own ``tritonclient[http]`` reads the metadata of a real
`perennial serve` on a real port, checks readiness, and infers with both input forms, JSON and binary;
its scores are the ones /v1/predict gives for the same events."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from perennial import package_version
from streams.simulator import FEATURES

from .conftest import SIM

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
