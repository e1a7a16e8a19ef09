"""Admin endpoints: roll back the served version, pause and resume learning, release quarantined
events, confirm a concept change.

They change state, so they require ``Authorization: Bearer <serve.admin_token>`` (compared in
constant time); without a configured token they are disabled (403), never open. The token is checked
from the headers before any of the body is read, and a body is read only up to ADMIN_MAX_BODY_BYTES
(413), so an unauthenticated or oversized upload costs the server nothing.

The server does not write the registry: it validates the request and sends a command on the control
topic; the learner, the registry's only writer, applies it and records it (``history.jsonl``, its
log, its metrics). The answer is 202 Accepted with the command and its id, or 503 when Kafka does not
confirm the command within ``serve.admin_timeout_s``: the command is sent from a thread of its own, so
a Kafka outage never blocks the event loop, and predictions go on meanwhile.
"""

from __future__ import annotations

import asyncio
import hmac
import queue
import threading
import time
from typing import Any

from fastapi import APIRouter, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from learners import concept_change, control
from learners.registry import Registry, RegistryError
from service.errors import ApiError
from service.front import ClientGone, header, join_limited, receive_chunks, replay
from service.metrics import ServerMetrics
from service.model_store import ModelStore
from streams import kafka as kio

ADMIN_MAX_BODY_BYTES = 16 * 1024  # a command body is a version and a reason of at most 500 characters


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(None, pattern=r"^v\d{6}$", description="Version to serve again; default: the served version's parent.")
    reason: str | None = Field(None, max_length=500, description="Why, for the registry's history.")


class ReasonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=500, description="Why, for the learner's log.")


class ConceptChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rounds: int | None = Field(None, ge=1, le=concept_change.MAX_ROUNDS, description="Rounds the change lasts; default: learn.concept_change_rounds.")
    reason: str | None = Field(None, max_length=500, description="Why, for the learner's log.")


