"""The one error type of the HTTP API: a status code and a message that says what to fix."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

INTERNAL_ERROR = {"error": "internal error; the server log has the cause"}
"""The body of a 500: what failed is logged, never sent."""


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json", headers=headers)


class ApiError(Exception):
    """``reason``: a code a client can branch on (``missing_feature``, ``too_many_events``...), in the
    body beside the message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, reason: str | None = None):
        super().__init__(message)
        self.status, self.message, self.headers, self.reason = status, message, headers, reason

    def response(self, close: bool = False) -> Response:
        """The error as JSON; ``close`` ends the connection after it, for an answer given before the
        request's body was read (the rest of the body is then never read)."""
        headers = {**(self.headers or {}), **({"connection": "close"} if close else {})}
        return json_response(self.body(), self.status, headers)

    def body(self) -> dict[str, str]:
        return {"error": self.message, **({"reason": self.reason} if self.reason else {})}
