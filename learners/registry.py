"""The model registry: a directory that the learner alone writes and every server reads.

Layout::

    <root>/versions/<id>/model.safetensors   weights (safetensors: no pickle is ever loaded)
    <root>/versions/<id>/manifest.json       version, parent, created, sha256, feature schema,
                                             metrics, gate report, Kafka offsets trained on
    <root>/CURRENT                           id of the version to serve, replaced atomically
    <root>/history.jsonl                     every change of CURRENT: when, from, to, why
    <root>/retention/retention.safetensors   the retention (anchor) set fixed at pretraining

A version directory is assembled under a temporary name and renamed into place, so a reader never
sees half a version; ``CURRENT`` is written last.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import orjson
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from learners.files import atomic_write, fsync_dir
from learners.model import ScoringModel
from learners.schema import FeatureSchema

WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
VERSION_RE = re.compile(r"^v\d{6}$")


class RegistryError(Exception):
    """A version that must not be served: missing, incomplete, corrupt, or for another schema."""


class Registry:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.current_path = self.root / "CURRENT"
        self.history_path = self.root / "history.jsonl"
        self.retention_path = self.root / "retention" / "retention.safetensors"
        self.replay_seed_path = self.root / "retention" / "replay-seed.safetensors"

    # -- reading ---------------------------------------------------------------------------------

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if VERSION_RE.match(p.name))

    def current_version(self) -> str | None:
        try:
            version = self.current_path.read_text().strip()
        except FileNotFoundError:
            return None
        return version or None

    def manifest(self, version: str) -> dict[str, Any]:
        self._check_id(version)
        try:
            return orjson.loads((self.versions_dir / version / MANIFEST).read_bytes())
        except FileNotFoundError:
            raise RegistryError(f"version {version} has no manifest in {self.versions_dir}") from None
        except orjson.JSONDecodeError as exc:
            raise RegistryError(f"manifest of {version} is not valid JSON ({exc.msg})") from None

    def load(self, version: str, expect_features: Sequence[str] | None = None) -> ScoringModel:
        """Load one version after verifying its checksum and, if given, its feature names."""
        manifest = self.manifest(version)
        try:
            data = (self.versions_dir / version / WEIGHTS).read_bytes()
        except FileNotFoundError:
            raise RegistryError(f"version {version} has no weights file") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest.get("sha256"):
            raise RegistryError(
                f"checksum mismatch for {version}: manifest says {manifest.get('sha256')}, weights hash to {digest}"
            )
        try:
            schema = FeatureSchema.from_dict(manifest["feature_schema"])
            weights = load_safetensors(data)
            model = ScoringModel(version=version, schema=schema, weights=weights, manifest=manifest)
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"version {version} cannot be loaded: {exc}") from None
        if expect_features is not None and tuple(schema.names) != tuple(expect_features):
            raise RegistryError(
                f"version {version} is for features {', '.join(schema.names)}; "
                f"this server serves {', '.join(expect_features)}"
            )
        return model

    def load_current(self) -> ScoringModel | None:
        version = self.current_version()
        return self.load(version) if version else None

    def load_retention(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            tensors = load_safetensors(self.retention_path.read_bytes())
        except FileNotFoundError:
            raise RegistryError(f"no retention set at {self.retention_path}; run `perennial pretrain`") from None
        return tensors["x"], tensors["y"]

    def load_replay_seed(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Historical events the learner's replay memory starts with (None for registries without)."""
        try:
            tensors = load_safetensors(self.replay_seed_path.read_bytes())
        except FileNotFoundError:
            return None
        return tensors["x"], tensors["y"]

    # -- writing (the learner only) ----------------------------------------------------------------

    def publish(
        self,
        weights: Mapping[str, np.ndarray],
        schema: FeatureSchema,
        *,
        parent: str | None,
        metrics: dict[str, Any] | None = None,
        gate_report: dict[str, Any] | None = None,
        offsets: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """Write a new version completely, then point CURRENT at it. Returns its manifest."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        version = self._next_id()
        staging = self.versions_dir / f".incoming-{version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        data = save_safetensors({k: np.ascontiguousarray(v) for k, v in weights.items()})
        atomic_write(staging / WEIGHTS, data)
        now = time.time()
        manifest = {
            "version": version,
            "parent": parent,
            "created": datetime.fromtimestamp(now, timezone.utc).isoformat(),
            "created_ts": now,
            "sha256": hashlib.sha256(data).hexdigest(),  # of the bytes written, without reading them back
            "feature_schema": schema.to_dict(),
            "metrics": metrics or {},
            "gate_report": gate_report or {},
            "offsets": offsets or {},
        }
        atomic_write(staging / MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        os.rename(staging, self.versions_dir / version)
        fsync_dir(self.versions_dir)
        self.set_current(version, reason="published: passed the gates", trigger="learner")
        return manifest

    def remove_incomplete(self) -> list[str]:
        """Delete versions a crashed publisher left half-assembled (never visible to readers)."""
        if not self.versions_dir.is_dir():
            return []
        stale = [p for p in self.versions_dir.iterdir() if p.name.startswith(".incoming-")]
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
        return [p.name for p in stale]

    def set_current(self, version: str, reason: str = "", trigger: str = "operator") -> None:
        """Point CURRENT at an existing version and record the change in history.jsonl."""
        self._check_id(version)
        if not (self.versions_dir / version / MANIFEST).is_file():
            raise RegistryError(f"version {version} does not exist in {self.versions_dir}")
        previous = self.current_version()
        atomic_write(self.current_path, f"{version}\n".encode())
        entry = {"time": time.time(), "from": previous, "to": version, "trigger": trigger, "reason": reason}
        with open(self.history_path, "ab") as f:
            f.write(orjson.dumps(entry) + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def history(self) -> list[dict[str, Any]]:
        """Every recorded change of CURRENT, oldest first."""
        try:
            lines = self.history_path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        return [orjson.loads(line) for line in lines if line.strip()]

    def save_retention(self, x: np.ndarray, y: np.ndarray) -> None:
        _save_sample(self.retention_path, x, y)

    def save_replay_seed(self, x: np.ndarray, y: np.ndarray) -> None:
        _save_sample(self.replay_seed_path, x, y)

    def _next_id(self) -> str:
        existing = self.versions()
        n = int(existing[-1][1:]) + 1 if existing else 1
        return f"v{n:06d}"

    @staticmethod
    def _check_id(version: str) -> None:
        if not VERSION_RE.match(version):
            raise RegistryError(f"{version!r} is not a version id (expected v followed by six digits)")


def _save_sample(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    atomic_write(path, save_safetensors({"x": np.ascontiguousarray(x, dtype=np.float32), "y": np.ascontiguousarray(y, dtype=np.int64)}))
