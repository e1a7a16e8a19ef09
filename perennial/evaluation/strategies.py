"""The strategies compared, all starting from the same pretrained version and seeing the same labels.

``product`` is Perennial's own learner (``learners.learner.Learner``: replay + online EWC, holdout,
gates, label guard, probation, drift reaction), fed the events in the documented JSON format and
publishing into a registry of its own. The ablations use the same Avalanche adapter and the same
rounds with parts left out and no gates. The retraining baselines fit a fresh network (and a fresh
normalisation) on a window of labels at a fixed cadence. ``river`` is an online logistic regression
learning every label as it arrives.
"""

from __future__ import annotations

import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from learners.avalanche_adapter import ContinualLearner
from learners.model import state_numpy
from learners.network import trainable
from learners.pretrain import fit
from learners.schema import FeatureSchema
from learners.scoring import ScoringModel
from perennial.evaluation.scores import assert_spread
from perennial.settings import LearnSettings, Settings
from streams.predictions import CategoryKeys

VALIDATION_SHARE = 0.2
"""The latest share of a retraining window that validates (pretraining's split of its history)."""
PATIENCE = 3
"""Epochs without a better validation log-loss before a retraining stops."""
MAX_EPOCHS = 50
"""Most epochs of one retraining (early stopping kept 1 to 22 on the default scenario and on a
0.17%-fraud table)."""
MIN_FRAUDS = 10
"""Fewest frauds in the training part of a window for a retraining (pretraining needs as many)."""

STRATEGIES = ("frozen", "naive", "replay", "ewc", "product", "sliding", "cumulative", "river")
EXTRA = ("product_no_drift_reaction", "operated")
DESCRIPTIONS = {
    "frozen": "the pretrained version, never updated",
    "naive": "fine-tuning in the same rounds, no replay, no EWC, no gates",
    "replay": "fine-tuning with class-balanced replay only, no gates",
    "ewc": "fine-tuning with online EWC only, no gates",
    "product": "Perennial's learner: replay + online EWC, gates, label guard, probation, drift reaction",
    "product_no_drift_reaction": "Perennial's learner with the drift reaction off",
    "operated": "Perennial's learner with an operator who confirms a concept change (POST /v1/learner/concept-change) at the "
                "first contradiction alert",
    "sliding": "periodic full retraining on a sliding window of recent labels",
    "cumulative": "periodic full retraining on everything labeled so far, history included",
    "river": "river online logistic regression, learning each label as it arrives",
}


class Strategy(ABC):
    """What the harness drives: labels in as they arrive, scores out for the events of the moment."""

    name = ""

    def learn(self, x: np.ndarray, y: np.ndarray, label_time: np.ndarray, now: float) -> None:  # noqa: B027 - a default
        """Labels that arrived since the last call (in arrival order); ``now`` is the stream time.
        A strategy that never updates (frozen) keeps this default."""

    @abstractmethod
    def score(self, x: np.ndarray) -> np.ndarray:
        """Fraud probabilities of raw feature rows by the model served now."""

    @property
    def version(self) -> object:
        """Which model is served: it changes exactly when the served model does (a frozen strategy's
        never does). The harness reads it after every ``learn`` to follow the alert volume per version."""
        return 0

    def summary(self) -> dict[str, Any]:
        return {}


class Frozen(Strategy):
    def __init__(self, model: ScoringModel):
        self.model = model

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.model.score(x)


