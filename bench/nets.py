"""A user's own network, for bench/own_data.py: the built-in MLP's shape, written as a user would
write it, so that its figures show what scoring with torch costs against the numpy forward pass."""

from __future__ import annotations

from torch import nn


class UserMLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, x):
        return self.body(x)


def build(schema, hidden: int = 64) -> nn.Module:
    """``factory(schema, **kwargs)``: all-numeric schemas only (its input is the z-scores)."""
    return UserMLP(schema.input_width, hidden)
