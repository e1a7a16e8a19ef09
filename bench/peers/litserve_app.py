"""LitServe serving the same model: POST /predict with the same JSON bodies as /v1/predict.

With PEER_MAX_BATCH set, LitServe's batching is on: it gathers up to that many requests, waiting at
most PEER_MAX_WAIT_MS for them, and ``batch`` joins their events into one forward pass that
``unbatch`` splits back by request.
"""

import os

import litserve as ls
from peer_model import Model


class FraudAPI(ls.LitAPI):
    def setup(self, device):
        self.model = Model()

    def decode_request(self, request):
        return request if isinstance(request, list) else [request]

    def predict(self, events):
        return self.model.score_events(events)

    def encode_response(self, scores):
        return {"predictions": [{"fraud_probability": s} for s in scores]}


class BatchedFraudAPI(FraudAPI):
    def batch(self, requests):
        return [e for events in requests for e in events], [len(events) for events in requests]

    def predict(self, batch):
        events, sizes = batch
        return self.model.score_events(events), sizes

    def unbatch(self, output):
        scores, sizes = output
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [scores[s : s + n] for s, n in zip(starts, sizes)]


if __name__ == "__main__":
    if os.environ.get("PEER_MAX_BATCH"):
        api = BatchedFraudAPI(max_batch_size=int(os.environ["PEER_MAX_BATCH"]), batch_timeout=float(os.environ["PEER_MAX_WAIT_MS"]) / 1000)
    else:
        api = FraudAPI()
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(port=int(os.environ["PEER_PORT"]), generate_client_file=False)
