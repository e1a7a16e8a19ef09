"""The ASGI layer in front of FastAPI's router.

``PredictFront`` answers ``POST /v1/predict`` straight from ASGI messages, before FastAPI's router
and middleware stack, which cost more per request than scoring itself; every other request goes to
FastAPI, where ``RequestMetrics`` counts it by route. The body readers here are shared by
both predict paths and the admin routes: a body is read only up to its limit, and refused (413) as
soon as it is known to exceed it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from service.errors import INTERNAL_ERROR, ApiError
from service.metrics import ServerMetrics

PREDICT_ROUTE = "/v1/predict"
OTHER_ROUTE = "other"  # the route label of paths no route matches: the label set stays bounded
log = logging.getLogger("perennial.serve")

Answer = tuple[int, bytes, dict[str, str]]


class ClientGone(Exception):
    """The client disconnected before its body arrived: nobody to answer."""


def header(scope: dict[str, Any], name: bytes) -> str | None:
    """The value of the request header ``name`` (lower case), or None."""
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), None)


async def receive_chunks(receive: Callable[[], Awaitable[dict[str, Any]]]) -> AsyncIterator[bytes]:
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        yield message.get("body", b"")
        more = message.get("more_body", False)


async def join_limited(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The chunks of a body joined, refused with 413 once the declared or received size exceeds ``limit``."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body is {declared} bytes; the limit is {limit}", reason="too_large")
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body is over the limit of {limit} bytes", reason="too_large")
        parts.append(chunk)
    return b"".join(parts)


def replay(body: bytes, receive: Callable[[], Awaitable[dict[str, Any]]]) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A ``receive`` that hands over ``body`` (already read) first, then the connection's own messages."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict[str, Any]:
        return pending.pop() if pending else await receive()

    return replayed


class PredictFront:
    """ASGI app in front of FastAPI: ``POST /v1/predict`` read, answered, counted and sent directly;
    any other request (and lifespan) goes to ``app``, the FastAPI application."""

    def __init__(self, app: Any, answer: Callable[[Callable[[], Awaitable[bytes]]], Awaitable[Answer]], limit: int, metrics: ServerMetrics):
        self.app, self.answer, self.limit, self.metrics = app, answer, limit, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PREDICT_ROUTE:
            await self.app(scope, receive, send)
            return
        started, code = time.perf_counter(), 499  # nginx's "client closed request": counted, never sent
        try:
            try:
                code, payload, headers = await self.answer(lambda: join_limited(receive_chunks(receive), header(scope, b"content-length"), self.limit))
            except ClientGone:
                return
            except Exception:  # answered as FastAPI would, with the cause in the log
                log.exception("predict failed")
                code, payload, headers = 500, orjson.dumps(INTERNAL_ERROR), {}
            head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            await send({"type": "http.response.start", "status": code, "headers": head})
            await send({"type": "http.response.body", "body": payload})
        finally:
            self.metrics.answered(PREDICT_ROUTE, code, started)


class RequestMetrics:
    """ASGI middleware of the FastAPI app: every request it answers is counted and timed under its
    route's path as declared, one of ``paths`` (``/v2/models/{name}/infer`` for any model name), or
    ``other``: the label set stays bounded whatever paths clients send."""

    def __init__(self, app: Any, metrics: ServerMetrics, paths: frozenset[str]):
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, code = time.perf_counter(), 499  # until a response starts: the client went away

        async def noting_status(message: dict[str, Any]) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        except Exception:
            code = 500  # ServerErrorMiddleware, outside this one, answers it
            raise
        finally:
            route = getattr(scope.get("route"), "path", scope["path"])  # the router notes the route of an API route
            self.metrics.answered(route if route in self.paths else OTHER_ROUTE, code, started)
