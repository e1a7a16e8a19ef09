"""The learner's checkpoint: one safetensors file holding every tensor (weights, optimizer moments,
replay memory, EWC importances and anchors, held-out and pending events) with the JSON metadata
(Kafka offsets, accounting, recent event ids) in its header. Written atomically: after a crash the
file is the previous checkpoint or the new one, never a mix. No pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from learners.files import atomic_write

_META_KEY = "perennial"


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> int:
    """Write the checkpoint durably; returns its size in bytes."""
    data = save_tensors({k: v.contiguous() for k, v in tensors.items()}, metadata={_META_KEY: orjson.dumps(meta).decode()})
    atomic_write(path, data)
    return len(data)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The last durable checkpoint, or None when there is none yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    header_len = int.from_bytes(data[:8], "little")
    header = orjson.loads(data[8 : 8 + header_len])
    meta = orjson.loads(header["__metadata__"][_META_KEY])
    return load_tensors(data), meta
