"""The one module that talks to Avalanche (avalanche-lib).

Each training round is one Avalanche experience trained by its ``Naive`` template with
``ReplayPlugin`` (class-balanced or reservoir storage) and ``EWCPlugin(mode="online")``: replayed
events are mixed into every mini-batch, and the online-EWC penalty keeps weights that mattered for
earlier rounds close to where they were. The rest of the code sees ``ContinualLearner``:
``learn(x, y)``, ``predict(x)``, ``weights()``, ``state()`` / ``restore()``.

Inputs are normalised float32 features (the schema's encoded rows, ``[N, input_width]``); labels are
0/1. The network is any ``torch.nn.Module`` mapping those rows to ``[N, 2]`` logits (legitimate,
fraud): the built-in ``TabularNet`` or a user's (learners/network.py). Nothing here reads its
architecture: training, replay, EWC (over its ``named_parameters``) and the checkpoint (its
``state_dict``, buffers included) work on any.

Avalanche's data path is general and per-sample: every mini-batch walks a chain of dataset
wrappers for each of its rows and collates them one by one, which costs far more than the forward
and backward pass of a small tabular network. Our datasets are always flat tensors, so this module
keeps Avalanche's samplers and plugins (the same batches, the same replay mix, the same importances)
and only fetches each mini-batch with one tensor index (``_TensorReplayDataLoader``, ``_EWC``,
``_gather``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as tensor_dataset
    from avalanche.benchmarks.utils.data_loader import MultiDatasetSampler, ReplayDataLoader
    from avalanche.benchmarks.utils.flat_data import LazyIndices
    from avalanche.training.plugins import EWCPlugin, ReplayPlugin, SupervisedPlugin
    from avalanche.training.plugins.evaluation import EvaluationPlugin
    from avalanche.training.storage_policy import ClassBalancedBuffer, ReservoirSamplingBuffer
    from avalanche.training.supervised import Naive
    from avalanche.training.utils import ParamData

from learners.model import state_numpy
from perennial.settings import LearnSettings


class _Replay(ReplayPlugin):
    """Avalanche's ReplayPlugin: its storage policy keeps the memory, its loader mixes a memory batch
    into every batch of new events. Two changes: storage is updated through ``post_adapt`` (the API
    that replaces the deprecated ``update``, which warns on every round), and the loader fetches
    batches as tensors (``_TensorReplayDataLoader``)."""

    def before_training_exp(self, strategy, num_workers=0, shuffle=True, drop_last=False, **kwargs):
        if len(self.storage_policy.buffer) == 0:
            return  # as ReplayPlugin: nothing to replay yet, the strategy's own loader
        strategy.dataloader = _TensorReplayDataLoader(
            strategy.adapted_dataset,
            self.storage_policy.buffer,
            oversample_small_tasks=True,
            batch_size=self.batch_size or strategy.train_mb_size,
            batch_size_mem=self.batch_size_mem or strategy.train_mb_size,
            task_balanced_dataloader=self.task_balanced_dataloader,
            num_workers=num_workers,
            shuffle=shuffle,
            drop_last=drop_last,
        )

    def after_training_exp(self, strategy, **kwargs):  # Avalanche's signature
        self.storage_policy.post_adapt(strategy, strategy.experience)


class _TensorReplayDataLoader(ReplayDataLoader):
    """ReplayDataLoader with its own sampler (``MultiDatasetSampler``: which rows of new and replayed
    events make each batch) and a fetch of one tensor index per batch. It also skips the FFCV probe,
    which walks every dataset's tree on every epoch."""

    def _get_loader(self):  # Avalanche's signature
        samplers = self._create_samplers(self.datasets, self.batch_sizes, self.distributed_sampling, self.loader_kwargs)
        batches = MultiDatasetSampler(
            self.datasets, samplers, termination_dataset_idx=self.termination_dataset,
            oversample_small_datasets=self.oversample_small_datasets, never_ending=self.never_ending,
        )
        parts = [_gather(d) for d in self.datasets]
        rows = _TensorBatches(torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]))
        return DataLoader(rows, batch_sampler=batches, collate_fn=_as_batch)


