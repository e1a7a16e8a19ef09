"""The one scoring path of the HTTP API, shared by ``POST /v1/predict`` (app.py) and the Open Inference
Protocol's infer route (v2.py): each protocol parses its own body into feature rows in schema order,
and both score them here, through the same micro-batcher, prediction log and metrics.

A request reads the served model once (``request``), so a swap while it is parsed or scored does not
affect it; its refusal, if any, is counted against that version.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from learners.scoring import ScoringModel
from service.batching import MicroBatcher
from service.errors import ApiError
from service.metrics import ServerMetrics
from service.model_store import ModelStore
from service.prediction_log import PredictionLog

SAMPLED_SCORES = 64  # scores of each request observed in the histogram: the cost per request stays bounded


class Predictor:
    def __init__(self, store: ModelStore, metrics: ServerMetrics, prediction_log: PredictionLog | None) -> None:
        self.store, self.metrics, self.prediction_log = store, metrics, prediction_log
        self.batcher = MicroBatcher(metrics.pass_rows.observe)

    @contextmanager
    def request(self) -> Iterator[ScoringModel]:
        """One predict request: the served model, read once (503 ``no_model`` without one); an
        ``ApiError`` raised inside is counted as a rejection by that version and passed on."""
        self.metrics.in_flight.inc()
        version = "none"
        try:
            model = self.store.model
            if model is None:
                raise ApiError(503, self.store.why_not_ready(), reason="no_model")
            version = model.version
            yield model
        except ApiError:
            self.metrics.predictions.labels("rejected", version).inc()
            raise
        finally:
            self.metrics.in_flight.dec()

    async def score(
        self, model: ScoringModel, rows: np.ndarray, ids: Sequence[Any], times: Sequence[Any],
    ) -> np.ndarray:
        """Fraud probabilities of ``rows`` (raw vectors as float32, schema order) by ``model``, in one
        forward pass shared with the requests parsed in the same turn of the event loop; logged (events
        with an id) and counted (and categories scored as other, by feature)."""
        scores = await self.batcher.score(model, rows)
        features = model.schema.features
        if self.prediction_log is not None:
            self.prediction_log.record(ids, times, rows, scores, model.version, features)
        self.metrics.predictions.labels("scored", model.version).inc(len(scores))
        if features.positions:
            self.metrics.count_unseen(features, rows)
        for s in scores[:SAMPLED_SCORES]:
            self.metrics.scores.observe(float(s))
        return scores
