"""Pretraining: fit the first version on historical labeled events and fix the retention set.

History is split by time: the earlier 80% trains, the later 20% validates and supplies the
retention (anchor) set, which the model is never trained on and must keep knowing. The retention set
is sized by frauds, not rows: every fraud of the validation part (up to ``retention_frauds``, a
uniform sample above it) and a uniform sample of ``retention_size`` legitimate events, each weighted
by how many events of its class it stands for. Its weighted AP estimates the AP at the real fraud
rate, on enough frauds that the gates' intervals are narrow (a class-balanced sample of 2,000 held 39
frauds of a 0.17%-fraud history). Every later candidate is compared with the incumbent on it. The
validation part also fits the calibration that makes the first version's served scores fraud
probabilities (Platt scaling, see learners/calibration.py). A class-balanced sample of the training
part seeds the learner's replay memory, so patterns of the history that are rare in the stream (or
absent from it for a while) keep being rehearsed from the first round on.

The history's rows are numbers, or cells of any kind (text, booleans, empty cells: a table as
streams/tables.py reads it). The feature schema is fitted on the training part (``fit_schema``,
with an optional declaration of what is a category and what may be missing), every row is encoded
to its raw vector (``FeatureSchema.encode_rows``: NaN for a missing number, a code per category)
and the network (``network``: the built-in MLP unless a spec names a factory, learners/network.py)
is trained on their transform. The retention set and the replay seed hold raw vectors, as the
learner's stream does. A history of numbers only, without gaps, goes through exactly as before
categories existed.

Pretraining only ever writes into a registry without versions: over one that has versions it would
replace the retention set every version was judged on and the replay seed, and serve an ungated
version. Starting over means pretraining a new registry directory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from learners import network as networks
from learners.calibration import fit_platt
from learners.model import state_numpy
from learners.network import NetworkSpec
from learners.quality import roc_auc
from learners.registry import Registry, RegistryError
from learners.schema import FeatureSchema, parse_declaration
from learners.schema import _missing as is_missing
from learners.stats import average_precision


def ensure_no_versions(registry: Registry) -> None:
    """Raise RegistryError if the registry holds any version: pretraining must not write over it."""
    if versions := registry.versions():
        raise RegistryError(
            f"registry {registry.root} already holds versions {versions[0]} to {versions[-1]}; pretraining never writes "
            "over them (it would replace their retention set and replay seed and serve an ungated version). "
            "To start over, pretrain into a new directory (--registry) and point the learner and servers at it; "
            "to pretrain only a registry without versions, pass --if-empty"
        )


def served_version(registry: Registry) -> str | None:
    """What `perennial pretrain --if-empty` finds: the version a sound registry serves, or None for an
    empty registry (no versions, no retention set, no replay seed). Anything in between raises
    RegistryError, saying what to do: it is a registry to repair, not to pretrain over."""
    versions = registry.versions()
    if not versions:
        leftovers = [p.name for p in (registry.retention_path, registry.replay_seed_path) if p.exists()]
        if leftovers:
            raise RegistryError(
                f"registry {registry.root} has no version but has {' and '.join(leftovers)} (an interrupted pretraining, "
                "or versions lost); --if-empty changed nothing. Restore the versions from a backup, or run "
                "`perennial pretrain` without --if-empty to fit a first version and a new retention set"
            )
        return None
    try:
        version = registry.current_version()
        if version is None:
            raise RegistryError(f"there is no CURRENT ({registry.current_path})")
        registry.load(version)
    except RegistryError as exc:
        raise RegistryError(
            f"registry {registry.root} holds versions {versions[0]} to {versions[-1]} but nothing to serve: {exc}. "
            f"--if-empty pretrains only a registry without versions, so nothing was changed. {_repair_hint(registry, versions)}"
        ) from None
    return version


def _repair_hint(registry: Registry, versions: list[str]) -> str:
    for version in reversed(versions):
        try:
            registry.load(version)
        except RegistryError:
            continue
        return (f"Write the id of the version to serve into CURRENT (the newest sound version is {version}: "
                f"printf '{version}\\n' > {registry.current_path}), or restore the registry from a backup")
    return "No version verifies: restore the registry from a backup"


def retention_sample(y: np.ndarray, frauds: int, legitimate: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (sorted) and weights of a retention set: up to ``frauds`` frauds and ``legitimate``
    legitimate events, each drawn uniformly within its class and weighted by the events of its class
    it stands for.

    >>> y = np.r_[np.ones(10), np.zeros(1000)].astype(int)
    >>> idx, w = retention_sample(y, 100, 100, np.random.default_rng(0))
    >>> int(y[idx].sum()), len(idx), sorted(set(w.tolist()))
    (10, 110, [1.0, 10.0])
    """
    parts, weights = [], []
    for members, size in ((np.flatnonzero(y == 1), frauds), (np.flatnonzero(y == 0), legitimate)):
        take = min(len(members), size)
        parts.append(rng.choice(members, take, replace=False))
        weights.append(np.full(take, len(members) / take if take else 1.0))
    idx, w = np.concatenate(parts), np.concatenate(weights)
    order = np.argsort(idx)
    return idx[order], w[order]


