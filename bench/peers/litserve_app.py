"""LitServe serving the same model: POST /predict with the same JSON bodies as /v1/predict."""

import os

import litserve as ls
from peer_model import Model


class FraudAPI(ls.LitAPI):
    def setup(self, device):  # noqa: ANN001
        self.model = Model()

    def decode_request(self, request):  # noqa: ANN001
        return request if isinstance(request, list) else [request]

    def predict(self, events):  # noqa: ANN001
        return self.model.score_events(events)

    def encode_response(self, scores):  # noqa: ANN001
        return {"predictions": [{"fraud_probability": s} for s in scores]}


if __name__ == "__main__":
    server = ls.LitServer(FraudAPI(), accelerator="cpu", workers_per_device=1)
    server.run(port=int(os.environ["PEER_PORT"]), generate_client_file=False)
