"""`perennial serve`: the HTTP API. ``create_app(settings)`` builds it; nothing runs at import time.

- ``POST /v1/predict``: one event ``{"id": ..., "features": {...}}`` or a list of them; returns the
  fraud probability and the model version for each.
- ``GET /v1/model``: the served version, its manifest and gate report.
- ``GET /healthz`` (process up), ``GET /readyz`` (a model is loaded), ``GET /metrics``.
- ``/v2/...``: the Open Inference Protocol (KServe V2, Triton, MLServer) beside /v1/predict (v2.py).

The predict body is parsed with orjson and checked by the same validation as labeled events, so a
request is refused for the same reasons an event is dead-lettered, with a message naming the problem.
It is parsed with the served schema's declarations (``FeatureSchema.features``): a feature declared
optional may be absent or null (scored imputed), a categorical one takes a string (or an integer or a
boolean, taken as its text); a category outside the vocabulary is scored as other and counted
(``perennial_server_unseen_categories_total{feature}``). ``GET /v1/model`` shows the schema (``schema``:
``FeatureSchema.to_dict()``, which ``FeatureSchema.from_dict`` reads back, and ``features``, one
description per feature; see ``service.schemas.ModelInfo``).

``POST /v1/predict`` is answered by a lean ASGI front (``PredictFront``, front.py) before FastAPI's
router and middleware stack; every other request, and the route's documentation in
``/openapi.json`` (with the served model's feature names), is FastAPI's. Both paths run the same
``answer``; it and the V2 infer route score through one ``Predictor`` (predictor.py), whose forward
pass is shared with the requests parsed in the same turn of the event loop (batching.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic.json_schema import models_json_schema

from learners.registry import Registry, RegistryError
from learners.schema import FeatureSchema
from perennial import package_version
from perennial.settings import Settings
from service.admin import CommandSender, admin_router
from service.errors import ApiError, json_response
from service.front import PREDICT_ROUTE, Answer, PredictFront, RequestMetrics, join_limited
from service.metrics import ServerMetrics
from service.model_store import Announcements, Follower, ModelStore
from service.prediction_log import PredictionLog
from service.predictor import Predictor
from service.schemas import ModelInfo, PredictError, Prediction, Predictions
from service.v2 import v2_router
from streams import kafka as kio
from streams.events import EventError, feature_vector


def _schema(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _predict_operation(max_batch: int, max_body_bytes: int) -> dict[str, Any]:
    """The route's request body and answers in /openapi.json; ``Features`` is the served model's (below)."""
    event = _schema("Event")

    def error(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": _schema("PredictError")}}}

    body = {"oneOf": [event, {"type": "array", "items": event, "minItems": 1, "maxItems": max_batch}]}
    scored = {"oneOf": [_schema("Prediction"), _schema("Predictions")]}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": {"description": "The fraud probability of each event, and the version that scored it", "content": {"application/json": {"schema": scored}}},
            "413": error(f"The body is over {max_body_bytes} bytes or holds more than {max_batch} events"),
            "422": error("The body names a missing or unknown feature, a non-number, or is empty"),
            "503": error("No model is loaded yet"),
        },
    }


def _feature_property(vocabulary: tuple[str, ...] | None, optional: bool) -> dict[str, Any]:
    """One feature's value in ``Features``: a number or a category's string, null allowed where optional."""
    if vocabulary is None:
        prop: dict[str, Any] = {"type": ["number", "null"] if optional else "number"}
    else:
        shown = ", ".join(vocabulary[:10]) + (", ..." if len(vocabulary) > 10 else "")
        prop = {"type": ["string", "null"] if optional else "string",
                "description": f"a category ({len(vocabulary)} known: {shown}); an integer or a boolean is taken as its text, "
                               "another value is scored as other"}
    if optional:
        prop["description"] = " ".join(filter(None, [prop.get("description"), "optional: may be absent or null (scored as missing)"]))
    return prop


def _predict_schemas(schema: FeatureSchema | None) -> dict[str, Any]:
    """Schemas of the predict route; with a model served, its features are the properties of
    ``Features``, required unless declared optional, strings where categorical (a client, or a
    fuzzer, learns from the document what to send)."""
    features: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "number"}}
    if schema is not None:
        properties = {n: _feature_property(v, o) for n, v, o in zip(schema.names, schema.categories, schema.optional)}
        features = {"type": "object", "properties": properties, "required": [n for n, o in zip(schema.names, schema.optional) if not o],
                    "additionalProperties": False}
    _, answers = models_json_schema([(Prediction, "serialization"), (Predictions, "serialization"), (PredictError, "serialization")],
                                    ref_template="#/components/schemas/{model}")
    return {
        "Features": features,
        "Event": {"type": "object", "required": ["features"], "properties": {"id": {"type": "string"}, "features": _schema("Features")}},
        **answers["$defs"],
    }


def served_openapi(base: Callable[[], dict[str, Any]], store: ModelStore) -> Callable[[], dict[str, Any]]:
    """FastAPI's document (built once by ``base``) with the predict schemas of the model served now."""

    def document() -> dict[str, Any]:
        doc, model = base(), store.model
        components = doc.get("components", {})
        schemas = {**components.get("schemas", {}), **_predict_schemas(model.schema if model else None)}
        return {**doc, "components": {**components, "schemas": schemas}}

    return document


