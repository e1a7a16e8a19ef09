"""The tabular network that training updates (torch), and its weights as numpy.

What is served is ``ScoringModel`` (learners/scoring.py, numpy only, so a server never imports torch).

The network's input is the schema's encoded row (learners/schema.py): ``n_features`` numeric
columns (z-scores, then missing indicators), then one column per categorical feature holding its
integer code as a float. Each categorical feature has its own embedding table of ``cardinality``
rows (its codes: 0 other, 1 missing, 2.. vocabulary) and ``embedding_dim(cardinality)`` columns;
the embedded codes are concatenated after the numeric columns and the MLP takes the whole. A code
that is not one of the feature's codes (negative, too large, NaN) is read as 0 (other), never an
index error; a code is rounded to the nearest integer first (float noise). A schema of numbers
only has no embeddings, and its network, state dict and forward are exactly the MLP they always were.

State dict keys: ``layers.N.weight``/``layers.N.bias`` for the MLP (N: the index in the
``nn.Sequential``, Linear and ReLU alternating) and ``embeddings.i.weight`` (``[cardinality, dim]``)
per categorical feature in schema order. ``embedding_dim`` (min(8, cardinality)) is defined in
learners/scoring.py, numpy only, so the server checks served weights by the same rule without torch;
it is re-exported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from learners.scoring import MAX_EMBEDDING_DIM, embedding_dim, embedding_indices

if TYPE_CHECKING:
    from learners.schema import FeatureSchema

__all__ = ["MAX_EMBEDDING_DIM", "TabularNet", "build", "embedding_dim", "state_numpy"]


class TabularNet(nn.Module):
    """An MLP over normalised features and embedded category codes with two logits (legitimate, fraud).

    ``n_features``: the numeric width of the input (``schema.numeric_width``); ``cardinalities``:
    codes per categorical feature (``schema.cardinalities``), whose codes follow in the input.
    """

    def __init__(self, n_features: int, hidden: int = 64, depth: int = 2, cardinalities: tuple[int, ...] | list[int] = ()):
        super().__init__()
        self.n_features = int(n_features)
        self.cardinalities = tuple(int(c) for c in cardinalities)
        dims = [embedding_dim(c) for c in self.cardinalities]
        layers: list[nn.Module] = []
        width = self.n_features + sum(dims)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 2))
        self.layers = nn.Sequential(*layers)
        # After the layers, so a network of numbers only draws the same initial weights as always.
        self.embeddings = nn.ModuleList(nn.Embedding(c, d) for c, d in zip(self.cardinalities, dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cardinalities:
            return self.layers(x)
        n = self.n_features
        if x.shape[1] != n + len(self.cardinalities):
            raise ValueError(f"input has {x.shape[1]} columns; the network takes {n} numeric + {len(self.cardinalities)} codes")
        codes = torch.round(x[:, n:])
        parts = [x[:, :n]]
        for i, (table, c) in enumerate(zip(self.embeddings, self.cardinalities)):
            code = codes[:, i]
            index = torch.where((code >= 0) & (code < c), code, torch.zeros_like(code)).long()  # NaN too: other
            parts.append(table(index))
        return self.layers(torch.cat(parts, dim=1))

    @classmethod
    def for_schema(cls, schema: FeatureSchema, hidden: int = 64, depth: int = 2) -> TabularNet:
        """A fresh network for the encoded input of ``schema``."""
        return cls(schema.numeric_width, hidden=hidden, depth=depth, cardinalities=schema.cardinalities)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> TabularNet:
        """A network shaped after its weights (so any saved width, depth or embeddings load)."""
        embedded = embedding_indices(state)
        if embedded != list(range(len(embedded))):
            raise ValueError(f"embedding weights must be numbered 0..{len(embedded) - 1}, found {embedded}")
        tables = [state[f"embeddings.{i}.weight"] for i in embedded]
        for i, t in enumerate(tables):
            if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] != embedding_dim(t.shape[0]):
                raise ValueError(f"embeddings.{i}.weight has shape {tuple(t.shape)}; "
                                 f"a table of c codes is [c, embedding_dim(c)] = [c, min({MAX_EMBEDDING_DIM}, c)]")
        cardinalities = tuple(int(t.shape[0]) for t in tables)
        rest = [k for k in state if not k.startswith("embeddings.")]
        linear = sorted({k.rsplit(".", 1)[0] for k in rest}, key=lambda k: int(k.split(".")[1]))
        first = state[f"{linear[0]}.weight"]
        n_features = first.shape[1] - sum(embedding_dim(c) for c in cardinalities)
        if n_features < 0:
            raise ValueError(f"the first layer takes {first.shape[1]} inputs, fewer than the embeddings give")
        net = cls(n_features=n_features, hidden=first.shape[0], depth=len(linear) - 1, cardinalities=cardinalities)
        net.load_state_dict(state)
        return net


def build(schema: FeatureSchema, hidden: int = 64, depth: int = 2) -> TabularNet:
    """The built-in network's factory (``learners.network``'s ``learners.model:build``): ``TabularNet.for_schema``."""
    return TabularNet.for_schema(schema, hidden=hidden, depth=depth)


def state_numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Weights as numpy arrays: float32 for floating-point ones (embedding tables included), others
    (a custom network's integer buffers, e.g. batch norm's ``num_batches_tracked``) in their own type."""
    return {k: _numpy(v) for k, v in state.items()}


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().cpu().numpy()
    return array.astype(np.float32 if tensor.is_floating_point() else array.dtype, copy=True)