class _EWC(EWCPlugin):
    """Avalanche's online EWCPlugin; its importances are computed by its own code over the
    experience's rows fetched a batch at a time."""

    def compute_importances(self, model, criterion, optimizer, dataset, device, batch_size, num_workers=0):
        return super().compute_importances(model, criterion, optimizer, _TensorBatches(*_gather(dataset)), device, batch_size, num_workers)


class _TensorBatches(Dataset):
    """Rows of (x, y) in task 0, fetched a mini-batch at a time: a DataLoader hands ``__getitems__``
    the batch's indices and ``collate_fn`` passes the result through."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y, self.t = x, y, torch.zeros_like(y)

    def __len__(self) -> int:
        return len(self.y)

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        i = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return [self.x[i], self.y[i], self.t[i]]

    @staticmethod
    def collate_fn(batch: list[torch.Tensor]) -> list[torch.Tensor]:
        return batch


_as_batch = _TensorBatches.collate_fn


class _LossProbe(SupervisedPlugin):
    """Records the loss as it stands when its ``before_backward`` runs (before or after EWC adds its penalty)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[float] = []

    def before_backward(self, strategy, **kwargs):  # Avalanche's signature
        self.values.append(float(strategy.loss.detach()))


@dataclass(frozen=True)
class RoundStats:
    events: int
    train_loss: float
    ewc_penalty: float
    replay_size: int
    replay_positives: int