def class_balanced_sample(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``size`` rows, half fraud and half legitimate where enough fraud exists."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_pos = min(len(pos), size // 2)
    n_neg = min(len(neg), size - n_pos)
    return np.sort(np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)]))


def fit(
    net: nn.Module,
    z: np.ndarray,
    y: np.ndarray,
    epochs: int,
    seed: int,
    batch_size: int = 512,
    lr: float = 2e-3,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    patience: int = 3,
) -> int:
    """Plain mini-batch training of ``net`` on normalised inputs; returns the epochs it kept.

    Without ``validation``: ``epochs`` epochs. With ``validation`` (normalised inputs and labels):
    at most ``epochs``, stopped once the validation log-loss has not improved for ``patience``
    epochs, and ``net`` is left with the weights of its best epoch."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(z), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    best_loss, best_epoch, best_state = float("inf"), epochs, None
    for epoch in range(1, epochs + 1):
        net.train()
        perm = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            loss_fn(net(xt[idx]), yt[idx]).backward()
            opt.step()
        if validation is None:
            continue
        loss = _log_loss(net, *validation)
        if loss < best_loss:
            best_loss, best_epoch, best_state = loss, epoch, {k: v.clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    return best_epoch


TRAIN_SHARE = 0.8
"""The earlier share of history that trains (and fits the schema); the rest validates."""


def fit_schema(names: tuple[str, ...], x: Any, declaration: Any = None) -> FeatureSchema:
    """The schema ``pretrain`` fits: on the training part of history (``x``: its rows in time order),
    following ``declaration`` (learners/schema.parse_declaration) where it says anything.

    A feature with a gap only in the later part (which the fit does not see) is made optional, as a
    gap in the training part would make it, unless the declaration says ``missing: false``: then
    encoding the later part refuses the gap, naming row and feature."""
    declared = {d["name"]: d for d in ([] if declaration is None else parse_declaration(declaration))}
    for name in _gaps(names, x):
        declared[name] = {"missing": True, **declared.get(name, {}), "name": name}
    return FeatureSchema.fit(names, x[: int(len(x) * TRAIN_SHARE)], declaration=list(declared.values()) or None)


def _gaps(names: tuple[str, ...], x: Any) -> list[str]:
    """The features with an empty cell (None, NaN, pandas NA) somewhere in ``x``."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "biuf":
        empty = np.asarray(np.isnan(x).any(axis=0) if x.dtype.kind == "f" and x.ndim == 2 else np.zeros(len(names), dtype=bool))
    else:
        cells = np.asarray(x, dtype=object)
        if cells.ndim != 2 or cells.shape[1] != len(names):
            return []  # FeatureSchema.fit says what is wrong with the shape
        empty = np.array([any(map(is_missing, cells[:, j])) for j in range(len(names))], dtype=bool)
    return [name for name, e in zip(names, empty) if e]


def _log_loss(net: nn.Module, z: np.ndarray, y: np.ndarray) -> float:
    net.eval()
    with torch.inference_mode():
        return float(torch.nn.functional.cross_entropy(net(torch.from_numpy(z)), torch.from_numpy(y)))


