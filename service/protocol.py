"""uvicorn's HTTP/1.1 protocol (httptools) with a deadline on receiving each request.

uvicorn closes a keep-alive connection that stays idle after a response (``timeout_keep_alive``),
but nothing else: a connection that never sends a request, or sends half of one and stalls
(slowloris), would be held open for ever, and enough of them exhaust the process's file descriptors.
Here a connection must deliver each request whole, headers and body, within ``request_timeout_s`` of
connecting or of starting the request, or it is closed. One timer per connection checks it; a
request costs two attribute writes, never a timer of its own.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class DeadlineProtocol(HttpToolsProtocol):
    request_timeout_s: float  # set by with_request_deadline

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._receiving_since: float | None = self.loop.time()  # the first request is awaited from now
        self._deadline = self.loop.call_later(self.request_timeout_s, self._check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.cancel()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._receiving_since = self.loop.time()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._receiving_since = None  # received whole: answering it is the app's business

    def _check_deadline(self) -> None:
        since, now = self._receiving_since, self.loop.time()
        if since is not None and now - since >= self.request_timeout_s:
            self.transport.close()  # an app waiting for the rest of the body sees a disconnect
            return
        wait = self.request_timeout_s if since is None else since + self.request_timeout_s - now
        self._deadline = self.loop.call_later(wait, self._check_deadline)


def with_request_deadline(request_timeout_s: float) -> type[DeadlineProtocol]:
    """The protocol class to pass to uvicorn as ``http``."""
    return type("DeadlineProtocol", (DeadlineProtocol,), {"request_timeout_s": request_timeout_s})
