"""Micro-batching of concurrent predict requests, with no timer and no added wait.

Requests whose bodies are parsed in the same turn of the event loop hand their rows to
``MicroBatcher.score``; when that turn ends, one forward pass per served version scores all of them
and each request gets its own slice back. Under load, many requests share each pass (numpy's
per-call cost, not the arithmetic, dominates a one-row forward pass); a lone request is scored on
the next turn of the loop, microseconds later.

Examples
--------
>>> import asyncio, numpy as np
>>> class Doubler:
...     def score(self, rows): return rows[:, 0] * 2
>>> async def three_requests():
...     batcher, model = MicroBatcher(), Doubler()
...     rows = [np.array([[float(i)]]) for i in range(3)]
...     out = await asyncio.gather(*(batcher.score(model, r) for r in rows))
...     return [o.tolist() for o in out], batcher.passes
>>> asyncio.run(three_requests())
([[0.0], [2.0], [4.0]], 1)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np


class Scorer(Protocol):
    def score(self, x: np.ndarray) -> np.ndarray: ...


class MicroBatcher:
    """Every request handed to ``score`` is answered: with its own scores or with an exception. A pass
    that fails is run again request by request, so a failure reaches only the requests that cause it
    (a row of the wrong width, a model raising on some values), never the rest of the pass."""

    def __init__(self, observe: Callable[[int], None] = lambda rows: None) -> None:
        self._waiting: list[tuple[Scorer, np.ndarray, asyncio.Future[Any]]] = []
        self.passes = 0  # forward passes run (a request count above it means sharing)
        self._observe = observe  # called with the rows of each pass

    async def score(self, model: Scorer, rows: np.ndarray) -> np.ndarray:
        """Scores of ``rows`` by ``model`` (a request's model, read once), shared with the other
        requests waiting in this turn of the loop."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((model, rows, future))
        return await future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        try:
            groups: dict[int, tuple[Scorer, list[tuple[np.ndarray, asyncio.Future[Any]]]]] = {}
            for model, rows, future in waiting:
                if not future.cancelled():  # its client went away
                    groups.setdefault(id(model), (model, []))[1].append((rows, future))
            for model, items in groups.values():  # a swap between requests: one pass per version
                self._pass(model, items)
        finally:  # whatever failed above, no request may wait forever
            for _, _, future in waiting:
                if not future.done():
                    future.set_exception(RuntimeError("the shared forward pass failed before this request was scored"))

    def _pass(self, model: Scorer, items: list[tuple[np.ndarray, asyncio.Future[Any]]]) -> None:
        self.passes += 1
        try:
            rows = items[0][0] if len(items) == 1 else np.concatenate([r for r, _ in items])
            self._observe(len(rows))
            scores = model.score(rows)
            if scores.shape != (len(rows),):
                raise ValueError(f"the model returned scores of shape {scores.shape} for {len(rows)} rows")
            if not np.isfinite(scores).all():  # a network of a user's own may: never answered as a score
                raise ValueError(f"the model returned {int(np.sum(~np.isfinite(scores)))} non-finite score(s) for {len(rows)} rows")
        except Exception as exc:  # noqa: BLE001 - alone, each request meets its own failure or its scores
            if len(items) == 1:
                items[0][1].set_exception(exc)
            else:
                for item in items:
                    self._pass(model, [item])
            return
        start = 0
        for part, future in items:
            future.set_result(scores[start : start + len(part)])
            start += len(part)
