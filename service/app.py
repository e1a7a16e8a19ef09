"""`perennial serve`: the HTTP API. ``create_app(settings)`` builds it; nothing runs at import time.

- ``POST /v1/predict``: one event ``{"id": ..., "features": {...}}`` or a list of them; returns the
  fraud probability and the model version for each.
- ``GET /v1/model``: the served version, its manifest and gate report.
- ``GET /healthz`` (process up), ``GET /readyz`` (a model is loaded), ``GET /metrics``.

The predict body is parsed with orjson and checked by the same validation as labeled events, so a
request is refused for the same reasons an event is dead-lettered, with a message naming the problem.

``POST /v1/predict`` is answered by a lean ASGI front (``PredictFront``) before FastAPI's router and
middleware stack, which cost more per request than scoring itself; every other request, and the
route's documentation in ``/openapi.json``, is FastAPI's. Both paths run the same ``answer``, whose
forward pass is shared with the requests parsed in the same turn of the event loop (batching.py).
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from learners.registry import Registry
from perennial.settings import Settings
from service.admin import CommandSender, admin_router
from service.batching import MicroBatcher
from service.errors import ApiError
from service.metrics import ServerMetrics
from service.model_store import Announcements, Follower, ModelStore
from streams import kafka as kio
from streams.events import EventError, feature_vector

PREDICT_ROUTE = "/v1/predict"
log = logging.getLogger(__name__)

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
    return await join_limited(request.stream(), request.headers.get("content-length"), limit)


async def join_limited(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The chunks of a body joined, refused with 413 once the declared or received size exceeds ``limit``."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body is {declared} bytes; the limit is {limit}")
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body is over the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


class ClientGone(Exception):
    """The client disconnected before its body arrived: nobody to answer."""


Answer = tuple[int, bytes, dict[str, str]]


class PredictFront:
    """ASGI app in front of FastAPI: ``POST /v1/predict`` read, answered and sent directly from ASGI
    messages; any other request (and lifespan) goes to ``app``, the FastAPI application."""

    def __init__(self, app: FastAPI, answer: Callable[[Callable[[], Awaitable[bytes]]], Awaitable[Answer]], limit: int):
        self.app, self.answer, self.limit = app, answer, limit

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - the ASGI interface
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PREDICT_ROUTE:
            await self.app(scope, receive, send)
            return

        async def chunks() -> AsyncIterator[bytes]:
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                yield message.get("body", b"")
                more = message.get("more_body", False)

        def body() -> Awaitable[bytes]:
            declared = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"), None)
            return join_limited(chunks(), declared, self.limit)

        try:
            status, payload, headers = await self.answer(body)
        except ClientGone:
            return
        except Exception:  # noqa: BLE001 - answered as FastAPI would, with the cause in the log
            log.exception("predict failed")
            status, payload, headers = 500, orjson.dumps({"error": "internal error; the server log has the cause"}), {}
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": payload})


def create_app(
    settings: Settings, store: ModelStore | None = None, metrics: ServerMetrics | None = None, sender: CommandSender | None = None,
) -> PredictFront:
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

    batcher = MicroBatcher(metrics.pass_rows.observe)

    async def answer(read_body: Callable[[], Awaitable[bytes]]) -> Answer:
        """Status, JSON body and extra headers of one predict request; the metrics of it."""
        started = time.perf_counter()
        metrics.in_flight.inc()
        code, version = 500, "none"
        try:
            model = store.model  # read once: a swap during this request does not affect it
            if model is None:
                raise ApiError(503, "no model is loaded yet; the registry has no version")
            version = model.version
            ids, rows, batch = parse_predict(await read_body(), model.schema.names, serve.max_batch)
            scores = await batcher.score(model, rows)  # shared with requests parsed in the same turn of the loop
            metrics.predictions.labels("scored", version).inc(len(scores))
            for s in scores[:64]:  # a sample of each batch keeps the cost per request bounded
                metrics.scores.observe(float(s))
            items = [{"id": i, "score": float(s), "version": version} for i, s in zip(ids, scores)]
            code = 200
            return code, orjson.dumps({"version": version, "predictions": items} if batch else items[0]), {}
        except ApiError as exc:
            code = exc.status
            metrics.predictions.labels("rejected", version).inc()
            return code, orjson.dumps({"error": exc.message}), exc.headers or {}
        except ClientGone:
            code = 499  # nginx's "client closed request": counted, never sent
            raise
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(PREDICT_ROUTE, str(code)).inc()
            metrics.duration.labels(PREDICT_ROUTE).observe(time.perf_counter() - started)

    @app.post(PREDICT_ROUTE, openapi_extra=_PREDICT_OPENAPI)
    async def predict(request: Request) -> Response:
        """Reached when the FastAPI app is mounted without its front (e.g. as a sub-application)."""
        code, payload, headers = await answer(lambda: read_limited(request, serve.max_body_bytes))
        return Response(payload, status_code=code, media_type="application/json", headers=headers)

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

    return PredictFront(app, answer, serve.max_body_bytes)
