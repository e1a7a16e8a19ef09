"""What /v1/predict answers, as pydantic models: the route's OpenAPI schemas are generated from them,
and perennial.client validates answers with them. pydantic only, so a client needs no server libraries.
The route itself writes its answers with orjson (the hot path); tests check they validate here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PREDICT_REASONS = ("too_large", "not_json", "not_object", "empty_batch", "too_many_events", "bad_features", "missing_feature",
                   "unknown_feature", "bad_value", "no_model")
"""The ``reason`` codes of /v1/predict's refusals (a 4xx or a 503 body: ``{"error": ..., "reason": ...}``)."""

VERSION_PATTERN = r"^v\d{6}$"


class Prediction(BaseModel):
    """One scored event: /v1/predict's answer to a single event."""

    model_config = ConfigDict(frozen=True)

    id: Any = Field(description="the event's id, echoed as it was sent; null when it had none")
    score: float = Field(ge=0, le=1, description="fraud probability, calibrated on held-out events")
    version: str = Field(pattern=VERSION_PATTERN, description="the model version that scored it")


class Predictions(BaseModel):
    """/v1/predict's answer to a list of events: one prediction each, in order, all by one version."""

    model_config = ConfigDict(frozen=True)

    version: str = Field(pattern=VERSION_PATTERN, description="the model version that scored every event")
    predictions: list[Prediction]


class PredictError(BaseModel):
    """A refusal: a 4xx or a 503."""

    error: str = Field(description="what is wrong and what to fix")
    reason: Literal[PREDICT_REASONS] | None = Field(None, description="a code to branch on")  # type: ignore[valid-type]


PREDICT_ANSWER: TypeAdapter[Prediction | Predictions] = TypeAdapter(Prediction | Predictions)
"""What a 200 of /v1/predict holds (a client validates with it; the route writes it with orjson)."""
