import numpy as np
import pytest

from learners.model import ScoringModel, TabularNet, state_numpy
from learners.registry import Registry, RegistryError
from learners.schema import FeatureSchema

NAMES = ("a", "b", "c")


@pytest.fixture
def schema():
    return FeatureSchema.fit(NAMES, np.random.default_rng(0).normal(size=(50, 3)))


def weights(seed=0):
    import torch

    torch.manual_seed(seed)
    return state_numpy(TabularNet(3, hidden=8).state_dict())


def test_publish_then_load_round_trips_and_moves_current(tmp_path, schema):
    reg = Registry(tmp_path)
    m1 = reg.publish(weights(0), schema, parent=None, metrics={"ap": 0.5}, offsets={"t:0": 10})
    m2 = reg.publish(weights(1), schema, parent=m1["version"])
    assert reg.versions() == ["v000001", "v000002"] and reg.current_version() == "v000002"
    model = reg.load_current()
    assert model.version == "v000002" and model.manifest["parent"] == "v000001"
    assert reg.manifest("v000001")["offsets"] == {"t:0": 10}
    x = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    expected = ScoringModel("x", schema, weights(1)).score(x)
    assert np.allclose(model.score(x), expected)
    assert m2["sha256"] != m1["sha256"]


def test_checksum_mismatch_is_refused(tmp_path, schema):
    reg = Registry(tmp_path)
    reg.publish(weights(), schema, parent=None)
    path = tmp_path / "versions" / "v000001" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="checksum mismatch"):
        reg.load("v000001")


def test_truncated_weights_are_refused(tmp_path, schema):
    reg = Registry(tmp_path)
    reg.publish(weights(), schema, parent=None)
    path = tmp_path / "versions" / "v000001" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RegistryError):
        reg.load("v000001")


def test_other_feature_schema_is_refused(tmp_path, schema):
    reg = Registry(tmp_path)
    reg.publish(weights(), schema, parent=None)
    with pytest.raises(RegistryError, match="for features a, b, c"):
        reg.load("v000001", expect_features=("a", "b", "d"))


def test_half_written_version_is_invisible_and_cleaned(tmp_path, schema):
    reg = Registry(tmp_path)
    reg.publish(weights(), schema, parent=None)
    stale = tmp_path / "versions" / ".incoming-v000002-123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    assert reg.versions() == ["v000001"] and reg.current_version() == "v000001"
    assert reg.publish(weights(), schema, parent="v000001")["version"] == "v000002"
    assert reg.remove_incomplete() == [".incoming-v000002-123"] and not stale.exists()


def test_no_temporary_files_remain_after_publish(tmp_path, schema):
    reg = Registry(tmp_path)
    reg.publish(weights(), schema, parent=None)
    names = {p.name for p in tmp_path.rglob("*")}
    assert not [n for n in names if ".tmp-" in n or n.startswith(".incoming")]


def test_current_must_name_an_existing_version(tmp_path, schema):
    reg = Registry(tmp_path)
    with pytest.raises(RegistryError):
        reg.set_current("v000009")
    with pytest.raises(RegistryError):
        reg.set_current("../etc")


def test_retention_round_trip(tmp_path):
    reg = Registry(tmp_path)
    x, y = np.ones((4, 3), np.float32), np.array([0, 1, 0, 1])
    reg.save_retention(x, y)
    rx, ry = reg.load_retention()
    assert np.array_equal(rx, x) and np.array_equal(ry, y)
