"""The tabular network that training updates (torch), and its weights as numpy.

What is served is ``ScoringModel`` (learners/scoring.py, numpy only, so a server never imports torch).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TabularNet(nn.Module):
    """An MLP over normalised features with two logits (legitimate, fraud)."""

    def __init__(self, n_features: int, hidden: int = 64, depth: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 2))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> TabularNet:
        """A network shaped after its weights (so any saved width or depth loads)."""
        linear = sorted({k.rsplit(".", 1)[0] for k in state}, key=lambda k: int(k.split(".")[1]))
        first = state[f"{linear[0]}.weight"]
        net = cls(n_features=first.shape[1], hidden=first.shape[0], depth=len(linear) - 1)
        net.load_state_dict(state)
        return net


def state_numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().astype(np.float32, copy=True) for k, v in state.items()}
