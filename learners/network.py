"""Which network a version is: the built-in MLP or a user's PyTorch module, named, never pickled.

A version's architecture is stored in its manifest as a ``network`` spec: the import name of a
factory and its keyword arguments, ``{"factory": "mypkg.models:build", "kwargs": {"width": 32}}``.
The factory is called as ``factory(schema, **kwargs)`` (schema: learners/schema.FeatureSchema) and
returns a ``torch.nn.Module`` whose ``forward`` takes the schema's encoded input, a float32 tensor
``[N, schema.input_width]`` laid out as ``[numeric z-scores | missing indicators | category codes]``,
and returns ``[N, 2]`` logits (legitimate, fraud). Its weights are the module's ``state_dict``,
stored with safetensors like the built-in network's.

The built-in network (``BUILTIN``, learners/model.py) is scored by numpy on the server; any other
is scored by torch under ``inference_mode``. ``trainable`` gives either back as a torch module to
fine-tune (the learner, the quarantine's cross-fit). A spec that cannot be imported, called or loaded with
its weights is refused with a ``ValueError`` naming the factory and the reason (the registry turns
it into a RegistryError, so a server keeps serving its last good version).

>>> spec = NetworkSpec.from_dict({"factory": "learners.model:build", "kwargs": {"hidden": 32}})
>>> spec.builtin, spec.to_dict()
(True, {'factory': 'learners.model:build', 'kwargs': {'hidden': 32}})
>>> NetworkSpec.from_dict({"factory": "not a name"})
Traceback (most recent call last):
...
ValueError: network factory 'not a name' must be 'module.path:attribute'
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from torch import nn

    from learners.schema import FeatureSchema
    from learners.scoring import ScoringModel

BUILTIN_FACTORY = "learners.model:build"
_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


@dataclass(frozen=True)
class NetworkSpec:
    """A network by the import name of its factory and the factory's keyword arguments (JSON)."""

    factory: str = BUILTIN_FACTORY
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def builtin(self) -> bool:
        return self.factory == BUILTIN_FACTORY

    def to_dict(self) -> dict[str, Any]:
        return {"factory": self.factory, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, d: Any) -> NetworkSpec:
        """The spec as ``to_dict`` wrote it; None (a manifest from before specs) is the built-in."""
        if d is None:
            return cls()
        if not isinstance(d, dict) or set(d) - {"factory", "kwargs"}:
            raise ValueError("a network spec is an object {\"factory\": \"module:attribute\", \"kwargs\": {...}}")
        factory, kwargs = d.get("factory", BUILTIN_FACTORY), d.get("kwargs") or {}
        if not isinstance(factory, str) or not _NAME.match(factory):
            raise ValueError(f"network factory {factory!r} must be 'module.path:attribute'")
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise ValueError(f"the keyword arguments of network {factory} must be an object of name to value")
        try:
            kwargs = orjson.loads(orjson.dumps(kwargs))  # JSON values only: the manifest must hold them as given
        except TypeError as exc:
            raise ValueError(f"the keyword arguments of network {factory} must be JSON values: {exc}") from None
        return cls(factory, kwargs)

    @classmethod
    def parse(cls, factory: str, kwargs_json: str | None = None) -> NetworkSpec:
        """From the command line: ``--model mypkg.models:build --model-kwargs '{"width": 32}'``."""
        try:
            kwargs = orjson.loads(kwargs_json) if kwargs_json else {}
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"--model-kwargs is not JSON: {exc}") from None
        return cls.from_dict({"factory": factory, "kwargs": kwargs})


BUILTIN = NetworkSpec()
"""The built-in network with its factory's default arguments (what a manifest without a spec holds)."""


def import_factory(spec: NetworkSpec) -> Any:
    """The factory a spec names; ValueError saying why it cannot be imported."""
    module_name, _, attr = spec.factory.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 -- any import failure of user code is a refusal with its reason
        raise ValueError(f"network factory {spec.factory}: module {module_name} cannot be imported ({type(exc).__name__}: {exc})") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"network factory {spec.factory}: {module_name} has no attribute {attr}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"network factory {spec.factory} is not callable")
    return target


def build(spec: NetworkSpec, schema: FeatureSchema) -> nn.Module:
    """A fresh module of ``spec`` for ``schema``, checked to map ``[N, input_width]`` to ``[N, 2]``."""
    import torch

    factory = import_factory(spec)
    try:
        net = factory(schema, **spec.kwargs)
    except Exception as exc:  # noqa: BLE001 -- user code: any failure is a refusal with its reason
        raise ValueError(f"network factory {spec.factory} failed for this schema ({type(exc).__name__}: {exc})") from None
    if not isinstance(net, torch.nn.Module):
        raise ValueError(f"network factory {spec.factory} returned {type(net).__name__}, not a torch.nn.Module")
    probe = torch.zeros((2, schema.input_width), dtype=torch.float32)
    probe[:, schema.numeric_width:] = 1.0  # category code 1: missing, valid for every vocabulary
    net.eval()
    try:
        with torch.inference_mode():
            out = net(probe)
    except Exception as exc:  # noqa: BLE001 -- user code
        raise ValueError(f"network {spec.factory} cannot score the schema's input [N, {schema.input_width}] ({type(exc).__name__}: {exc})") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 2):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"network {spec.factory} must return [N, 2] logits (legitimate, fraud); it returned {shape} for N=2")
    return net


def load(spec: NetworkSpec, schema: FeatureSchema, weights: dict[str, Any]) -> nn.Module:
    """``build`` with ``weights`` (numpy arrays or tensors by state-dict key) loaded, strictly."""
    import numpy as np
    import torch

    net = build(spec, schema)
    state = {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(f"the weights do not fit network {spec.factory}: {' '.join(line.strip() for line in first[:4])}") from None
    return net


def trainable(model: ScoringModel) -> nn.Module:
    """A torch module in training mode holding ``model``'s weights, to fine-tune: for the built-in
    network a ``TabularNet`` shaped after the weights, for any other its factory's module with the
    weights loaded (``load``)."""
    import numpy as np
    import torch

    if model.network.builtin:
        from learners.model import TabularNet

        net: nn.Module = TabularNet.from_state({k: torch.from_numpy(np.array(v)) for k, v in model.weights.items()})
    else:
        net = load(model.network, model.schema, model.weights)
    return net.train()