class ContinualLearner:
    def __init__(self, net: nn.Module, config: LearnSettings | None = None):
        """``config`` is the `learn` settings (their fine-tuning fields: learning rate, batch size,
        epochs, replay, EWC); the settings' defaults when none are given."""
        config = config if config is not None else LearnSettings()
        self.config = config
        self.net = net
        self.optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
        # replay_size 0 or ewc_lambda 0 leave that plugin out (the ablations of `perennial evaluate`)
        self.replay = _Replay(mem_size=config.replay_size, storage_policy=self._storage()) if config.replay_size > 0 else None
        self.ewc = _EWC(ewc_lambda=config.ewc_lambda, mode="online", decay_factor=config.ewc_decay) if config.ewc_lambda > 0 else None
        self._before_ewc, self._after_ewc = _LossProbe(), _LossProbe()
        plugins = [p for p in (self.replay, self._before_ewc, self.ewc, self._after_ewc) if p is not None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.strategy = Naive(
                model=net,
                optimizer=self.optimizer,
                criterion=torch.nn.CrossEntropyLoss(),
                train_mb_size=config.batch_size,
                train_epochs=config.epochs,
                device="cpu",
                plugins=plugins,
                evaluator=EvaluationPlugin(loggers=[]),
                eval_every=-1,
            )

    def _storage(self) -> ClassBalancedBuffer | ReservoirSamplingBuffer:
        """An empty replay storage of the configured policy."""
        size = max(self.config.replay_size, 1)
        if self.config.replay_policy == "class_balanced":
            return ClassBalancedBuffer(max_size=size, adaptive_size=True)
        if self.config.replay_policy == "reservoir":
            return ReservoirSamplingBuffer(max_size=size)
        raise ValueError(f"unknown replay policy {self.config.replay_policy!r}; use class_balanced or reservoir")

    # -- the learner interface --------------------------------------------------------------

    def forget(self) -> None:
        """Let go of the past (a concept change an operator confirmed): an empty replay memory and
        zero EWC importances, so nothing pulls the weights back to the old concept; the weights stay."""
        if self.replay is not None:
            self.replay.storage_policy = self._storage()
        counter = self.strategy.clock.train_exp_counter
        if counter > 0 and self.ewc is not None:
            for p in self.ewc.importances[counter - 1].values():
                p.data.zero_()

    def learn(self, x: np.ndarray, y: np.ndarray) -> RoundStats:
        """Train one round (one Avalanche experience) on new events."""
        dataset = tensor_dataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long))
        experience = benchmark_from_datasets(train=[dataset]).train_stream[0]
        self._before_ewc.values.clear()
        self._after_ewc.values.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.strategy.train(experience)
        self._compact_replay()
        before, after = self._before_ewc.values, self._after_ewc.values
        _, replay_y = self._replay_arrays()
        return RoundStats(
            events=len(y),
            train_loss=float(np.mean(before)) if before else float("nan"),
            ewc_penalty=float(np.mean(np.subtract(after, before))) if after else 0.0,
            replay_size=len(replay_y),
            replay_positives=int(replay_y.sum()),
        )

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = value

    @torch.inference_mode()
    def predict(self, x: np.ndarray) -> np.ndarray:
        self.net.eval()
        logits = self.net(torch.as_tensor(x, dtype=torch.float32))
        self.net.train()
        return torch.softmax(logits, dim=1)[:, 1].numpy()

    def weights(self) -> dict[str, np.ndarray]:
        return state_numpy(self.net.state_dict())

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Start over from other weights (e.g. the served version); the replay memory and EWC anchors stay."""
        self.net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
        self.optimizer.state.clear()

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to resume: tensors (for safetensors) and JSON-able metadata."""
        tensors = {f"model.{k}": v.detach().clone() for k, v in self.net.state_dict().items()}
        opt = self.optimizer.state_dict()
        # JSON-native (tuples become lists) so the state is the same before and after a checkpoint
        opt_meta: dict[str, Any] = {"param_groups": orjson.loads(orjson.dumps(opt["param_groups"])), "state": {}}
        for idx, st in opt["state"].items():
            opt_meta["state"][str(idx)] = sorted(st)
            for key, val in st.items():
                tensors[f"opt.{idx}.{key}"] = torch.as_tensor(val).clone()
        groups = self._replay_groups()
        for name, (buf, _) in groups.items():
            x, y = _gather(buf.buffer)
            tensors[f"replay.{name}.x"], tensors[f"replay.{name}.y"] = x, y
            tensors[f"replay.{name}.w"] = buf._buffer_weights.clone()
        counter = self.strategy.clock.train_exp_counter
        if counter > 0 and self.ewc is not None:
            for k, p in self.ewc.importances[counter - 1].items():
                tensors[f"ewc.importance.{k}"] = p.data.clone()
            for k, p in self.ewc.saved_params[counter - 1].items():
                tensors[f"ewc.anchor.{k}"] = p.data.clone()
        meta = {
            "optimizer": opt_meta,
            "replay_policy": self.config.replay_policy,
            "replay_groups": {name: max_size for name, (_, max_size) in groups.items()},
            "rounds": counter,
        }
        return tensors, meta

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if meta["replay_policy"] != self.config.replay_policy:
            raise ValueError(
                f"checkpoint used replay policy {meta['replay_policy']!r}, settings say {self.config.replay_policy!r}"
            )
        self.net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        opt_state = {
            int(idx): {key: tensors[f"opt.{idx}.{key}"] for key in keys} for idx, keys in meta["optimizer"]["state"].items()
        }
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": meta["optimizer"]["param_groups"]})
        # Avalanche resets the optimizer on a strategy's first experience unless it already knows the
        # parameters; tell it, so the restored Adam moments survive.
        self.strategy.optimized_param_id = dict(self.net.named_parameters())
        for name, max_size in meta["replay_groups"].items():
            if self.replay is None:
                raise ValueError(f"checkpoint holds a replay memory, settings say replay_size {self.config.replay_size}")
            storage = self.replay.storage_policy
            buf = ReservoirSamplingBuffer(max_size) if isinstance(storage, ClassBalancedBuffer) else storage
            buf.max_size = max_size
            buf.buffer = tensor_dataset(tensors[f"replay.{name}.x"], tensors[f"replay.{name}.y"])
            buf._buffer_weights = tensors[f"replay.{name}.w"]
            if isinstance(storage, ClassBalancedBuffer):
                storage.buffer_groups[int(name)] = buf
                storage.seen_classes.add(int(name))
        counter = int(meta["rounds"])
        self.strategy.clock.train_exp_counter = counter
        if counter > 0 and self.ewc is not None:
            names = [n for n, _ in self.net.named_parameters()]  # Avalanche pairs them by position
            self.ewc.importances[counter - 1] = _param_dict(tensors, "ewc.importance.", names)
            self.ewc.saved_params[counter - 1] = _param_dict(tensors, "ewc.anchor.", names)

    # -- replay memory --------------------------------------------------------------------

    def seed_replay(self, x: np.ndarray, y: np.ndarray) -> None:
        """Start the replay memory with earlier (historical) events, as if they had been seen:
        each class's reservoir holds up to its share, with reservoir weights like any other event."""
        if self.replay is None or not len(y):
            return
        storage = self.replay.storage_policy
        xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
        if isinstance(storage, ClassBalancedBuffer):
            classes = sorted(set(y.tolist()))
            share = self.config.replay_size // len(classes)
            for c in classes:
                rows = torch.nonzero(yt == c).flatten()[:share]
                buf = ReservoirSamplingBuffer(share)
                buf.buffer = tensor_dataset(xt[rows], yt[rows])
                buf._buffer_weights = torch.rand(len(rows))
                storage.buffer_groups[c] = buf
                storage.seen_classes.add(c)
        else:
            n = min(len(y), self.config.replay_size)
            storage.buffer = tensor_dataset(xt[:n], yt[:n])
            storage._buffer_weights = torch.rand(n)

    def _replay_groups(self) -> dict[str, tuple[ReservoirSamplingBuffer, int]]:
        if self.replay is None:
            return {}
        storage = self.replay.storage_policy
        if isinstance(storage, ClassBalancedBuffer):
            return {str(c): (b, b.max_size) for c, b in storage.buffer_groups.items()}
        return {"all": (storage, storage.max_size)} if len(storage.buffer) else {}

    def _replay_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        parts = [_gather(b.buffer) for b, _ in self._replay_groups().values()]
        if not parts:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
        return torch.cat([p[0] for p in parts]).numpy(), torch.cat([p[1] for p in parts]).numpy()

    def _compact_replay(self) -> None:
        """Rebuild each buffer as a flat tensor dataset: Avalanche's subset-of-concat chains
        otherwise deepen every round and slow each later round down."""
        for buf, _ in self._replay_groups().values():
            x, y = _gather(buf.buffer)
            buf.buffer = tensor_dataset(x.clone(), y.clone())