def schema_info(schema: FeatureSchema) -> dict[str, Any]:
    """``GET /v1/model``'s ``schema`` (``ModelInfo``): the stored form, and a description per feature."""
    features: list[dict[str, Any]] = []
    for entry, vocabulary, log1p, mean, std in zip(schema.declaration(), schema.categories, schema.log1p, schema.mean, schema.std):
        fitted = {"log1p": log1p, "mean": mean, "std": std} if vocabulary is None else \
            {"vocabulary_size": len(vocabulary), "vocabulary": list(vocabulary)}
        features.append({**entry, **fitted})
    return {**schema.to_dict(), "features": features}


def parse_predict(body: bytes, names: Sequence[str], max_batch: int) -> tuple[list[Any], list[Any], np.ndarray, bool]:
    """Event ids, event times (as given, None when absent), raw vectors in schema order, and whether
    the body was a list. ``names`` is the schema's ``features`` (or plain names: numbers only)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, f"body is not valid JSON ({exc.msg}); NaN and Infinity are not allowed", reason="not_json") from None
    single = isinstance(doc, dict)
    events = [doc] if single else doc
    if not isinstance(events, list):
        raise ApiError(422, "body must be an event object or a list of events", reason="not_object")
    if not events:
        raise ApiError(422, "the list of events is empty", reason="empty_batch")
    if len(events) > max_batch:
        raise ApiError(413, f"{len(events)} events in one request; the limit is {max_batch}", reason="too_many_events")
    rows, ids, times = [], [], []
    for i, event in enumerate(events):
        prefix = "" if single else f"event {i}: "
        if not isinstance(event, dict):
            raise ApiError(422, f"{prefix}each event must be an object with 'features'", reason="not_object")
        try:
            rows.append(feature_vector(event.get("features"), names, prefix))
        except EventError as exc:
            raise ApiError(422, exc.message, reason=exc.reason) from None
        ids.append(event.get("id"))
        times.append(event.get("time"))
    return ids, times, _matrix(rows, names, single), not single


def _matrix(rows: list[tuple[float, ...]], names: Sequence[str], single: bool) -> np.ndarray:
    """The rows as one float32 matrix, refused unless each row holds one value per feature: a row of
    another width must fail its own request, never the forward pass it would share."""
    try:
        with np.errstate(over="ignore"):  # a finite value beyond float32 becomes inf: the schema clips it like any outlier
            matrix = np.asarray(rows, dtype=np.float32)
    except ValueError:  # rows of different widths
        matrix = None
    if matrix is None or matrix.shape != (len(rows), len(names)):
        bad = next(i for i, row in enumerate(rows) if len(row) != len(names))
        prefix = "" if single else f"event {bad}: "
        raise ApiError(422, f"{prefix}the features do not match the model's; the model expects {', '.join(names)}", reason="bad_features")
    return matrix


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (declared or streamed)."""
    return await join_limited(request.stream(), request.headers.get("content-length"), limit)


