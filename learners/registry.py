"""The model registry: a directory that the learner alone writes and every server reads.

Layout::

    <root>/versions/<id>/model.safetensors   weights (safetensors: no pickle is ever loaded)
    <root>/versions/<id>/manifest.json       version, parent, created, sha256 of the weights, feature
                                             schema, metrics, gate report, Kafka offsets trained on,
                                             calibration of served scores (none before calibration
                                             existed: identity), network (learners/network.py: the
                                             factory's import name and arguments; none before custom
                                             networks existed: the built-in one), and checksum: the
                                             sha256 of all the rest (see checksum())
    <root>/CURRENT                           id of the version to serve, replaced atomically
    <root>/history.jsonl                     every change of CURRENT: when, from, to, why
    <root>/decisions.json                    the learner's last gate decisions, with their figures
    <root>/retention/retention.safetensors   the retention (anchor) set fixed at pretraining
    <root>/retention/replay-seed.safetensors the history the learner's replay memory starts with

A version directory is assembled under a temporary name and renamed into place, so a reader never
sees half a version; ``CURRENT`` is written last.

Whatever a reader finds is verified before it is used, and anything unsound raises ``RegistryError``
naming the problem, never another exception: ``CURRENT`` must hold a version id; a manifest must be a
JSON object with the documented fields and types whose checksum matches (so an edited normalisation
value is refused, not served); the weights must hash to the manifest's sha256; the network must be
importable and buildable for the schema, and take the weights. Manifests written
before the checksum existed have none: they are accepted with a warning, once per version, since
refusing them would stop every server and learner at an upgrade; their weights are still verified.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from learners.calibration import IDENTITY, Calibration
from learners.files import atomic_write, fsync_dir
from learners.network import BUILTIN, NetworkSpec
from learners.schema import FeatureSchema
from learners.scoring import ScoringModel

WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
VERSION_RE = re.compile(r"^v\d{6}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# manifest field -> the JSON types it may hold
MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "version": (str,), "parent": (str, type(None)), "created": (str,), "created_ts": (int, float), "sha256": (str,),
    "feature_schema": (dict,), "metrics": (dict,), "gate_report": (dict,), "offsets": (dict,),
}

log = logging.getLogger("perennial.registry")


class RegistryError(Exception):
    """Registry content that must not be used: missing, unreadable, corrupt, edited, or for another schema."""


@dataclass(frozen=True)
class VersionFiles:
    """The bytes of one version, read once: what is verified is what is loaded."""

    version: str
    manifest: bytes
    weights: bytes

    @property
    def digest(self) -> str:
        """Identifies these exact bytes (a server refuses a given bad version once, not at every poll)."""
        h = hashlib.sha256(len(self.manifest).to_bytes(8, "big"))
        h.update(self.manifest)
        h.update(self.weights)
        return h.hexdigest()


def checksum(manifest: Mapping[str, Any]) -> str:
    """sha256 of a manifest's fields other than ``checksum``: JSON, keys sorted, no whitespace.

    The weights' sha256 is one of those fields, so the checksum covers the whole version.

    >>> checksum({"b": [1.5, None], "a": "x"}) == checksum({"a": "x", "b": [1.5, None], "checksum": "old"})
    True
    """
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Registry:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.current_path = self.root / "CURRENT"
        self.history_path = self.root / "history.jsonl"
        self.decisions_path = self.root / "decisions.json"
        self.retention_path = self.root / "retention" / "retention.safetensors"
        self.replay_seed_path = self.root / "retention" / "replay-seed.safetensors"
        self._warned_unsealed: set[str] = set()

    # -- reading ---------------------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Every entry named like a version, sound or not (so that no id is ever reused)."""
        try:
            return sorted(p.name for p in self.versions_dir.iterdir() if VERSION_RE.match(p.name))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise _unreadable("the versions directory", self.versions_dir, exc) from None

    def current_version(self) -> str | None:
        """The id CURRENT holds; None when there is no CURRENT. Raises RegistryError when it holds no id."""
        try:
            raw = self.current_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unreadable("CURRENT", self.current_path, exc) from None
        try:
            version = raw.decode().strip()
        except UnicodeDecodeError:
            version = None
        if version is None or not VERSION_RE.match(version):
            raise RegistryError(
                f"CURRENT holds {_preview(raw)}, not a version id (v followed by six digits); "
                f"write the id of a sound version into {self.current_path}, or restore the registry"
            )
        return version

    def manifest(self, version: str) -> dict[str, Any]:
        """The verified manifest of one version."""
        path = self._version_dir(version) / MANIFEST
        return self._parse_manifest(version, _read(path, f"the manifest of {version}"))

    def read(self, version: str) -> VersionFiles:
        """The bytes of one version, unverified (``load_files`` verifies them)."""
        folder = self._version_dir(version)
        return VersionFiles(
            version, _read(folder / MANIFEST, f"the manifest of {version}"), _read(folder / WEIGHTS, f"the weights of {version}"),
        )

    def load(self, version: str, expect_features: Sequence[str] | None = None) -> ScoringModel:
        """Load one version after verifying its checksums and, if given, its feature names."""
        return self.load_files(self.read(version), expect_features)

    def load_files(self, files: VersionFiles, expect_features: Sequence[str] | None = None) -> ScoringModel:
        """The model of bytes read by ``read``, once the manifest's checksum, the weights' sha256, the
        schema, the network and its weights and, if given, the feature names are verified."""
        version = files.version
        manifest = self._parse_manifest(version, files.manifest)
        digest = hashlib.sha256(files.weights).hexdigest()
        if digest != manifest["sha256"]:
            raise RegistryError(f"checksum mismatch for {version}: manifest says {manifest['sha256']}, weights hash to {digest}")
        try:
            schema = FeatureSchema.from_dict(manifest["feature_schema"])
        except ValueError as exc:
            raise RegistryError(f"the feature schema of {version} is malformed: {exc}") from None
        calibration = _calibration(version, manifest)
        network = _network(version, manifest)
        try:
            weights = load_safetensors(files.weights)
        except (SafetensorError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise RegistryError(f"the weights of {version} cannot be loaded: {exc}") from None
        if expect_features is not None and tuple(schema.names) != tuple(expect_features):
            raise RegistryError(
                f"version {version} is for features {', '.join(schema.names)}; "
                f"this server serves {', '.join(expect_features)}"
            )
        try:
            model = ScoringModel(
                version=version, schema=schema, weights=weights, manifest=manifest, calibration=calibration, network=network,
            )
        except Exception as exc:  # a custom network is user code: whatever it raises refuses the version
            expected = isinstance(exc, (KeyError, IndexError, TypeError, ValueError))
            if network.builtin and not expected:
                raise
            what = f"the weights of {version} cannot be loaded" if network.builtin else f"the network of {version} cannot be served"
            raise RegistryError(f"{what}: {exc}" if expected else f"{what}: {type(exc).__name__}: {exc}") from None
        return model

    def load_current(self) -> ScoringModel | None:
        version = self.current_version()
        return self.load(version) if version else None

    def load_retention(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The retention set: rows, labels and weights (a sampled legitimate event stands for as many of
        history's; all 1 in registries written before weights were kept)."""
        if not os.path.lexists(self.retention_path):
            raise RegistryError(
                f"no retention set at {self.retention_path}: restore it from a backup, or pretrain a new registry"
            )
        x, y, w = _load_sample(self.retention_path, "the retention set")
        return x, y, np.ones(len(y)) if w is None else w

    def load_replay_seed(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Historical events the learner's replay memory starts with (None for registries without)."""
        if not os.path.lexists(self.replay_seed_path):
            return None
        return _load_sample(self.replay_seed_path, "the replay seed")[:2]

    # -- writing (the learner only) ----------------------------------------------------------------

    def add_version(
        self,
        weights: Mapping[str, np.ndarray],
        schema: FeatureSchema,
        *,
        parent: str | None,
        metrics: dict[str, Any] | None = None,
        gate_report: dict[str, Any] | None = None,
        offsets: dict[str, int] | None = None,
        calibration: Calibration = IDENTITY,
        network: NetworkSpec | None = None,
    ) -> dict[str, Any]:
        """Write a new version completely, without serving it. Returns its manifest.

        ``network``: the architecture of ``weights`` (None: the built-in network)."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        version = self._next_id()
        staging = self.versions_dir / f".incoming-{version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        data = save_safetensors({k: np.ascontiguousarray(v) for k, v in weights.items()})
        atomic_write(staging / WEIGHTS, data)
        now = time.time()
        fields = {
            "version": version,
            "parent": parent,
            "created": datetime.fromtimestamp(now, UTC).isoformat(),
            "created_ts": now,
            "sha256": hashlib.sha256(data).hexdigest(),  # of the bytes written, without reading them back
            "feature_schema": schema.to_dict(),
            "metrics": metrics or {},
            "gate_report": gate_report or {},
            "offsets": offsets or {},
            "calibration": calibration.to_dict(),
            "network": (network or BUILTIN).to_dict(),
        }
        # The checksum is computed on what a reader will parse (numpy values become JSON numbers).
        manifest = orjson.loads(orjson.dumps(fields, option=orjson.OPT_SERIALIZE_NUMPY))
        manifest["checksum"] = checksum(manifest)
        atomic_write(staging / MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        os.rename(staging, self.versions_dir / version)
        fsync_dir(self.versions_dir)
        return manifest

    def publish(self, weights: Mapping[str, np.ndarray], schema: FeatureSchema, **fields: Any) -> dict[str, Any]:
        """Write a new version completely (see ``add_version``), then point CURRENT at it. Returns its manifest."""
        manifest = self.add_version(weights, schema, **fields)
        self.set_current(manifest["version"], reason="published: passed the gates", trigger="learner")
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
        if not (self._version_dir(version) / MANIFEST).is_file():
            raise RegistryError(f"version {version} has no manifest in {self.versions_dir}")
        try:
            previous = self.current_version()
        except RegistryError:
            previous = None  # this write repairs a CURRENT that held no version id
        atomic_write(self.current_path, f"{version}\n".encode())
        entry = {"time": time.time(), "from": previous, "to": version, "trigger": trigger, "reason": reason}
        with open(self.history_path, "ab") as f:
            f.write(orjson.dumps(entry) + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def save_decisions(self, decisions: list[dict[str, Any]]) -> None:
        """The learner's last gate decisions (why the last candidates were or were not served)."""
        atomic_write(self.decisions_path, orjson.dumps(decisions, option=orjson.OPT_SERIALIZE_NUMPY))

    def decisions(self) -> list[dict[str, Any]]:
        """The learner's last gate decisions, oldest first; none yet: []. Unreadable: RegistryError."""
        try:
            raw = self.decisions_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _unreadable("the gate decisions", self.decisions_path, exc) from None
        try:
            decisions = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RegistryError(f"the gate decisions at {self.decisions_path} are not JSON ({exc})") from None
        if not isinstance(decisions, list):
            raise RegistryError(f"the gate decisions at {self.decisions_path} are a JSON {_json_kind(decisions)}, not a list")
        return decisions

    def history(self) -> list[dict[str, Any]]:
        """Every recorded change of CURRENT, oldest first."""
        try:
            lines = self.history_path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        return [orjson.loads(line) for line in lines if line.strip()]

    def save_retention(self, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> None:
        _save_sample(self.retention_path, x, y, weights)

    def save_replay_seed(self, x: np.ndarray, y: np.ndarray) -> None:
        _save_sample(self.replay_seed_path, x, y)

    def _next_id(self) -> str:
        existing = self.versions()
        n = int(existing[-1][1:]) + 1 if existing else 1
        return f"v{n:06d}"

    def _version_dir(self, version: str) -> Path:
        if not VERSION_RE.match(version):
            raise RegistryError(f"{version!r} is not a version id (expected v followed by six digits)")
        folder = self.versions_dir / version
        if not folder.is_dir():
            state = "is not a directory" if os.path.lexists(folder) else "does not exist"
            raise RegistryError(f"version {version} {state} in {self.versions_dir}")
        return folder

    def _parse_manifest(self, version: str, raw: bytes) -> dict[str, Any]:
        try:
            manifest = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RegistryError(f"the manifest of {version} is not valid JSON ({exc})") from None
        if not isinstance(manifest, dict):
            raise RegistryError(f"the manifest of {version} is {_json_kind(manifest)}, not an object")
        recorded = manifest.get("checksum")
        if recorded is None:
            self._warn_unsealed(version)
        elif recorded != (computed := checksum(manifest)):
            raise RegistryError(
                f"the manifest of {version} does not match its checksum (recorded {str(recorded)[:64]}, computed {computed}): "
                "it was changed after publishing; restore the version, or point CURRENT at another"
            )
        _check_fields(version, manifest)
        return manifest

    def _warn_unsealed(self, version: str) -> None:
        if version not in self._warned_unsealed:
            self._warned_unsealed.add(version)
            log.warning("the manifest of %s has no checksum (written before checksums): only its weights are verified", version)


def _check_fields(version: str, manifest: dict[str, Any]) -> None:
    for name, kinds in MANIFEST_FIELDS.items():
        if name not in manifest:
            raise RegistryError(f"the manifest of {version} has no {name!r}")
        if not isinstance(manifest[name], kinds) or isinstance(manifest[name], bool):
            raise RegistryError(f"the manifest of {version} has {_json_kind(manifest[name])} as {name!r}")
    if manifest["version"] != version:
        raise RegistryError(f"the manifest in {version}'s directory is the manifest of {manifest['version'][:20]!r}")
    if not SHA256_RE.match(manifest["sha256"]):
        raise RegistryError(f"the manifest of {version} has {manifest['sha256'][:80]!r} as 'sha256', not a sha256 digest")
    if manifest["parent"] is not None and not VERSION_RE.match(manifest["parent"]):
        raise RegistryError(f"the manifest of {version} names {manifest['parent'][:20]!r} as parent, not a version id")


def _calibration(version: str, manifest: dict[str, Any]) -> Calibration:
    """The manifest's calibration; identity for a version written before calibration existed."""
    if "calibration" not in manifest:
        return IDENTITY
    try:
        return Calibration.from_dict(manifest["calibration"])
    except ValueError as exc:
        raise RegistryError(
            f"the manifest of {version} has a malformed 'calibration': {exc}; restore the version, or point CURRENT at another"
        ) from None


def _network(version: str, manifest: dict[str, Any]) -> NetworkSpec:
    """The manifest's network; the built-in one for a version written before networks were named."""
    try:
        return NetworkSpec.from_dict(manifest.get("network"))
    except ValueError as exc:
        raise RegistryError(
            f"the manifest of {version} has a malformed 'network': {exc}; restore the version, or point CURRENT at another"
        ) from None


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return kinds.get(type(value), "null")


def _preview(raw: bytes) -> str:
    """A short, printable view of unexpected file content."""
    return repr(raw[:32]) + (f"... ({len(raw)} bytes)" if len(raw) > 32 else "")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _unreadable(what, path, exc) from None


def _unreadable(what: str, path: Path, exc: OSError) -> RegistryError:
    if isinstance(exc, FileNotFoundError):
        return RegistryError(f"{what} is missing ({path})")
    if isinstance(exc, IsADirectoryError):
        return RegistryError(f"{what} is a directory, not a file ({path})")
    return RegistryError(f"cannot read {what} ({path}): {exc.strerror or exc}")


def _load_sample(path: Path, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        tensors = load_safetensors(_read(path, what))
        x, y, w = tensors["x"], tensors["y"], tensors.get("w")
    except (SafetensorError, KeyError) as exc:
        raise RegistryError(f"{what} at {path} is not a safetensors file with x and y ({exc})") from None
    if x.ndim != 2 or y.shape != (len(x),):
        raise RegistryError(f"{what} at {path} has x of shape {x.shape} and y of shape {y.shape}; expected (n, features) and (n,)")
    if w is not None and (w.shape != y.shape or not np.all(np.isfinite(w) & (w > 0))):
        raise RegistryError(f"{what} at {path} has weights of shape {w.shape} (expected {y.shape}), or weights not finite and positive")
    if np.isinf(x).any():  # NaN is an optional number missing; an infinite value is no feature's
        row, col = np.argwhere(np.isinf(x))[0]
        raise RegistryError(f"{what} at {path} holds an infinite value (row {row}, column {col}); restore it, or pretrain again")
    return x, y, w


def _save_sample(path: Path, x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> None:
    tensors: dict[str, np.ndarray] = {"x": np.ascontiguousarray(x, dtype=np.float32), "y": np.ascontiguousarray(y, dtype=np.int64)}
    if w is not None:
        tensors["w"] = np.ascontiguousarray(w, dtype=np.float64)
    atomic_write(path, save_safetensors(tensors))
