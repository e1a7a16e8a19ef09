"""A small typed client of Perennial's HTTP API.

>>> from perennial.client import Client
>>> with Client("http://127.0.0.1:8000") as c:                          # doctest: +SKIP
...     p = c.predict({"amount": 12.5, "hour": 3.0}, id="tx-42")
...     p.score, p.version
(0.0131, 'v000007')

``predict`` scores one event, ``predict_many`` a list in one request (the server's limit is
``serve.max_batch`` events); ``model`` describes the served version and the learner's last gate
decisions; ``rollback``, ``pause``, ``resume``, ``release_quarantine`` and ``concept_change`` are the admin commands
(a bearer token: ``Client(url, token=...)``). Every refusal raises ``PerennialError`` with the
status, the server's ``reason`` code (``missing_feature``, ``too_many_events``...) and its message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import orjson

from service.schemas import Prediction, Predictions

__all__ = ["Client", "PerennialError", "Prediction"]


class PerennialError(Exception):
    def __init__(self, status: int, reason: str | None, message: str):
        super().__init__(f"{status} {reason or ''}: {message}".replace(" :", ":"))
        self.status, self.reason, self.message = status, reason, message


class Client:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 10.0, transport: httpx.BaseTransport | None = None):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, timeout=timeout, headers=headers, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # -- predictions ---------------------------------------------------------------------------

    def predict(self, features: Mapping[str, float], *, id: Any = None, time: float | str | None = None) -> Prediction:
        """Score one event; ``id`` (and ``time``) make it joinable to a late label when the server
        logs its predictions."""
        doc = self._post("/v1/predict", _event(features, id, time))
        return Prediction.model_validate(doc)

    def predict_many(self, events: Iterable[Mapping[str, Any]]) -> list[Prediction]:
        """Score events ``{"features": {...}, "id"?, "time"?}`` (or plain feature mappings) in one
        request; the predictions come in the same order."""
        body = [e if "features" in e else {"features": e} for e in events]
        doc = self._post("/v1/predict", body)
        return list(Predictions.model_validate(doc).predictions)

    # -- the served model ----------------------------------------------------------------------

    def model(self) -> dict[str, Any]:
        """The served version, its schema and metrics, and the learner's last gate decisions."""
        return self._send("GET", "/v1/model")

    def ready(self) -> bool:
        """Whether the server has a model loaded and answers predictions."""
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    # -- admin commands (need the token) ------------------------------------------------------

    def rollback(self, version: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """Serve ``version`` again (default: the served version's parent); learning pauses until resumed."""
        return self._post("/v1/model/rollback", _drop_none({"version": version, "reason": reason}))

    def pause(self, reason: str | None = None) -> dict[str, Any]:
        return self._post("/v1/learner/pause", _drop_none({"reason": reason}))

    def resume(self, reason: str | None = None) -> dict[str, Any]:
        return self._post("/v1/learner/resume", _drop_none({"reason": reason}))

    def release_quarantine(self, reason: str | None = None) -> dict[str, Any]:
        return self._post("/v1/learner/release-quarantine", _drop_none({"reason": reason}))

    def concept_change(self, rounds: int | None = None, reason: str | None = None) -> dict[str, Any]:
        """Confirm that the labels changed meaning: see ``POST /v1/learner/concept-change``."""
        return self._post("/v1/learner/concept-change", _drop_none({"rounds": rounds, "reason": reason}))

    # -- plumbing ------------------------------------------------------------------------------

    def _post(self, path: str, body: Any) -> Any:
        return self._send("POST", path, body)

    def _send(self, method: str, path: str, body: Any = None) -> Any:
        content = None if body is None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        r = self.http.request(method, path, content=content, headers={"content-type": "application/json"} if content else None)
        try:
            doc = r.json()
        except ValueError:
            doc = {"error": r.text[:500]}
        if r.status_code >= 400:
            raise PerennialError(r.status_code, doc.get("reason") if isinstance(doc, dict) else None,
                                 doc.get("error", r.text[:500]) if isinstance(doc, dict) else r.text[:500])
        return doc


def _event(features: Mapping[str, float], id: Any, time: float | str | None) -> dict[str, Any]:
    return _drop_none({"id": id, "time": time, "features": dict(features)})


def _drop_none(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if v is not None}