def pretrain(
    names: tuple[str, ...],
    x: Any,
    y: np.ndarray,
    registry: Registry,
    *,
    schema: FeatureSchema | None = None,
    encoded: bool = False,
    network: NetworkSpec | None = None,
    epochs: int = 8,
    hidden: int = 64,
    retention_size: int = 20000,
    retention_frauds: int = 2000,
    replay_seed_size: int = 4000,
    seed: int = 0,
    contradiction_score: float = 0.5,
) -> dict[str, Any]:
    """Fit, publish the first version and save the retention set. Rows must be in time order.

    ``x``: the history's rows (see the module's docstring); ``schema``: as ``fit_schema`` fits it
    (default: fitted here, without a declaration); ``encoded``: ``x`` holds the raw vectors of
    ``schema`` already (``schema.encode_rows``'s output, as the evaluation's scenarios keep them), not
    cells; ``network``: the architecture (default: the built-in MLP with ``hidden`` units per layer). A row that the schema cannot encode raises
    EventError (a ValueError) naming row and feature; a network that cannot be built, ValueError."""
    ensure_no_versions(registry)
    if len(y) < 100 or y.sum() < 10:
        raise ValueError(f"history has {len(y)} events and {int(y.sum())} frauds; pretraining needs at least 100 and 10")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cut = int(len(y) * TRAIN_SHARE)
    if not 0 < y[cut:].sum() < len(y) - cut:
        raise ValueError(
            f"the later 20% of history ({len(y) - cut} events) holds {int(y[cut:].sum())} frauds: it validates, calibrates and "
            "supplies the retention set, so it needs frauds and legitimate events; give a longer history"
        )
    if encoded and schema is None:
        raise ValueError("encoded rows need the schema that encoded them")
    schema = schema or fit_schema(names, x)
    if schema.names != tuple(names):
        raise ValueError(f"the schema names features {', '.join(schema.names)}, the history {', '.join(names)}")
    raw = np.asarray(x, dtype=np.float64) if encoded else schema.encode_rows(x)
    spec = network or NetworkSpec(kwargs={"hidden": hidden})
    net = networks.build(spec, schema)
    try:
        fit(net, schema.transform(raw[:cut]), y[:cut], epochs, seed)
        net.eval()
        with torch.inference_mode():
            val_scores = torch.softmax(net(torch.from_numpy(schema.transform(raw[cut:]))), 1)[:, 1].numpy()
        if not np.isfinite(val_scores).all():
            raise ValueError(f"it scores {int((~np.isfinite(val_scores)).sum())} validation event(s) NaN or infinite")
        calibration = fit_platt(val_scores, y[cut:])
    except (RuntimeError, ValueError, TypeError) as exc:  # a network of a user's own: say which, and why, before anything is written
        if spec.builtin:
            raise
        raise ValueError(f"network {spec.factory} cannot be trained on this history ({type(exc).__name__}: {exc})") from exc
    # the contradiction guard's first usual rate, at the scores the learner's guard sees: served ones
    called_fraud = calibration.apply(val_scores) >= contradiction_score
    retention, retention_w = retention_sample(y[cut:], retention_frauds, retention_size, rng)
    registry.save_retention(raw[cut:][retention], y[cut:][retention], retention_w)
    seed_rows = class_balanced_sample(y[:cut], replay_seed_size, rng)
    registry.save_replay_seed(raw[:cut][seed_rows], y[:cut][seed_rows])
    metrics = {
        "train_events": cut,
        "train_frauds": int(y[:cut].sum()),
        "fraud_rate": float(y.mean()),
        "validation_events": len(y) - cut,
        "validation_frauds": int(y[cut:].sum()),
        "validation_ap": average_precision(y[cut:], val_scores),
        "validation_auc": roc_auc(y[cut:], val_scores),
        "validation_unseen_categories": schema.unseen(raw[cut:]),
        "retention_ap": average_precision(y[cut:][retention], val_scores[retention], retention_w),
        "retention_events": len(retention),
        "retention_frauds": int(y[cut:][retention].sum()),
        "contradiction_score": contradiction_score,
        "validation_called_fraud": int(called_fraud.sum()),
        "validation_contradicted": int((y[cut:][called_fraud] == 0).sum()),
        **{f"calibration_{k}": v for k, v in calibration.figures.items() if k.startswith(("ece_", "log_loss_"))},
    }
    return registry.publish(
        state_numpy(net.state_dict()),
        schema,
        network=spec,
        parent=None,
        metrics=metrics,
        gate_report={"passed": True, "reasons": ["pretraining: first version, validated on the later 20% of history"], "metrics": metrics},
        calibration=calibration,
    )
