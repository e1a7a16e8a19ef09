"""Synthetic labeled events from Gaussian concepts: the generator of the built-in evaluation
scenarios where the card simulator would hide the point in its own dynamics.

A ``Concept`` is what legitimate activity and fraud look like for a while, over the eight features
of ``FEATURES``. Legitimate events come from a standard normal, except a share of them that come
from legitimate *segments* (Gaussian clusters of unusual but honest behaviour). Frauds come from
fraud *patterns* (Gaussian clusters), each at its own share of all events. A concept may move every
event by ``shift``. Two concepts with the same patterns at other places, or a segment where another
concept's pattern was, change the decision boundary itself; a shift along the fraud direction moves
only its threshold.

Sampling is vectorised and seeded by the caller's generator: the same generator state gives the
same rows.

Examples
--------
>>> c = Concept("A", patterns={"p": (Cluster((3.0, 3.0)), 0.05)})
>>> x, code = c.sample(20_000, np.random.default_rng(0), ("p",))
>>> x.shape == (20_000, len(FEATURES)), 0.045 < float((code == 1).mean()) < 0.055
(True, True)
>>> float(x[code == 1, 0].mean()) > 2.9 > float(x[code == 0, 0].mean())
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

FEATURES = tuple(f"v{i}" for i in range(1, 9))


@dataclass(frozen=True)
class Cluster:
    """A Gaussian of ``spread`` in every feature around ``centre`` (missing coordinates are 0)."""

    centre: tuple[float, ...]
    spread: float = 1.0

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        centre = np.zeros(len(FEATURES))
        centre[: len(self.centre)] = self.centre
        return centre + self.spread * rng.standard_normal((n, len(FEATURES)))


STANDARD = Cluster(())
"""Where legitimate events come from outside the segments."""


@dataclass(frozen=True)
class Concept:
    """``patterns``: fraud pattern name -> (cluster, share of all events); ``segments``: legitimate
    (cluster, share of legitimate events); ``shift``: added to every event's features."""

    name: str
    patterns: Mapping[str, tuple[Cluster, float]]
    segments: tuple[tuple[Cluster, float], ...] = ()
    shift: tuple[float, ...] = field(default=())

    @property
    def fraud_rate(self) -> float:
        return sum(rate for _, rate in self.patterns.values())

    def sample(self, n: int, rng: np.random.Generator, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``n`` events in random order: float32 features and pattern codes (0 legitimate, else
        1 + the index of the pattern in ``names``)."""
        patterns = list(self.patterns)
        counts = rng.multinomial(n, [self.patterns[p][1] for p in patterns] + [1 - self.fraud_rate])
        x = np.concatenate([self.fraud(p, k, rng) for p, k in zip(patterns, counts)] + [self.legitimate(int(counts[-1]), rng)])
        code = np.repeat([names.index(p) + 1 for p in patterns] + [0], counts)
        order = rng.permutation(n)
        return x[order], code[order].astype(np.int64)

    def legitimate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        clusters = [c for c, _ in self.segments] + [STANDARD]
        shares = [s for _, s in self.segments]
        counts = rng.multinomial(n, shares + [1 - sum(shares)])
        return self._moved(np.concatenate([c.sample(k, rng) for c, k in zip(clusters, counts)]))

    def fraud(self, pattern: str, n: int, rng: np.random.Generator) -> np.ndarray:
        return self._moved(self.patterns[pattern][0].sample(n, rng))

    def _moved(self, x: np.ndarray) -> np.ndarray:
        shift = np.zeros(len(FEATURES))
        shift[: len(self.shift)] = self.shift
        return (x + shift).astype(np.float32)