def create_app(
    settings: Settings, store: ModelStore | None = None, metrics: ServerMetrics | None = None, sender: CommandSender | None = None,
) -> PredictFront:
    metrics = metrics or ServerMetrics()
    registry = Registry(settings.registry.path)
    store = store or ModelStore(registry, metrics)
    serve = settings.serve
    kafka_config = kio.client_config(settings.kafka.bootstrap_servers, settings.kafka.security)
    sender = sender or CommandSender(kafka_config, settings.kafka.control_topic, serve.admin_timeout_s)
    predictions_log = (PredictionLog(kafka_config, settings.kafka.predictions_topic, serve.prediction_log_capacity, metrics.prediction_log)
                       if serve.prediction_log else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.refresh()
        follower = Follower(store, serve.registry_poll_s)
        announcements = Announcements(follower.wake, kafka_config, settings.kafka.announce_topic)
        follower.start()
        announcements.start()
        yield
        announcements.stop()
        follower.stop()
        sender.close()
        if predictions_log is not None:
            predictions_log.close()

    app = FastAPI(title="Perennial", version=package_version(), lifespan=lifespan)
    app.state.store, app.state.metrics = store, metrics
    app.openapi = served_openapi(app.openapi, store)  # type: ignore[method-assign]  # FastAPI's documented way

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        # FastAPI's default echoes the input and fails with a 500 on NaN; name the fields only.
        problems = [f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors()]
        return json_response({"error": "; ".join(problems)}, 422)

    predictor = Predictor(store, metrics, predictions_log)

    async def answer(read_body: Callable[[], Awaitable[bytes]]) -> Answer:
        """Status, JSON body and extra headers of one predict request."""
        try:
            with predictor.request() as model:
                ids, times, rows, batch = parse_predict(await read_body(), model.schema.features, serve.max_batch)
                scores = await predictor.score(model, rows, ids, times)
        except ApiError as exc:
            return exc.status, orjson.dumps(exc.body()), exc.headers or {}
        items = [{"id": i, "score": float(s), "version": model.version} for i, s in zip(ids, scores)]
        return 200, orjson.dumps({"version": model.version, "predictions": items} if batch else items[0]), {}

    @app.post(PREDICT_ROUTE, openapi_extra=_predict_operation(serve.max_batch, serve.max_body_bytes))
    async def predict(request: Request) -> Response:
        """Reached when the FastAPI app is mounted without its front (e.g. as a sub-application)."""
        code, payload, headers = await answer(lambda: read_limited(request, serve.max_body_bytes))
        return Response(payload, status_code=code, media_type="application/json", headers=headers)

    app.include_router(admin_router(serve.admin_token, store, registry, sender, metrics))
    app.include_router(v2_router(serve, store, predictor))

    @app.get("/v1/model", responses={200: {"model": ModelInfo, "description": "The served version, its schema, manifest and gate decisions"},
                                      503: {"model": PredictError, "description": "No model is loaded yet"}})
    async def model_info() -> Response:
        model = store.model
        if model is None:
            raise ApiError(503, store.why_not_ready(), reason="no_model")
        try:
            decisions: Any = registry.decisions()
        except RegistryError as exc:
            decisions = {"error": str(exc)}
        return json_response({"version": model.version, "features": list(model.schema.names), "schema": schema_info(model.schema),
                              "manifest": model.manifest, "decisions": decisions})

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        model = store.model
        if model is None:
            return json_response({"status": "not ready", "reason": store.why_not_ready()}, 503)
        return json_response({"status": "ready", "version": model.version})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    documented = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    paths = frozenset([*app.openapi()["paths"], *filter(None, documented)])
    app.add_middleware(RequestMetrics, metrics=metrics, paths=paths)
    return PredictFront(app, answer, serve.max_body_bytes, metrics)
