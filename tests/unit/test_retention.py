"""Registry retention on a real registry of thousands of versions: what is kept (served, first,
parent, recent, named in history, pinned), what is removed, and a reader loading versions while
they are removed never sees anything but a sound version or a RegistryError."""

from __future__ import annotations

import threading

import numpy as np
import orjson
import pytest

from learners.metrics import LearnerMetrics
from learners.model import TabularNet, state_numpy
from learners.registry import MANIFEST, Registry, RegistryError, checksum
from learners.retention import PINNED, Keeper, prune, size
from learners.schema import FeatureSchema
from perennial.settings import RegistrySettings

NAMES = ("a", "b", "c")
N = 3000
NOW = 1_800_000_000.0


def clone_versions(reg: Registry, n: int, created) -> None:
    """``n`` versions in a few seconds: the first written by the registry, the rest copies of it with
    their own id, parent and creation time (checksums recomputed, so every one is sound)."""
    import torch

    torch.manual_seed(0)
    schema = FeatureSchema.fit(NAMES, np.random.default_rng(0).normal(size=(50, 3)))
    first = reg.publish(state_numpy(TabularNet(3, hidden=8).state_dict()), schema, parent=None)
    weights = (reg.versions_dir / first["version"] / "model.safetensors").read_bytes()
    for i in range(2, n + 1):
        version = f"v{i:06d}"
        manifest = {**first, "version": version, "parent": f"v{i - 1:06d}", "created_ts": created(i)}
        manifest.pop("checksum")
        manifest["checksum"] = checksum(manifest)
        folder = reg.versions_dir / version
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(weights)
        (folder / MANIFEST).write_bytes(orjson.dumps(manifest))


@pytest.fixture
def big(tmp_path):
    reg = Registry(tmp_path / "registry")
    clone_versions(reg, N, created=lambda i: NOW - (N - i) * 60.0)  # one a minute: the last 1,440 within a day
    reg.set_current("v002990", reason="published", trigger="learner")  # the ten newest failed their probation, say
    reg.set_current("v001000", reason="operator rollback", trigger="operator")
    (reg.root / PINNED).write_text("v000500  # the version of the Q3 audit\n\n# nothing else\n")
    return reg


def test_retention_keeps_what_the_policy_names_and_removes_the_rest(big):
    removed = prune(big, now=NOW, keep_last=20, keep_within_s=86400.0, max_versions=500)
    kept = set(big.versions())
    expected = ({"v000001", "v000500", "v001000", "v000999", "v002990"}  # first, pinned, served, its parent, in history
                | {f"v{i:06d}" for i in range(N - 499, N + 1)})  # recent (a day: 1,440), at most the 500 newest
    assert kept == expected and len(removed) == N - len(expected) and set(removed).isdisjoint(kept)
    assert big.load_current().version == "v001000" and big.load("v000001").version == "v000001"
    assert size(big) == (len(expected), sum(p.stat().st_size for v in kept for p in (big.versions_dir / v).iterdir()))
    assert not [p for p in big.versions_dir.iterdir() if p.name.startswith(".")]  # nothing hidden left behind
    # the newest is always kept: ids are never reused
    assert big.versions()[-1] == f"v{N:06d}"
    # a second pass with nothing newer removes nothing
    assert prune(big, now=NOW, keep_last=20, keep_within_s=86400.0, max_versions=500) == []


def test_a_reader_loading_versions_while_they_are_removed_sees_a_version_or_a_registry_error(big):
    errors: list[BaseException] = []
    loaded = refused = 0
    stop = threading.Event()

    def reader():
        nonlocal loaded, refused
        reader_registry = Registry(big.root)  # a server's own view of the same files
        while not stop.is_set():
            for i in range(2, 2400, 7):
                try:
                    assert reader_registry.load(f"v{i:06d}").version == f"v{i:06d}"
                    loaded += 1
                except RegistryError:
                    refused += 1
                except BaseException as exc:  # noqa: BLE001 - the point of the test
                    errors.append(exc)
                    return

    t = threading.Thread(target=reader)
    t.start()
    try:
        prune(big, now=NOW, keep_last=20, keep_within_s=86400.0, max_versions=500)
    finally:
        stop.set()
        t.join(30)
    assert errors == [] and loaded > 0 and refused > 0


def test_an_unreadable_current_or_history_removes_nothing(tmp_path):
    reg = Registry(tmp_path / "r")
    clone_versions(reg, 50, created=lambda i: NOW - 10 * 86400.0)
    (reg.root / "CURRENT").write_text("garbage")
    assert prune(reg, now=NOW, keep_last=5, keep_within_s=0.0, max_versions=5) == [] and len(reg.versions()) == 50
    reg.set_current("v000010")
    with open(reg.history_path, "ab") as f:
        f.write(b"{not json\n")
    assert prune(reg, now=NOW, keep_last=5, keep_within_s=0.0, max_versions=5) == [] and len(reg.versions()) == 50


def test_the_learner_keeper_prunes_at_most_every_prune_every_s_and_exports_the_size(tmp_path):
    reg = Registry(tmp_path / "r")
    clone_versions(reg, 40, created=lambda i: NOW - 10 * 86400.0)
    now = [NOW]
    metrics = LearnerMetrics()
    keeper = Keeper(reg, RegistrySettings(keep_last=10, keep_within_s=3600.0, max_versions=10, prune_every_s=60.0), metrics,
                    clock=lambda: now[0])
    assert len(keeper.maybe_prune()) == 40 - 11  # kept: the 10 newest and the first, which is served
    assert reg.versions() == ["v000001", *(f"v{i:06d}" for i in range(31, 41))]
    value = {s.name: s.value for fam in metrics.registry.collect() for s in fam.samples}
    assert value["perennial_registry_versions"] == 11 and value["perennial_registry_versions_removed_total"] == 29
    assert value["perennial_registry_bytes"] > 0
    now[0] += 30
    assert keeper.maybe_prune() == []  # too soon: not even listed
    now[0] += 31
    assert keeper.maybe_prune() == []  # due, and nothing to remove
