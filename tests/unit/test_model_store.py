"""The server's store on a registry on disk: any bad state is refused, counted and logged once, and
never raises; the served model stays; a sound CURRENT is picked up when one appears."""

import logging

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from learners.registry import Registry
from learners.schema import FeatureSchema
from service.metrics import ServerMetrics
from service.model_store import ModelStore
from tests.unit.test_registry import CURRENT_CORRUPTIONS, NAMES, VERSION_CORRUPTIONS, _edit, _weights, weights


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path)
    schema = FeatureSchema.fit(NAMES, np.random.default_rng(0).normal(size=(50, 3)))
    reg.publish(weights(0), schema, parent=None)
    reg.add_version(weights(1), schema, parent="v000001")
    return reg


def refused(store: ModelStore) -> float:
    return store.metrics.registry.get_sample_value("perennial_server_swaps_total", {"result": "refused"})


def refusals_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "perennial.serve" and r.levelno == logging.ERROR]


def serving(registry: Registry) -> ModelStore:
    store = ModelStore(registry, ServerMetrics())
    assert store.refresh() and store.model.version == "v000001"
    return store


NON_FINITE = {name: np.full_like(w, np.nan) if name.endswith("bias") else w for name, w in weights(1).items()}
STORE_ONLY = {"weights give NaN scores": (_weights(save_safetensors(NON_FINITE)), "gives non-finite scores")}


@pytest.mark.parametrize("name", list(VERSION_CORRUPTIONS) + list(STORE_ONLY))
def test_a_bad_version_is_refused_once_and_the_model_kept(registry, caplog, name):
    store = serving(registry)
    corrupt, message = {**VERSION_CORRUPTIONS, **STORE_ONLY}[name]
    corrupt(registry.versions_dir / "v000002")
    registry.current_path.write_text("v000002\n")
    with caplog.at_level(logging.ERROR, logger="perennial.serve"):
        for _ in range(5):  # five polls of the same bad state
            assert store.refresh() is False
    assert store.model.version == "v000001" and refused(store) == 1
    [line] = refusals_logged(caplog)
    assert line.startswith("refused version v000002, keeping v000001: ") and message in line
    assert message in store.refusal.reason


@pytest.mark.parametrize("name", CURRENT_CORRUPTIONS)
def test_a_bad_current_is_refused_once_and_the_model_kept(registry, caplog, name):
    store = serving(registry)
    corrupt, message = CURRENT_CORRUPTIONS[name]
    registry.current_path.unlink()
    corrupt(registry.current_path)
    with caplog.at_level(logging.ERROR, logger="perennial.serve"):
        for _ in range(5):
            assert store.refresh() is False
    assert store.model.version == "v000001" and refused(store) == 1
    [line] = refusals_logged(caplog)
    assert line.startswith("refused the registry's CURRENT, keeping v000001: ") and message in line


def test_each_new_bad_state_is_refused_once(registry):
    store = serving(registry)
    registry.current_path.write_text("v000002\n")
    manifest = registry.versions_dir / "v000002" / "manifest.json"
    for content in (b"[]", b'"x"', b"[]"):  # three changes: each is a new state, refused once
        manifest.write_bytes(content)
        store.refresh()
        store.refresh()
    assert refused(store) == 3
    registry.current_path.write_text("v000001\n")  # back to the served version: nothing is refused
    assert not store.refresh() and store.refusal is None
    registry.current_path.write_text("v000002\n")  # the same bad version again: a new incident
    store.refresh()
    assert refused(store) == 4 and store.model.version == "v000001"


def test_starting_on_a_bad_current_serves_nothing_then_follows_a_sound_one(registry):
    registry.current_path.unlink()
    registry.current_path.mkdir()
    store = ModelStore(registry, ServerMetrics())
    for _ in range(3):
        assert store.refresh() is False
    assert store.model is None and refused(store) == 1
    assert "CURRENT is a directory" in store.refusal.reason
    registry.current_path.rmdir()
    registry.set_current("v000002")
    assert store.refresh() and store.model.version == "v000002" and store.refusal is None


def test_a_version_fixed_after_its_refusal_is_served(registry):
    store = serving(registry)
    corrupt = _edit("created_ts", "yesterday")
    good = (registry.versions_dir / "v000002" / "manifest.json").read_bytes()
    corrupt(registry.versions_dir / "v000002")
    registry.current_path.write_text("v000002\n")
    assert not store.refresh() and refused(store) == 1
    (registry.versions_dir / "v000002" / "manifest.json").write_bytes(good)
    assert store.refresh() and store.model.version == "v000002" and refused(store) == 1
