"""`perennial serve`: the HTTP API. ``create_app(settings)`` builds it; nothing runs at import time.

- ``POST /v1/predict``: one event ``{"id": ..., "features": {...}}`` or a list of them; returns the
  fraud probability and the model version for each.
- ``GET /v1/model``: the served version, its manifest and gate report.
- ``GET /healthz`` (process up), ``GET /readyz`` (a model is loaded), ``GET /metrics``.

The predict body is parsed with orjson and checked by the same validation as labeled events, so a
request is refused for the same reasons an event is dead-lettered, with a message naming the problem.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from learners.registry import Registry
from perennial.settings import Settings
from service.admin import CommandSender, admin_router
from service.errors import ApiError
from service.metrics import ServerMetrics
from service.model_store import Announcements, Follower, ModelStore
from streams import kafka as kio
from streams.events import EventError, feature_vector

PREDICT_ROUTE = "/v1/predict"

_EVENT_SCHEMA = {
    "type": "object",
    "required": ["features"],
    "properties": {
        "id": {"type": "string"},
        "features": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}
_PREDICT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": [_EVENT_SCHEMA, {"type": "array", "items": _EVENT_SCHEMA, "minItems": 1}]}}},
    },
    "responses": {"422": {"description": "The body names a missing or unknown feature, a non-number, or is empty"}},
}


def json_response(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def parse_predict(body: bytes, names: tuple[str, ...], max_batch: int) -> tuple[list[Any], np.ndarray, bool]:
    """Event ids, feature rows in schema order, and whether the body was a list."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, f"body is not valid JSON ({exc.msg}); NaN and Infinity are not allowed") from None
    single = isinstance(doc, dict)
    events = [doc] if single else doc
    if not isinstance(events, list):
        raise ApiError(422, "body must be an event object or a list of events")
    if not events:
        raise ApiError(422, "the list of events is empty")
    if len(events) > max_batch:
        raise ApiError(413, f"{len(events)} events in one request; the limit is {max_batch}")
    rows, ids = [], []
    for i, event in enumerate(events):
        prefix = "" if single else f"event {i}: "
        if not isinstance(event, dict):
            raise ApiError(422, f"{prefix}each event must be an object with 'features'")
        try:
            rows.append(feature_vector(event.get("features"), names, prefix))
        except EventError as exc:
            raise ApiError(422, exc.message) from None
        ids.append(event.get("id"))
    return ids, np.asarray(rows, dtype=np.float32), not single


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    settings: Settings, store: ModelStore | None = None, metrics: ServerMetrics | None = None, sender: CommandSender | None = None,
) -> FastAPI:
    metrics = metrics or ServerMetrics()
    registry = Registry(settings.registry.path)
    store = store or ModelStore(registry, metrics)
    serve = settings.serve
    kafka_config = kio.client_config(settings.kafka.bootstrap_servers, settings.kafka.security)
    sender = sender or CommandSender(kafka_config, settings.kafka.control_topic)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        store.refresh()
        follower = Follower(store, serve.registry_poll_s)
        announcements = Announcements(follower.wake, kafka_config, settings.kafka.announce_topic)
        follower.start()
        announcements.start()
        yield
        announcements.stop()
        follower.stop()
        sender.close()

    app = FastAPI(title="Perennial", version="0.1.0", lifespan=lifespan)
    app.state.store, app.state.metrics = store, metrics

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        response = json_response({"error": exc.message}, exc.status)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        # FastAPI's default echoes the input and fails with a 500 on NaN; name the fields only.
        problems = [f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors()]
        return json_response({"error": "; ".join(problems)}, 422)

    @app.post(PREDICT_ROUTE, openapi_extra=_PREDICT_OPENAPI)
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        metrics.in_flight.inc()
        code, version = 200, "none"
        try:
            model = store.model  # read once: a swap during this request does not affect it
            if model is None:
                raise ApiError(503, "no model is loaded yet; the registry has no version")
            version = model.version
            body = await read_limited(request, serve.max_body_bytes)
            ids, rows, batch = parse_predict(body, model.schema.names, serve.max_batch)
            scores = model.score(rows)
            metrics.predictions.labels("scored", version).inc(len(scores))
            for s in scores[:64]:  # a sample of each batch keeps the cost per request bounded
                metrics.scores.observe(float(s))
            items = [{"id": i, "score": float(s), "version": model.version} for i, s in zip(ids, scores)]
            return json_response({"version": model.version, "predictions": items} if batch else items[0])
        except ApiError as exc:
            code = exc.status
            metrics.predictions.labels("rejected", version).inc()
            raise
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(PREDICT_ROUTE, str(code)).inc()
            metrics.duration.labels(PREDICT_ROUTE).observe(time.perf_counter() - started)

    app.include_router(admin_router(serve.admin_token, store, registry, sender, metrics))

    @app.get("/v1/model")
    async def model_info() -> Response:
        model = store.model
        if model is None:
            raise ApiError(503, "no model is loaded yet")
        return json_response({"version": model.version, "features": list(model.schema.names), "manifest": model.manifest})

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        model = store.model
        if model is None:
            return json_response({"status": "not ready", "reason": "no model loaded"}, 503)
        return json_response({"status": "ready", "version": model.version})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
