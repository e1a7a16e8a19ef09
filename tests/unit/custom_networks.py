"""Networks of a user's own, named by import path in the tests (``tests.unit.custom_networks:build``).

``build`` is what a fraud team might bring: one embedding per categorical feature (its own width,
not the built-in rule) and a residual block. The others fail the ways a user's factory can fail.
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """Numbers and indicators as they come, each category code embedded in 4 dimensions, one residual block."""

    def __init__(self, numeric_width: int, cardinalities: tuple[int, ...], width: int):
        super().__init__()
        self.numeric_width, self.cardinalities = numeric_width, cardinalities
        self.embeddings = nn.ModuleList(nn.Embedding(c, 4) for c in cardinalities)
        self.inner = nn.Linear(numeric_width + 4 * len(cardinalities), width)
        self.block = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
        self.out = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = torch.round(x[:, self.numeric_width:]).long()
        parts = [x[:, :self.numeric_width]]
        parts += [table(codes[:, i].clamp(0, c - 1)) for i, (table, c) in enumerate(zip(self.embeddings, self.cardinalities))]
        h = torch.relu(self.inner(torch.cat(parts, dim=1)))
        return self.out(torch.relu(h + self.block(h)))


def build(schema, width: int = 16) -> Residual:
    return Residual(schema.numeric_width, schema.cardinalities, width)


def broken(schema) -> nn.Module:
    raise RuntimeError("this factory needs a GPU")


def wrong_shape(schema) -> nn.Module:
    return nn.Linear(schema.input_width, 3)


NOT_CALLABLE = 3


class Faulty(nn.Module):
    """Logits of a linear layer, except for rows whose first input is above ``above``: NaN
    (``fails="nan"``) or an exception (``fails="raise"``), as a user's network may on inputs it was
    never meant for."""

    def __init__(self, width: int, fails: str, above: float):
        super().__init__()
        self.linear, self.fails, self.above = nn.Linear(width, 2), fails, above

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bad = x[:, 0] > self.above
        if self.fails == "raise" and bool(bad.any()):
            raise ValueError("this network cannot score such an amount")
        out = self.linear(x)
        return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)


def faulty(schema, fails: str = "nan", above: float = 5.0) -> Faulty:
    return Faulty(schema.input_width, fails, above)


class Constant(nn.Module):
    """No parameters at all: nothing to train."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 2)


def untrainable(schema) -> Constant:
    return Constant()
