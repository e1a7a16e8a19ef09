"""BentoML serving the same model: POST /predict with {"events": [...]} (BentoML names the body's
fields after the API's arguments); both services answer a list of predictions.

``Fraud`` scores each request alone. ``BatchedFraud`` is BentoML's batchable API: BentoML joins the
``events`` lists of the requests it gathers (up to PEER_MAX_BATCH_EVENTS events, BentoML counts
along the batch dimension) into one call and splits the answer back by request. BentoML picks its own
wait from the latencies it observes; its ``max_latency_ms`` is a deadline after which queued requests
are refused (503), left at its default.
"""

import os

import bentoml
from peer_model import Model


@bentoml.service(workers=1)
class Fraud:
    def __init__(self) -> None:
        self.model = Model()

    @bentoml.api
    def predict(self, events: list[dict]) -> list[dict]:
        return [{"fraud_probability": s} for s in self.model.score_events(events)]


@bentoml.service(workers=1)
class BatchedFraud:
    def __init__(self) -> None:
        self.model = Model()

    @bentoml.api(batchable=True, max_batch_size=int(os.environ.get("PEER_MAX_BATCH_EVENTS", "100")))
    def predict(self, events: list[dict]) -> list[dict]:
        return [{"fraud_probability": s} for s in self.model.score_events(events)]
