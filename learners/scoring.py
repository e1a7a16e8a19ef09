"""The immutable scoring model: what is served.

The weights of one version mirrored to numpy with its schema and its calibration, never mutated after
construction, so a swap is the replacement of one reference and scoring needs no autograd or framework
dispatch. Its ``score`` is the served, calibrated fraud probability; ``score_raw`` is the network's own,
which is what training and anything fitted on the network (a new calibration) work on. The built-in
network is scored by numpy only: a server of it never imports torch (learners/model.py holds the torch
network). A version of any other network (``network``: its ``learners.network.NetworkSpec``) is built
as its torch module once, at construction (torch imported then), and scored by it under
``torch.inference_mode``: no autograd, and safe for concurrent calls, since nothing is written.

Weights of the built-in network are those of ``TabularNet``'s state dict: ``layers.N.weight`` /
``layers.N.bias``, and for a schema with categorical features one ``embeddings.i.weight`` table per feature (``[cardinality,
embedding_dim(cardinality)]``). The embeddings are folded into the first layer once, at
construction: table i times its slice of the first layer's weights is a ``[cardinality, hidden]``
table, so embedding and first layer are one gather and sum per row. A schema of numbers only scores
along the same path as before embeddings existed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from learners.calibration import IDENTITY, Calibration
from learners.network import BUILTIN, NetworkSpec, load
from learners.schema import FeatureSchema

MAX_EMBEDDING_DIM = 8
_EMBEDDING_KEY = re.compile(r"^embeddings\.(\d+)\.weight$")


def embedding_dim(cardinality: int) -> int:
    """Width of the embedding of a categorical feature with ``cardinality`` codes: ``min(8, cardinality)``.

    A feature with at most 8 codes gets as many dimensions as codes (as expressive as a one-hot),
    a larger one 8. One rule for torch (``learners.model.TabularNet``, which imports it from here)
    and numpy (``ScoringModel``), so served weights can always be rebuilt as a network.

    >>> embedding_dim(3), embedding_dim(8), embedding_dim(52)
    (3, 8, 8)
    """
    if int(cardinality) != cardinality or cardinality < 1:
        raise ValueError(f"a categorical feature has at least one code, got cardinality {cardinality!r}")
    return min(MAX_EMBEDDING_DIM, int(cardinality))


def embedding_indices(keys: Iterable[str]) -> list[int]:
    """The indices ``i`` of the ``embeddings.i.weight`` keys among ``keys``, in order."""
    return sorted(int(m.group(1)) for m in map(_EMBEDDING_KEY.match, keys) if m)


class _Embedded(NamedTuple):
    """The first layer with the embeddings folded in (see the module's docstring)."""

    numeric_width: int
    numeric_weight: np.ndarray  # [numeric_width, hidden]
    bias: np.ndarray  # [hidden]
    cardinalities: np.ndarray  # [k] float, to compare codes against
    offsets: np.ndarray  # [k] intp: the first row of feature i's part of ``table``
    table: np.ndarray  # [sum of cardinalities, hidden]: embedding times its slice of the first layer


@dataclass(frozen=True, eq=False)
class ScoringModel:
    """One version ready to score: schema + weights as numpy arrays + calibration + network. Immutable.

    A ``network`` other than the built-in one that cannot be imported, built or loaded with the
    weights raises ValueError naming the factory and the reason (``learners.network.load``)."""

    version: str
    schema: FeatureSchema
    weights: dict[str, np.ndarray]
    manifest: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration = IDENTITY
    network: NetworkSpec = BUILTIN

    def __post_init__(self) -> None:
        if not self.network.builtin:
            self._build_torch()
            return
        tables = self._embedding_tables()
        keys = [k for k in self.weights if not k.startswith("embeddings.")]
        try:
            layers = sorted({k.rsplit(".", 1)[0] for k in keys}, key=lambda k: int(k.split(".")[1]))
        except (IndexError, ValueError):
            raise ValueError(f"weights hold keys that are no layer's: {sorted(keys)}") from None
        if not layers:
            raise ValueError("weights hold no layers")
        mats: list[tuple[np.ndarray, np.ndarray]] = []
        for name in layers:
            w, b = self.weights.get(f"{name}.weight"), self.weights.get(f"{name}.bias")
            if w is None or b is None or w.ndim != 2 or b.shape != (w.shape[0],):
                raise ValueError(f"layer {name!r} is malformed")
            if mats and w.shape[1] != mats[-1][0].shape[1]:
                raise ValueError(f"layer {name!r} takes {w.shape[1]} inputs but the layer before gives {mats[-1][0].shape[1]}")
            mats.append((np.ascontiguousarray(w.T), b))
        numeric_width = self.schema.numeric_width
        dims = [t.shape[1] for t in tables]
        inputs = mats[0][0].shape[0]
        if inputs != numeric_width + sum(dims):
            if not tables and numeric_width == len(self.schema.names):
                raise ValueError(f"weights expect {inputs} features but the schema names {len(self.schema.names)}")
            raise ValueError(
                f"the first layer takes {inputs} inputs but the schema gives {numeric_width} numeric columns"
                + (f" + {sum(dims)} embedding dimensions ({' + '.join(map(str, dims))})" if dims else "")
                + f" = {numeric_width + sum(dims)}"
            )
        if mats[-1][0].shape[1] != 2:
            raise ValueError("the last layer must have two outputs (legitimate, fraud)")
        for arr in self.weights.values():
            arr.setflags(write=False)
        object.__setattr__(self, "_layers", tuple(mats))
        if tables:  # chosen once here, so that a model of numbers only runs ``_logit`` exactly as before
            object.__setattr__(self, "_logit", partial(_logit_embedded, _fold(numeric_width, tables, *mats[0]), tuple(mats)))

    def _build_torch(self) -> None:
        """Score with the network's own torch module, in eval mode (``learners.network.load`` copies the weights)."""
        net = load(self.network, self.schema, self.weights)
        for arr in self.weights.values():
            arr.setflags(write=False)
        object.__setattr__(self, "_logit", partial(_logit_torch, net))

    def _embedding_tables(self) -> list[np.ndarray]:
        """The ``embeddings.i.weight`` tables in order, checked against the schema's categorical features."""
        cardinalities = self.schema.cardinalities
        names = [n for n, c in zip(self.schema.names, self.schema.categories) if c is not None]
        embedded = embedding_indices(self.weights)
        if stray := [k for k in self.weights if k.startswith("embeddings.") and not _EMBEDDING_KEY.match(k)]:
            raise ValueError(f"weights hold {stray[0]!r}; an embedding has one weight, 'embeddings.<i>.weight'")
        if embedded != list(range(len(embedded))):
            raise ValueError(f"embedding weights must be numbered 0..{len(embedded) - 1}, found {embedded}")
        if len(embedded) != len(cardinalities):
            raise ValueError(f"weights hold {len(embedded)} embedding table(s) but the schema has "
                             f"{len(cardinalities)} categorical feature(s){': ' + ', '.join(names) if names else ''}")
        tables = []
        for i, c in enumerate(cardinalities):
            t = self.weights[f"embeddings.{i}.weight"]
            feature = names[i] if i < len(names) else f"#{i}"
            if t.ndim != 2:
                raise ValueError(f"embeddings.{i}.weight (feature {feature!r}) is malformed: shape {t.shape}")
            if t.shape[0] != c:
                raise ValueError(f"embeddings.{i}.weight has {t.shape[0]} rows but categorical feature {feature!r} "
                                 f"has {c} codes (vocabulary of {c - 2} + other + missing)")
            if t.shape[1] != embedding_dim(c):
                raise ValueError(f"embeddings.{i}.weight (feature {feature!r}) has {t.shape[1]} dimensions; "
                                 f"{c} codes take embedding_dim({c}) = {embedding_dim(c)}")
            tables.append(t)
        return tables

    def score_normalised(self, z: np.ndarray) -> np.ndarray:
        """Calibrated fraud probability for normalised inputs (what is served)."""
        return _sigmoid(self.calibration.apply_logit(self._logit(z)))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Calibrated fraud probability for raw feature rows in schema order (what is served)."""
        return self.score_normalised(self.schema.transform(x))

    def score_raw(self, x: np.ndarray) -> np.ndarray:
        """The network's own fraud probability, uncalibrated, for raw feature rows in schema order."""
        return _sigmoid(self._logit(self.schema.transform(x)))

    def _logit(self, z: np.ndarray) -> np.ndarray:
        """Fraud logit of the network: softmax over two logits == sigmoid of their difference."""
        h = z
        layers = self._layers  # type: ignore[attr-defined]
        for w, b in layers[:-1]:
            h = np.maximum(h @ w + b, 0.0)
        w, b = layers[-1]
        logits = h @ w + b
        return logits[:, 1] - logits[:, 0]


def _logit_embedded(e: _Embedded, layers: tuple[tuple[np.ndarray, np.ndarray], ...], z: np.ndarray) -> np.ndarray:
    """``ScoringModel._logit`` of weights with embeddings (the first of ``layers`` is folded into ``e``).

    A code that is none of its feature's (negative, too large, NaN) is read as 0 (other), as
    ``TabularNet`` reads it; codes are rounded to integers first."""
    z = np.asarray(z)
    codes = np.rint(z[:, e.numeric_width:])
    index = np.where((codes >= 0) & (codes < e.cardinalities), codes, 0.0).astype(np.intp) + e.offsets
    h = z[:, :e.numeric_width] @ e.numeric_weight + e.table[index].sum(axis=1) + e.bias
    for w, b in layers[1:]:
        h = np.maximum(h, 0.0) @ w + b
    return h[:, 1] - h[:, 0]


def _logit_torch(net: Any, z: np.ndarray) -> np.ndarray:
    """``ScoringModel._logit`` of a network scored by torch (``net``: a ``torch.nn.Module`` in eval
    mode): float32, as the numpy path's."""
    import torch

    with torch.inference_mode():
        logits = net(torch.from_numpy(np.require(z, np.float32, ["C", "W"])))
        return (logits[:, 1] - logits[:, 0]).to(torch.float32).numpy()


def _fold(numeric_width: int, tables: list[np.ndarray], w: np.ndarray, b: np.ndarray) -> _Embedded:
    """The first layer (``w``: [inputs, hidden]) with the embedding ``tables`` multiplied into it."""
    parts, start = [], numeric_width
    for t in tables:
        parts.append((t.astype(np.float64) @ w[start:start + t.shape[1]].astype(np.float64)).astype(np.float32))
        start += t.shape[1]
    cardinalities = np.array([t.shape[0] for t in tables])
    folded = _Embedded(
        numeric_width=numeric_width,
        numeric_weight=np.ascontiguousarray(w[:numeric_width]),
        bias=b,
        cardinalities=cardinalities.astype(np.float64),
        offsets=np.concatenate([[0], np.cumsum(cardinalities)[:-1]]).astype(np.intp),
        table=np.concatenate(parts, axis=0),
    )
    for arr in folded[1:]:
        arr.setflags(write=False)
    return folded


def _sigmoid(logit: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(np.clip(-logit, -60, 60)))