def _gather(dataset) -> tuple[torch.Tensor, torch.Tensor]:  # an AvalancheDataset
    """The (x, y) rows of an Avalanche dataset built from tensors, in its order, by tensor indexing.

    Avalanche flattens subsets and concatenations into leaf datasets plus one index list, which this
    reads directly; a dataset with other leaves is read the slow, general way.
    """
    flat = getattr(dataset, "_flat_data", None)
    leaves = getattr(flat, "_datasets", None)
    if flat is None or not leaves or not all(isinstance(leaf, TensorDataset) for leaf in leaves):
        return _dataset_tensors(dataset)
    x = torch.cat([leaf.tensors[0] for leaf in leaves]) if len(leaves) > 1 else leaves[0].tensors[0]
    y = torch.cat([leaf.tensors[1] for leaf in leaves]) if len(leaves) > 1 else leaves[0].tensors[1]
    indices = flat._indices
    if indices is not None:
        if isinstance(indices, LazyIndices):
            indices._to_eager()
            indices = indices._eager_list
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        x, y = x[index], y[index]
    return x, y.long()


def _dataset_tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:  # an AvalancheDataset
    if len(dataset) == 0:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    x, y, *_ = next(iter(DataLoader(dataset, batch_size=len(dataset), shuffle=False)))
    return x.clone(), y.clone().long()


def _param_dict(tensors: dict[str, torch.Tensor], prefix: str, names: list[str]) -> dict[str, ParamData]:
    return {n: ParamData(n, tensors[prefix + n].shape, init_tensor=tensors[prefix + n].clone(), device="cpu") for n in names}
