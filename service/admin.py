"""Admin endpoints: roll back the served version, pause and resume learning.

They change state, so they require ``Authorization: Bearer <serve.admin_token>`` (compared in
constant time); without a configured token they are disabled (403), never open. The server does not
write the registry: it validates the request and sends a command on the control topic; the learner,
the registry's only writer, applies it and records it (``history.jsonl``, its log, its metrics).
The answer is 202 Accepted with the command and its id.
"""

from __future__ import annotations

import hmac
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from learners import control
from learners.registry import Registry, RegistryError
from service.errors import ApiError
from service.metrics import ServerMetrics
from service.model_store import ModelStore
from streams import kafka as kio


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(None, pattern=r"^v\d{6}$", description="Version to serve again; default: the served version's parent.")
    reason: str | None = Field(None, max_length=500, description="Why, for the registry's history.")


class ReasonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=500, description="Why, for the learner's log.")


class CommandSender:
    """Sends commands on the control topic; the producer is created on first use, so a server starts
    and serves predictions with Kafka down."""

    def __init__(self, config: dict[str, Any], topic: str):
        self.config, self.topic = config, topic
        self._producer = None
        self._lock = threading.Lock()

    def send(self, cmd: dict[str, Any]) -> None:
        try:
            with self._lock:
                if self._producer is None:
                    kio.ensure_topics(self.config, [self.topic])
                    self._producer = kio.producer(self.config, max_block_ms=5000)
                control.send(self._producer, self.topic, cmd)
        except Exception as exc:  # noqa: BLE001 - any Kafka failure is the same answer to the operator
            raise ApiError(503, f"the command could not be delivered to Kafka ({type(exc).__name__}); nothing was changed") from None

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)


def bearer(token: SecretStr | None):  # noqa: ANN201 - a FastAPI dependency
    expected = token.get_secret_value().encode() if token else None

    async def check(authorization: Annotated[str | None, Header()] = None) -> None:
        if expected is None:
            raise ApiError(403, "admin endpoints are disabled: set PERENNIAL_SERVE__ADMIN_TOKEN to enable them")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiError(401, "a valid 'Authorization: Bearer <token>' header is required", {"WWW-Authenticate": "Bearer"})

    return check


def admin_router(token: SecretStr | None, store: ModelStore, registry: Registry, sender: CommandSender, metrics: ServerMetrics) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(bearer(token))], tags=["admin"])

    def accepted(cmd: dict[str, Any]) -> dict[str, Any]:
        sender.send(cmd)
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
        return accepted(control.command("rollback", version=target, reason=body.reason or "operator rollback"))

    @router.post("/learner/pause", status_code=202)
    async def pause(body: ReasonRequest | None = None) -> dict[str, Any]:
        return accepted(control.command("pause", reason=(body.reason if body else None)))

    @router.post("/learner/resume", status_code=202)
    async def resume(body: ReasonRequest | None = None) -> dict[str, Any]:
        return accepted(control.command("resume", reason=(body.reason if body else None)))

    return router
