"""MLServer custom runtime serving the same model over the V2 inference protocol (a FP32 tensor of
the same feature rows): POST /v2/models/fraud/infer.

Adaptive batching is MLServer's own, turned on by ``max_batch_size`` and ``max_batch_time`` in
model-settings.json (bench/peers.py writes them): MLServer joins the tensors of the requests it
gathers before ``predict`` and splits the outputs after it.
"""

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from peer_model import Model


class FraudModel(MLModel):
    async def load(self) -> bool:
        self.model = Model()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        scores = self.model.score_matrix(x)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("fraud_probability", scores)])
