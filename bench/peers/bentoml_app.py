"""BentoML serving the same model: POST /predict with {"events": [...]} (BentoML names the body's
fields after the API's arguments)."""

import bentoml
from peer_model import Model


@bentoml.service(workers=1)
class Fraud:
    def __init__(self) -> None:
        self.model = Model()

    @bentoml.api
    def predict(self, events: list[dict]) -> dict:
        return {"predictions": [{"fraud_probability": s} for s in self.model.score_events(events)]}