class FineTuning(Strategy):
    """Rounds of ``round_events`` labels through the Avalanche adapter; every round is served."""

    def __init__(self, model: ScoringModel, config: LearnSettings, round_events: int):
        self.schema = model.schema
        self.adapter = ContinualLearner(trainable(model), config)
        self.round_events = round_events
        self.served = model
        self.bx: list[np.ndarray] = []
        self.by: list[np.ndarray] = []
        self.rounds = 0

    def learn(self, x, y, label_time, now) -> None:
        self.bx.append(x)
        self.by.append(y)
        bx, by = np.concatenate(self.bx), np.concatenate(self.by)
        while len(by) >= self.round_events:
            self.adapter.learn(self.schema.transform(bx[: self.round_events]), by[: self.round_events])
            bx, by = bx[self.round_events :], by[self.round_events :]
            self.rounds += 1
            self.served = ScoringModel(f"r{self.rounds}", self.schema, self.adapter.weights(), network=self.served.network)
        self.bx, self.by = [bx], [by]

    def score(self, x):
        return self.served.score(x)

    @property
    def version(self) -> object:
        return self.rounds

    def summary(self):
        return {"rounds": self.rounds}


class Product(Strategy):
    """The learner of `perennial learn`, without the broker: events go through ``Learner.handle``."""

    def __init__(self, registry: Path, settings: Settings, names: tuple[str, ...]):
        from learners.learner import Learner
        from learners.metrics import LearnerMetrics

        self.dir = Path(tempfile.mkdtemp(prefix="perennial-eval-"))
        shutil.copytree(registry, self.dir / "registry")
        learn = settings.learn.model_copy(update={"checkpoint_path": self.dir / "checkpoint.safetensors", "round_max_s": 1e12, "metrics_port": 0,
                                                  "numeric_threads": 1})  # the harness runs one strategy per core
        self.settings = settings.model_copy(update={"learn": learn, "registry": settings.registry.model_copy(update={"path": self.dir / "registry"})})
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.learner = Learner(self.settings, LearnerMetrics(), lambda kind, **f: self.log.append((kind, f)))
        self.names = names
        self.drifts: list[float] = []
        self.n = 0
        self.dead_letters = _NoDeadLetters()

    def learn(self, x, y, label_time, now) -> None:
        names = self.names
        keys = CategoryKeys(self.learner.schema.features)  # as a producer sends them: categories by key, a gap as null
        for row, label, t in zip(x.tolist(), y.tolist(), label_time.tolist()):
            self.n += 1
            raw = orjson.dumps({"id": f"e{self.n}", "time": t, "label": label, "features": dict(zip(names, keys.in_row(row)))})
            self.learner.handle(raw, None, ("eval", 0, self.n), self.dead_letters)
            if self.learner.round_due():
                before = len(self.log)
                self.learner.train_round(lambda manifest: None)
                self.drifts += [now for kind, _ in self.log[before:] if kind == "drift"]
                self.after_round(self.log[before:], now)

    def after_round(self, logged: list[tuple[str, dict[str, Any]]], now: float) -> None:
        """What an operator does after a round (nothing, unless a subclass plays one)."""

    def score(self, x):
        return self.learner.incumbent.score(x)

    @property
    def version(self) -> object:
        return self.learner.incumbent.version

    def summary(self):
        kinds = [k for k, _ in self.log]
        out = {
            "rounds": self.learner.acct.rounds, "published": self.learner.acct.published,
            "gate_failures": sum(1 for k, f in self.log if k == "gate" and not f["passed"]),
            "quarantines": kinds.count("quarantine"), "rollbacks": kinds.count("rollback"), "resets": kinds.count("reset"),
            "drifts": self.drifts,
        }
        shutil.rmtree(self.dir, ignore_errors=True)
        return out