class CommandSender:
    """Sends commands on the control topic from one thread of its own; ``send`` waits at most
    ``timeout_s`` for Kafka to confirm. A command still queued when its caller stopped waiting is
    dropped, and one handed to the producer expires there after ``timeout_s``: a command answered
    503 is not retried later. The producer is created on first use, so a server starts and serves
    predictions with Kafka down."""

    def __init__(self, config: dict[str, Any], topic: str, timeout_s: float):
        self.config, self.topic, self.timeout_s = config, topic, timeout_s
        self._producer = None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._work, name="perennial-admin-commands", daemon=True).start()

    async def send(self, cmd: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        confirmed: asyncio.Future[Exception | None] = loop.create_future()

        def answer(error: Exception | None) -> None:
            if not confirmed.done():  # not cancelled by the timeout below
                confirmed.set_result(error)

        def settle(error: Exception | None) -> None:  # called on the sender's thread
            loop.call_soon_threadsafe(answer, error)

        self._jobs.put((cmd, time.monotonic() + self.timeout_s, settle))
        try:
            error = await asyncio.wait_for(confirmed, self.timeout_s)
        except TimeoutError:
            raise ApiError(503, f"Kafka did not confirm the command within {self.timeout_s:g} s; check that Kafka is reachable and retry") from None
        if error is not None:
            raise ApiError(503, f"the command could not be delivered to Kafka ({type(error).__name__}); nothing was changed")

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            cmd, deadline, settle = job
            try:
                self._deliver(cmd, deadline)
                error = None
            except Exception as exc:  # noqa: BLE001 - any Kafka failure is the same answer to the operator
                error = exc
            try:
                settle(error)
            except RuntimeError:  # the event loop is closed: nobody is waiting any more
                pass
        if self._producer is not None:
            self._producer.close(timeout=5)

    def _deliver(self, cmd: dict[str, Any], deadline: float) -> None:
        if self._producer is None:
            kio.ensure_topics(self.config, [self.topic])
            # A record Kafka has not confirmed when its caller gets 503 expires in the producer (0.1 s
            # later) instead of landing late; the client requires delivery > linger + request timeout.
            timeout_ms = int(self.timeout_s * 1000)
            self._producer = kio.producer(self.config, max_block_ms=5000, request_timeout_ms=timeout_ms, delivery_timeout_ms=timeout_ms + 100)
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the caller stopped waiting before the command was sent; not sent")
        control.send(self._producer, self.topic, cmd, timeout=left)

    def close(self) -> None:
        """Ends the sender's thread once it is done with the commands queued before (not waited for:
        it may be stuck in a Kafka call, and it is a daemon)."""
        self._jobs.put(None)


def check_token(expected: bytes | None, authorization: str | None) -> None:
    if expected is None:
        raise ApiError(403, "admin endpoints are disabled: set PERENNIAL_SERVE__ADMIN_TOKEN to enable them")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise ApiError(401, "a valid 'Authorization: Bearer <token>' header is required", {"WWW-Authenticate": "Bearer"})


def guarded_route(token: SecretStr | None) -> type[APIRoute]:
    """The route class of the admin endpoints: the token is checked from the headers, then the body
    is read within ADMIN_MAX_BODY_BYTES, and only then does FastAPI see the request. A refusal closes
    the connection, so the rest of a refused body is never read."""
    expected = token.get_secret_value().encode() if token else None

    class GuardedRoute(APIRoute):
        async def handle(self, scope, receive, send) -> None:  # the ASGI interface
            try:
                check_token(expected, header(scope, b"authorization"))
                body = await join_limited(receive_chunks(receive), header(scope, b"content-length"), ADMIN_MAX_BODY_BYTES)
            except ClientGone:
                return
            except ApiError as exc:
                await exc.response(close=True)(scope, receive, send)
                return
            await super().handle(scope, replay(body, receive), send)

    return GuardedRoute


def admin_router(token: SecretStr | None, store: ModelStore, registry: Registry, sender: CommandSender, metrics: ServerMetrics) -> APIRouter:
    # HTTPBearer only documents the scheme in /openapi.json; the route class enforces it.
    router = APIRouter(prefix="/v1", route_class=guarded_route(token), dependencies=[Security(HTTPBearer(auto_error=False))], tags=["admin"])

    async def accepted(cmd: dict[str, Any]) -> dict[str, Any]:
        await sender.send(cmd)
        metrics.admin.labels(cmd["action"]).inc()
        return {"accepted": True, "command": cmd}

    @router.post("/model/rollback", status_code=202)
    async def rollback(body: RollbackRequest | None = None) -> dict[str, Any]:
        body = body or RollbackRequest()
        served = store.model
        target = body.version or (served.manifest.get("parent") if served else None)
        if target is None:
            raise ApiError(409, "the served version has no parent; name the version to roll back to")
        if served is not None and target == served.version:
            raise ApiError(409, f"{target} is already served")
        try:
            registry.manifest(target)
        except RegistryError as exc:
            raise ApiError(404, str(exc)) from None
        return await accepted(control.command("rollback", version=target, reason=body.reason or "operator rollback"))

    @router.post("/learner/pause", status_code=202)
    async def pause(body: ReasonRequest | None = None) -> dict[str, Any]:
        return await accepted(control.command("pause", reason=(body.reason if body else None)))

    @router.post("/learner/release-quarantine", status_code=202)
    async def release_quarantine(body: ReasonRequest | None = None) -> dict[str, Any]:
        """Train on the rounds the label-rate guard kept aside (after an operator checked them: a genuine
        fraud burst, not poisoning). They join the next round, through the contradiction check."""
        return await accepted(control.command("release_quarantine", reason=(body.reason if body else None)))

    @router.post("/learner/concept-change", status_code=202)
    async def concept_change(body: ConceptChangeRequest | None = None) -> dict[str, Any]:
        """Confirm that the labels changed meaning (a concept change, not poisoning: only an operator
        can tell them apart). For the next rounds the learner trains on labels that contradict the
        served model, releases what it quarantined, does not let the checks that hold a candidate to
        the past bind, and (with ``learn.concept_change_forget``) empties its replay memory and EWC
        importances; the recent-AP gate still decides what is served."""
        body = body or ConceptChangeRequest()
        return await accepted(control.command("concept_change", rounds=body.rounds, reason=body.reason))

    @router.post("/learner/resume", status_code=202)
    async def resume(body: ReasonRequest | None = None) -> dict[str, Any]:
        return await accepted(control.command("resume", reason=(body.reason if body else None)))

    return router
