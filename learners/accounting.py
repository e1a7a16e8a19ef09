"""Where every consumed event went, and the buffers events wait in."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Accounting:
    """Where every consumed event went:
    consumed == trained + held_out + quarantined + pending (both buffers) + sum(dead_lettered)."""

    consumed: int = 0
    trained: int = 0
    held_out: int = 0
    quarantined: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    published: int = 0


class EventBuffer:
    """Rows of raw feature values with labels, appended one at a time, bounded or not."""

    def __init__(self, n_features: int, limit: int | None = None):
        self.n_features, self.limit = n_features, limit
        self._x: list[tuple[float, ...]] = []
        self._y: list[int] = []

    def add(self, x: tuple[float, ...], y: int) -> None:
        self._x.append(x)
        self._y.append(y)
        if self.limit and len(self._y) > self.limit * 2:  # trim in bulk, not per event
            del self._x[: -self.limit], self._y[: -self.limit]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._x, self._y
        if self.limit:
            x, y = x[-self.limit :], y[-self.limit :]
        return np.asarray(x, np.float32).reshape(-1, self.n_features), np.asarray(y, np.int64)

    def load(self, x: np.ndarray, y: np.ndarray) -> None:
        self._x = [tuple(r) for r in x.tolist()]
        self._y = y.tolist()

    def clear(self) -> None:
        self._x, self._y = [], []

    def __len__(self) -> int:
        return min(len(self._y), self.limit) if self.limit else len(self._y)