class Operated(Product):
    """The product with an operator who reads the contradiction alert: once the guard has flagged
    ``streak`` rounds in a row (1: at the first alert; 3 confirmed two days late on the recurrence
    scenario, 0.667 AP against 0.843), the operator checks, finds a concept change rather than
    poisoning, and confirms it, as ``POST /v1/learner/concept-change`` does. The harness has no
    poisoning, so this operator is never wrong; in production that judgement is the operator's."""

    def __init__(self, *args, streak: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.streak, self.flagged = streak, 0
        self.changes: list[float] = []

    def after_round(self, logged, now) -> None:
        flagged = any(kind == "quarantine" and fields.get("reason") == "contradiction" for kind, fields in logged)
        self.flagged = self.flagged + 1 if flagged else 0
        if self.flagged >= self.streak and not self.learner.change.active:
            self.learner.apply({"id": f"operator-{len(self.changes)}", "action": "concept_change", "reason": "contradiction alert"}, None,
                               lambda manifest: None)
            self.changes.append(now)
            self.flagged = 0

    def summary(self):
        return {**super().summary(), "concept_changes": self.changes}


class _NoDeadLetters:
    def send(
        self, raw: bytes | None, key: bytes | None, reason: str, message: str, source: tuple[str, int, int],
        on_delivery: Callable[[Exception | None], None],
    ) -> None:
        raise ValueError(f"the evaluation produced a malformed event ({reason}): {message}")


class Retraining(Strategy):
    """A fresh network fitted every ``every_s`` on the labels of the last ``window_s`` (None: all),
    the way the pretrained version was: the same shape, loss (plain cross-entropy, no class
    weights) and optimiser, and a fresh normalisation. The number of epochs comes from early
    stopping: fitted on the window's earlier labels (in arrival order), validated on its latest
    ``VALIDATION_SHARE`` (the split pretraining makes of its history), stopped once their log-loss
    has not improved for ``PATIENCE`` epochs. The model served is then fitted on the whole window
    for that many epochs, so that the freshest labels are learned too. Every retrained model is
    deployed; one that collapsed stops the run (``CollapsedModel``).
    (Deploying only a model that beat the one in service on the latest tenth of the labels was tried:
    on a few thousand labels that check is noise, and it lowered both baselines' mean AP.)"""

    def __init__(self, model: ScoringModel, history_x, history_y, history_t, *, every_s: float, window_s: float | None, max_epochs: int, seed: int):
        self.served = model
        self.xs, self.ys, self.ts = [history_x], [history_y], [history_t]
        self.every_s, self.window_s, self.max_epochs, self.seed = every_s, window_s, max_epochs, seed
        self.last: float | None = None
        self.retrains = 0
        self.epochs: list[int] = []

    def learn(self, x, y, label_time, now) -> None:
        self.xs.append(x)
        self.ys.append(y)
        self.ts.append(label_time)
        if self.last is None:
            self.last = now
        if now - self.last < self.every_s:
            return
        self.last = now
        X, Y, T = (np.concatenate(a) for a in (self.xs, self.ys, self.ts))
        self.xs, self.ys, self.ts = [X], [Y], [T]
        if self.window_s is not None:
            keep = now - self.window_s <= T
            X, Y = X[keep], Y[keep]
        cut = int(len(Y) * (1 - VALIDATION_SHARE))
        if Y[:cut].sum() < MIN_FRAUDS or not Y[cut:].any():
            return
        self.served = self._retrain(X, Y, cut, now)

    def _retrain(self, x, y, cut: int, now: float) -> ScoringModel:
        seed = self.seed + self.retrains
        _, epochs = self._fit(x[:cut], y[:cut], seed, self.max_epochs, validation=(x[cut:], y[cut:]))
        model, _ = self._fit(x, y, seed, epochs)
        self.retrains += 1
        self.epochs.append(epochs)
        assert_spread(model.score(x[cut:]), f"{self.name} retrain {self.retrains} (stream time {now:.0f}, {len(y)} labels, "
                      f"{int(y.sum())} frauds, {epochs} epochs), on its {len(y) - cut} latest labels")
        return model

    def _fit(self, x, y, seed: int, epochs: int, validation: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[ScoringModel, int]:
        served = self.served.schema
        # raw vectors of categories and gaps cannot be refitted (their codes are no numbers): keep the pretrained encoding
        plain = not any(served.optional) and all(c is None for c in served.categories)
        schema = FeatureSchema.fit(served.names, x) if plain else served
        net = fresh_network(self.served, seed)
        val = None if validation is None else (schema.transform(validation[0]), validation[1])
        kept = fit(net, schema.transform(x), y, epochs, seed, validation=val, patience=PATIENCE)
        return ScoringModel(f"retrain{self.retrains + 1}", schema, state_numpy(net.state_dict()), network=self.served.network), kept

    def score(self, x):
        return self.served.score(x)

    @property
    def version(self) -> object:
        return self.retrains

    def summary(self):
        return {"retrains": self.retrains, "epochs": self.epochs}


def fresh_network(model: ScoringModel, seed: int) -> torch.nn.Module:
    """A newly initialised network of ``model``'s architecture (the built-in one shaped after its
    weights, or its own factory's): every layer that can be reset is."""
    net = trainable(model)
    torch.manual_seed(seed)
    for layer in net.modules():
        if callable(reset := getattr(layer, "reset_parameters", None)):
            reset()
    return net


class RiverOnline(Strategy):
    """river's LogisticRegression on the pretrained normalisation, warmed on the history, then
    learning every label as it arrives (in mini-batches of one arrival step, river's learn_many)."""

    def __init__(self, model: ScoringModel, history_x, history_y, lr: float = 0.01):
        import pandas as pd
        from river import linear_model, optim

        self.pd = pd
        self.schema = model.schema
        self.model = linear_model.LogisticRegression(optimizer=optim.SGD(lr))
        self.updates = 0
        for i in range(0, len(history_y), 256):
            self._learn(history_x[i : i + 256], history_y[i : i + 256])

    def _frame(self, x):
        return self.pd.DataFrame(self.schema.transform(x).astype(np.float64), columns=list(self.schema.input_names))

    def _learn(self, x, y) -> None:
        if len(y):
            self.model.learn_many(self._frame(x), self.pd.Series(y.astype(bool)))

    def learn(self, x, y, label_time, now) -> None:
        for i in range(0, len(y), 256):
            self._learn(x[i : i + 256], y[i : i + 256])
        self.updates += bool(len(y))

    @property
    def version(self) -> object:
        return self.updates

    def score(self, x):
        if not len(x):
            return np.zeros(0)
        proba = self.model.predict_proba_many(self._frame(x))
        if True not in proba.columns:
            return np.zeros(len(x))
        return proba[True].to_numpy()  # type: ignore[index]  # river types it as any narwhals frame; pandas in, pandas out


def build(name: str, *, model: ScoringModel, registry: Path, settings: Settings, history: tuple[np.ndarray, np.ndarray, np.ndarray],
          retrain_every_s: float, window_s: float, seed: int) -> Strategy:
    """One strategy by name, from the pretrained ``model`` (published in ``registry``)."""
    cfg = settings.learn
    torch.manual_seed(seed)
    makers: dict[str, Callable[[], Strategy]] = {
        "frozen": lambda: Frozen(model),
        "naive": lambda: FineTuning(model, cfg.model_copy(update={"replay_size": 0, "ewc_lambda": 0.0}), cfg.round_events),
        "replay": lambda: FineTuning(model, cfg.model_copy(update={"ewc_lambda": 0.0}), cfg.round_events),
        "ewc": lambda: FineTuning(model, cfg.model_copy(update={"replay_size": 0}), cfg.round_events),
        "product": lambda: Product(registry, settings, model.schema.names),
        "product_no_drift_reaction": lambda: Product(
            registry, settings.model_copy(update={"learn": cfg.model_copy(update={"drift_reaction": False})}), model.schema.names
        ),
        "operated": lambda: Operated(registry, settings, model.schema.names),
        "sliding": lambda: Retraining(model, *history, every_s=retrain_every_s, window_s=window_s, max_epochs=MAX_EPOCHS, seed=seed),
        "cumulative": lambda: Retraining(model, *history, every_s=retrain_every_s, window_s=None, max_epochs=MAX_EPOCHS, seed=seed),
        "river": lambda: RiverOnline(model, *history[:2]),
    }
    if name not in makers:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(makers)}")
    strategy = makers[name]()
    strategy.name = name
    return strategy
