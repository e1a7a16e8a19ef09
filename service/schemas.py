"""What /v1/predict and /v1/model answer, as pydantic models: the route's OpenAPI schemas are generated from them,
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


class FeatureInfo(BaseModel):
    """One feature of the served schema: its declaration (name, type, missing: what ``perennial pretrain``
    writes and ``--schema`` reads), then what was fitted: a number's normalisation or a category's vocabulary."""

    name: str
    type: Literal["number", "category"]
    missing: bool = Field(description="true: the feature may be absent or null (imputed and flagged as missing)")
    log1p: bool | None = Field(None, description="a number: taken through log1p before standardisation")
    mean: float | None = Field(None, description="a number: the mean it is standardised with (and a missing one imputed with)")
    std: float | None = Field(None, description="a number: the standard deviation it is standardised with")
    vocabulary_size: int | None = Field(None, ge=0, description="a category: how many values it knows")
    vocabulary: list[str] | None = Field(None, description="a category: the values it knows, most frequent first; any other is scored as other")


class SchemaInfo(BaseModel):
    """The served version's feature schema: its stored form (``FeatureSchema.from_dict`` reads it back),
    and ``features``, one description per feature in schema order."""

    names: list[str]
    log1p: list[bool]
    mean: list[float]
    std: list[float]
    optional: list[bool] | None = Field(None, description="per feature, whether it may be missing (absent: none may)")
    categories: list[list[str] | None] | None = Field(None, description="per feature, a category's vocabulary or null (absent: numbers only)")
    features: list[FeatureInfo]


class ModelInfo(BaseModel):
    """What GET /v1/model answers: the served version, its features and schema, manifest and the learner's last decisions."""

    version: str = Field(pattern=VERSION_PATTERN)
    features: list[str] = Field(description="the feature names in schema order")
    feature_schema: SchemaInfo = Field(alias="schema")
    manifest: dict[str, Any] = Field(description="the version's manifest in the registry")
    decisions: Any = Field(description="the learner's last gate decisions, or an error reading them")


PREDICT_ANSWER: TypeAdapter[Prediction | Predictions] = TypeAdapter(Prediction | Predictions)
"""What a 200 of /v1/predict holds (a client validates with it; the route writes it with orjson)."""
