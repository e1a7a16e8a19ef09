import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import save as save_safetensors

from learners.calibration import IDENTITY, Calibration, fit_platt
from learners.model import TabularNet, state_numpy
from learners.network import BUILTIN, NetworkSpec, build, trainable
from learners.registry import MANIFEST_FIELDS, VERSION_RE, Registry, RegistryError, checksum
from learners.schema import FeatureSchema
from learners.scoring import ScoringModel

NAMES = ("a", "b", "c")


@pytest.fixture
def schema():
    return FeatureSchema.fit(NAMES, np.random.default_rng(0).normal(size=(50, 3)))


def weights(seed=0, n_features=3):
    import torch

    torch.manual_seed(seed)
    return state_numpy(TabularNet(n_features, hidden=8).state_dict())


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
    rx, ry, rw = reg.load_retention()
    assert np.array_equal(rx, x) and np.array_equal(ry, y) and np.array_equal(rw, np.ones(4))  # no weights: all 1
    reg.save_retention(x, y, np.array([20.0, 1.0, 20.0, 1.0]))
    assert reg.load_retention()[2].tolist() == [20.0, 1.0, 20.0, 1.0]
    reg.save_retention(x, y, np.array([20.0, 1.0, -1.0, 1.0]))
    with pytest.raises(RegistryError, match="weights"):
        reg.load_retention()


def test_retention_and_replay_seed_keep_missing_numbers_and_refuse_infinite_ones(tmp_path):
    reg = Registry(tmp_path)
    x, y = np.array([[1.0, np.nan, 2.0], [np.nan, 0.5, 0.0]], np.float32), np.array([0, 1])
    reg.save_retention(x, y)
    reg.save_replay_seed(x, y)
    assert np.array_equal(reg.load_retention()[0], x, equal_nan=True)  # NaN: an optional number missing
    assert np.array_equal(reg.load_replay_seed()[0], x, equal_nan=True)
    x[1, 2] = -np.inf
    reg.save_retention(x, y)
    with pytest.raises(RegistryError, match=r"the retention set at .* holds an infinite value \(row 1, column 2\)"):
        reg.load_retention()


# -- the network: the built-in one, or a user's named by its factory ---------------------------------

CUSTOM = NetworkSpec.parse("tests.unit.custom_networks:build", '{"width": 12}')


def mixed_schema():
    rows = [[float(i), None if i % 3 else float(i), ["US", "GB", "FR"][i % 3]] for i in range(30)]
    return FeatureSchema.fit(NAMES, rows, min_count=2)


def custom_weights(schema, seed=0, spec=CUSTOM):
    import torch

    torch.manual_seed(seed)
    return state_numpy(build(spec, schema).state_dict())


def test_a_custom_network_is_published_by_name_and_served_as_its_module_scores(tmp_path):
    import torch

    schema = mixed_schema()
    reg = Registry(tmp_path)
    manifest = reg.publish(custom_weights(schema), schema, parent=None, network=CUSTOM)
    assert manifest["network"] == {"factory": "tests.unit.custom_networks:build", "kwargs": {"width": 12}}
    model = reg.load_current()
    assert model.network == CUSTOM
    raw = schema.encode_rows([[1.0, None, "US"], [7.0, 3.0, "FR"], [2.0, 1.0, "never seen"]])
    net = trainable(model).eval()
    with torch.inference_mode():
        expected = torch.softmax(net(torch.from_numpy(schema.transform(raw))), 1)[:, 1].numpy()
    assert np.allclose(model.score(raw), expected, atol=1e-6)
    path = tmp_path / "versions" / "v000001" / "manifest.json"
    doc = orjson.loads(path.read_bytes())
    doc["network"]["kwargs"]["width"] = 13
    path.write_bytes(orjson.dumps(doc))
    with pytest.raises(RegistryError, match="does not match its checksum"):  # the checksum covers the network
        reg.load_current()


def test_the_built_in_network_is_named_and_a_version_from_before_names_loads_as_it(tmp_path, schema):
    reg = Registry(tmp_path)
    assert reg.publish(weights(), schema, parent=None)["network"] == BUILTIN.to_dict()
    path = tmp_path / "versions" / "v000001" / "manifest.json"
    doc = orjson.loads(path.read_bytes())
    del doc["network"], doc["checksum"]
    path.write_bytes(sealed(doc))
    model = reg.load_current()
    assert model.network == BUILTIN and model.score(np.zeros((1, 3), np.float32)).shape == (1,)


@pytest.mark.parametrize(("spec", "weights_of", "problem"), [
    (NetworkSpec("tests.unit.no_such_module:build"), CUSTOM, "module tests.unit.no_such_module cannot be imported"),
    (NetworkSpec("tests.unit.custom_networks:broken"), CUSTOM, r"failed for this schema \(RuntimeError: this factory needs a GPU\)"),
    (NetworkSpec("tests.unit.custom_networks:wrong_shape"), CUSTOM, r"must return \[N, 2\] logits"),
    (NetworkSpec(CUSTOM.factory, {"width": 13}), CUSTOM, "the weights do not fit network tests.unit.custom_networks:build"),
    (CUSTOM, BUILTIN, "the weights do not fit network tests.unit.custom_networks:build"),
])
def test_a_version_whose_network_cannot_be_served_is_refused_with_the_reason(tmp_path, spec, weights_of, problem):
    schema = mixed_schema()
    reg = Registry(tmp_path)
    reg.publish(custom_weights(schema), schema, parent=None, network=CUSTOM)
    bad = state_numpy(TabularNet.for_schema(schema, hidden=8).state_dict()) if weights_of == BUILTIN else custom_weights(schema)
    reg.publish(bad, schema, parent="v000001", network=spec)
    with pytest.raises(RegistryError, match=f"the network of v000002 cannot be served: .*{problem}"):
        reg.load("v000002")
    assert reg.load("v000001").network == CUSTOM  # what a server keeps serving


def test_a_malformed_network_spec_is_refused_naming_the_field(tmp_path, schema):
    reg = Registry(tmp_path)
    reg.publish(weights(), schema, parent=None)
    path = tmp_path / "versions" / "v000001" / "manifest.json"
    doc = orjson.loads(path.read_bytes())
    doc["network"] = {"factory": "rm -rf /"}
    path.write_bytes(sealed({k: v for k, v in doc.items() if k != "checksum"}))
    with pytest.raises(RegistryError, match=r"the manifest of v000001 has a malformed 'network': network factory 'rm -rf /' must be"):
        reg.load_current()


# -- verification: the manifest's checksum, and every odd content refused with a RegistryError ------


def sealed(doc: dict) -> bytes:
    """A manifest as the registry writes one: its checksum recomputed over the (changed) fields."""
    return orjson.dumps({**doc, "checksum": checksum(doc)})


def test_published_manifests_carry_a_checksum_of_all_their_fields(tmp_path, schema):
    reg = Registry(tmp_path)
    m = reg.publish(weights(), schema, parent=None, metrics={"ap": np.float32(0.5)})
    on_disk = orjson.loads((tmp_path / "versions" / "v000001" / "manifest.json").read_bytes())
    assert on_disk == m and m["checksum"] == checksum(on_disk) and m["metrics"] == {"ap": 0.5}


def test_an_edited_normalisation_value_is_refused_by_load_and_manifest(tmp_path, schema):
    reg = Registry(tmp_path)
    reg.publish(weights(), schema, parent=None)
    path = tmp_path / "versions" / "v000001" / "manifest.json"
    doc = orjson.loads(path.read_bytes())
    doc["feature_schema"]["mean"][0] += 0.5
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    with pytest.raises(RegistryError, match="the manifest of v000001 does not match its checksum"):
        reg.load_current()
    with pytest.raises(RegistryError, match="does not match its checksum"):
        reg.manifest("v000001")  # what the learner reads the pretrained version's figures from


def test_a_manifest_without_checksum_loads_with_one_warning(tmp_path, schema, caplog):
    reg = Registry(tmp_path)
    reg.publish(weights(), schema, parent=None)
    path = tmp_path / "versions" / "v000001" / "manifest.json"
    doc = orjson.loads(path.read_bytes())
    del doc["checksum"]
    path.write_bytes(orjson.dumps(doc))
    with caplog.at_level("WARNING", logger="perennial.registry"):
        for _ in range(3):
            assert reg.load("v000001").version == "v000001"
    assert [r.getMessage() for r in caplog.records] == ["the manifest of v000001 has no checksum (written before checksums): only its weights are verified"]
    weights_path = tmp_path / "versions" / "v000001" / "model.safetensors"
    weights_path.write_bytes(weights_path.read_bytes()[:-1] + b"!")
    with pytest.raises(RegistryError, match="checksum mismatch"):
        reg.load("v000001")


def test_a_calibration_is_published_checksummed_and_served(tmp_path, schema):
    """On disk and back: the loaded version scores the calibration of its network's score."""
    reg = Registry(tmp_path)
    x = np.random.default_rng(1).normal(size=(2000, 3)).astype(np.float32)
    network = ScoringModel("raw", schema, weights(0))
    y = (np.random.default_rng(2).random(len(x)) < network.score(x) / 10).astype(np.int64)
    cal = fit_platt(network.score(x), y)
    manifest = reg.publish(weights(0), schema, parent=None, calibration=cal)
    assert manifest["calibration"]["method"] == "platt" and manifest["calibration"]["figures"]["frauds"] == int(y.sum())
    on_disk = orjson.loads((tmp_path / "versions" / "v000001" / "manifest.json").read_bytes())
    assert on_disk["calibration"] == cal.to_dict() and on_disk["checksum"] == checksum(on_disk)
    served = Registry(tmp_path).load_current()
    assert served.calibration == cal
    assert np.allclose(served.score(x), cal.apply(network.score(x)), rtol=1e-5, atol=1e-7)
    assert np.array_equal(served.score_raw(x), network.score(x))
    assert reg.publish(weights(1), schema, parent="v000001")["calibration"] == {"method": "identity"}
    assert reg.load_current().calibration == IDENTITY


def test_a_version_written_before_calibration_loads_as_the_identity(tmp_path, schema):
    reg = Registry(tmp_path)
    reg.publish(weights(0), schema, parent=None, calibration=Calibration(2.0, -1.0))
    path = tmp_path / "versions" / "v000001" / "manifest.json"
    doc = orjson.loads(path.read_bytes())
    del doc["calibration"], doc["checksum"]
    path.write_bytes(sealed(doc))
    old = reg.load("v000001")
    assert old.calibration == IDENTITY
    x = np.random.default_rng(3).normal(size=(50, 3)).astype(np.float32)
    assert np.array_equal(old.score(x), old.score_raw(x))


@pytest.mark.parametrize(
    ("calibration", "problem"),
    [
        ({"method": "platt", "slope": -2.0, "intercept": 0.0}, "'slope' is -2.0; it must be positive"),
        ({"method": "platt", "slope": 2.0}, "'intercept' is None"),
        ({"method": "spline"}, "'method' is 'spline'"),
        ("platt", "it is str, not an object"),
    ],
)
def test_a_malformed_calibration_is_refused_naming_the_field(tmp_path, schema, calibration, problem):
    reg = Registry(tmp_path)
    reg.publish(weights(0), schema, parent=None)
    path = tmp_path / "versions" / "v000001" / "manifest.json"
    doc = orjson.loads(path.read_bytes())
    doc["calibration"] = calibration
    path.write_bytes(sealed({k: v for k, v in doc.items() if k != "checksum"}))
    with pytest.raises(RegistryError, match=re.escape(f"the manifest of v000001 has a malformed 'calibration': {problem}")):
        reg.load("v000001")


@pytest.fixture
def two_versions(tmp_path, schema):
    """v000001 served, v000002 written completely (not served yet): the one each corruption damages."""
    reg = Registry(tmp_path)
    reg.publish(weights(0), schema, parent=None)
    reg.add_version(weights(1), schema, parent="v000001")
    return reg


def _edit(field: str, value):
    def corrupt(v: Path) -> None:
        doc = orjson.loads((v / "manifest.json").read_bytes())
        doc[field] = value
        (v / "manifest.json").write_bytes(sealed(doc))
    return corrupt


def _edit_schema(key: str, value):
    def corrupt(v: Path) -> None:
        doc = orjson.loads((v / "manifest.json").read_bytes())
        doc["feature_schema"][key] = value
        (v / "manifest.json").write_bytes(sealed(doc))
    return corrupt


def _weights(data: bytes):
    """Other weights bytes, with the manifest's sha256 (and checksum) matching them."""
    def corrupt(v: Path) -> None:
        (v / "model.safetensors").write_bytes(data)
        _edit("sha256", hashlib.sha256(data).hexdigest())(v)
    return corrupt


def _replace_with_dir(name: str):
    def corrupt(v: Path) -> None:
        (v / name).unlink()
        (v / name).mkdir()
    return corrupt


def _truncate_weights(v: Path) -> None:
    path = v / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])


def _version_is_a_file(v: Path) -> None:
    shutil.rmtree(v)
    v.write_bytes(b"not a directory")


def _manifest_of_v000001(v: Path) -> None:
    shutil.copy(v.parent / "v000001" / "manifest.json", v / "manifest.json")


def _write(name: str, data: bytes):
    return lambda v: (v / name).write_bytes(data)


UNCHAINED = {"layers.0.weight": np.ones((4, 3), np.float32), "layers.0.bias": np.ones(4, np.float32),
             "layers.2.weight": np.ones((2, 5), np.float32), "layers.2.bias": np.ones(2, np.float32)}

# what damages v000002, and what the refusal says
VERSION_CORRUPTIONS = {
    "manifest is []": (_write("manifest.json", b"[]"), "the manifest of v000002 is an array, not an object"),
    'manifest is "x"': (_write("manifest.json", b'"x"'), "is a string, not an object"),
    "manifest is null": (_write("manifest.json", b"null"), "is null, not an object"),
    "manifest is {}": (_write("manifest.json", b"{}"), "the manifest of v000002 has no 'version'"),
    "manifest is not JSON": (_write("manifest.json", b"\xff\xfe{"), "is not valid JSON"),
    "manifest is truncated": (lambda v: (v / "manifest.json").write_bytes((v / "manifest.json").read_bytes()[:40]), "is not valid JSON"),
    "manifest edited": (
        lambda v: (v / "manifest.json").write_bytes((v / "manifest.json").read_bytes().replace(b'"v000001"', b'"v000000"')),
        "does not match its checksum",
    ),
    "manifest is a directory": (_replace_with_dir("manifest.json"), "the manifest of v000002 is a directory, not a file"),
    "manifest is missing": (lambda v: (v / "manifest.json").unlink(), "the manifest of v000002 is missing"),
    "manifest of another version": (_manifest_of_v000001, "the manifest in v000002's directory is the manifest of 'v000001'"),
    "feature_schema is a string": (_edit("feature_schema", "abc"), "has a string as 'feature_schema'"),
    "metrics is a list": (_edit("metrics", []), "has an array as 'metrics'"),
    "created_ts is a string": (_edit("created_ts", "yesterday"), "has a string as 'created_ts'"),
    "created_ts is a boolean": (_edit("created_ts", True), "has a boolean as 'created_ts'"),
    "sha256 is a number": (_edit("sha256", 5), "has a number as 'sha256'"),
    "sha256 is not a digest": (_edit("sha256", "abc"), "'abc' as 'sha256', not a sha256 digest"),
    "parent is not an id": (_edit("parent", "../v1"), "names '../v1' as parent"),
    "schema names is a string": (_edit_schema("names", "abc"), "feature schema of v000002 is malformed: a feature schema is an object of four lists"),
    "schema names repeat": (_edit_schema("names", ["a", "a", "c"]), "names must be distinct"),
    "schema std is zero": (_edit_schema("std", [1.0, 0.0, 1.0]), "std finite positive numbers"),
    "schema mean is a string": (_edit_schema("mean", ["1", 0.0, 0.0]), "mean must hold finite numbers"),
    "schema log1p is a number": (_edit_schema("log1p", [1, 0, 0]), "log1p must hold booleans"),
    "schema lengths differ": (_edit_schema("mean", [0.0]), "differ in length"),
    "weights truncated": (_truncate_weights, "checksum mismatch for v000002"),
    "weights are a directory": (_replace_with_dir("model.safetensors"), "the weights of v000002 is a directory, not a file"),
    "weights are missing": (lambda v: (v / "model.safetensors").unlink(), "the weights of v000002 is missing"),
    "weights are not safetensors": (_weights(b"garbage, not safetensors"), "the weights of v000002 cannot be loaded"),
    "weights have no layers": (_weights(save_safetensors({"w": np.zeros(3, np.float32)})), "the weights of v000002 cannot be loaded"),
    "weights for 2 features": (_weights(save_safetensors(weights(n_features=2))), "weights expect 2 features but the schema names 3"),
    "weights' layers do not chain": (_weights(save_safetensors(UNCHAINED)), "layer 'layers.2' takes 5 inputs but the layer before gives 4"),
    "version is a file": (_version_is_a_file, "version v000002 is not a directory"),
}


@pytest.mark.parametrize("name", VERSION_CORRUPTIONS)
def test_odd_version_content_is_refused_naming_the_problem(two_versions, name):
    corrupt, message = VERSION_CORRUPTIONS[name]
    corrupt(two_versions.versions_dir / "v000002")
    with pytest.raises(RegistryError, match=re.escape(message)):
        two_versions.load("v000002")
    assert two_versions.load("v000001").version == "v000001"


CURRENT_CORRUPTIONS = {
    "a directory": (lambda p: p.mkdir(), "CURRENT is a directory, not a file"),
    "garbage bytes": (lambda p: p.write_bytes(b"\xff\xfe\x00junk"), r"CURRENT holds b'\xff\xfe\x00junk', not a version id"),
    "empty": (lambda p: p.write_bytes(b""), "CURRENT holds b'', not a version id"),
    "a path": (lambda p: p.write_bytes(b"../../etc\n"), "CURRENT holds b'../../etc\\n', not a version id"),
    "long text": (lambda p: p.write_bytes(b"v" * 100), "... (100 bytes), not a version id"),
}


@pytest.mark.parametrize("name", CURRENT_CORRUPTIONS)
def test_odd_current_is_refused_naming_the_problem(two_versions, name):
    corrupt, message = CURRENT_CORRUPTIONS[name]
    two_versions.current_path.unlink()
    corrupt(two_versions.current_path)
    with pytest.raises(RegistryError, match=re.escape(message)):
        two_versions.current_version()
    with pytest.raises(RegistryError, match=re.escape(message)):
        two_versions.load_current()


def test_current_naming_a_missing_version_is_refused(two_versions):
    two_versions.current_path.write_text("v000009\n")
    with pytest.raises(RegistryError, match="version v000009 does not exist"):
        two_versions.load_current()


def test_unreadable_files_are_refused(two_versions, monkeypatch):
    # running as root, chmod cannot make a file unreadable: the read itself is made to fail
    real = Path.read_bytes

    def read_bytes(self):
        if self.name in ("manifest.json", "CURRENT", "retention.safetensors"):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(RegistryError, match=r"cannot read CURRENT .*: Permission denied"):
        two_versions.current_version()
    with pytest.raises(RegistryError, match=r"cannot read the manifest of v000001 .*: Permission denied"):
        two_versions.load("v000001")


def test_odd_retention_and_replay_seed_are_refused(two_versions):
    two_versions.retention_path.parent.mkdir()
    two_versions.retention_path.mkdir()
    with pytest.raises(RegistryError, match="the retention set is a directory"):
        two_versions.load_retention()
    two_versions.replay_seed_path.write_bytes(b"garbage")
    with pytest.raises(RegistryError, match=r"the replay seed at .* is not a safetensors file with x and y"):
        two_versions.load_replay_seed()
    two_versions.replay_seed_path.write_bytes(save_safetensors({"x": np.zeros((3, 2), np.float32), "y": np.zeros(2, np.int64)}))
    with pytest.raises(RegistryError, match=r"has x of shape \(3, 2\) and y of shape \(2,\)"):
        two_versions.load_replay_seed()


# -- the same, for any content (hypothesis) ----------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SCHEMA_KEYS = ("names", "log1p", "mean", "std")
CALIBRATION_KEYS = ("method", "slope", "intercept", "figures")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A registry whose v000002 each example overwrites (hypothesis runs many examples per test)."""
    reg = Registry(tmp_path_factory.mktemp("scratch"))
    s = FeatureSchema.fit(NAMES, np.random.default_rng(0).normal(size=(50, 3)))
    reg.publish(weights(0), s, parent=None)
    reg.add_version(weights(1), s, parent="v000001", calibration=Calibration(1.5, -2.0, {"events": 100}))
    folder = reg.versions_dir / "v000002"
    return reg, (folder / "manifest.json").read_bytes(), (folder / "model.safetensors").read_bytes()


def _loads_or_refuses(reg: Registry, version: str) -> None:
    """The only outcomes allowed: a model that scores, or a RegistryError (any other exception fails the test)."""
    try:
        model = reg.load(version)
    except RegistryError:
        return
    assert model.score(np.zeros((2, len(model.schema.names)), np.float32)).shape == (2,)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=200) | JSON.map(orjson.dumps))
def test_any_manifest_bytes_are_loaded_or_refused(scratch, data):
    reg, _, good_weights = scratch
    (reg.versions_dir / "v000002" / "manifest.json").write_bytes(data)
    (reg.versions_dir / "v000002" / "model.safetensors").write_bytes(good_weights)
    with pytest.raises(RegistryError):
        reg.load("v000002")


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(
        sorted(MANIFEST_FIELDS) + ["calibration", "network", "network.factory", "network.kwargs"]
        + [f"feature_schema.{k}" for k in SCHEMA_KEYS] + [f"calibration.{k}" for k in CALIBRATION_KEYS]
    ),
    value=JSON,
)
def test_any_field_value_under_a_valid_checksum_is_loaded_or_refused(scratch, key, value):
    reg, good_manifest, good_weights = scratch
    doc = orjson.loads(good_manifest)
    if "." in key:
        field, sub = key.split(".")
        doc[field][sub] = value
    else:
        doc[key] = value
    (reg.versions_dir / "v000002" / "manifest.json").write_bytes(sealed(doc))
    (reg.versions_dir / "v000002" / "model.safetensors").write_bytes(good_weights)
    _loads_or_refuses(reg, "v000002")


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_weights_bytes_under_a_matching_sha256_are_loaded_or_refused(scratch, data):
    _any_weights_bytes(scratch, data)


LAYER_NAMES = st.sampled_from(["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias", "layers.x.weight", "layers", "w"])
ARRAYS = hnp.arrays(
    st.sampled_from([np.float32, np.float16, np.float64, np.int8, np.uint8, np.bool_]),
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)


@settings(max_examples=150, deadline=None)
@given(tensors=st.dictionaries(LAYER_NAMES, ARRAYS, max_size=4))
def test_any_safetensors_weights_under_a_matching_sha256_are_loaded_or_refused(scratch, tensors):
    _any_weights_bytes(scratch, save_safetensors(tensors))


def _any_weights_bytes(scratch, data: bytes) -> None:
    reg, good_manifest, _ = scratch
    doc = orjson.loads(good_manifest)
    doc["sha256"] = hashlib.sha256(data).hexdigest()
    (reg.versions_dir / "v000002" / "manifest.json").write_bytes(sealed(doc))
    (reg.versions_dir / "v000002" / "model.safetensors").write_bytes(data)
    _loads_or_refuses(reg, "v000002")


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=40) | st.from_regex(r"\Av\d{6}\s*\Z").map(str.encode))
def test_any_current_bytes_name_a_version_or_are_refused(scratch, data):
    reg = scratch[0]
    reg.current_path.write_bytes(data)
    try:
        version = reg.current_version()
    except RegistryError:
        return
    assert VERSION_RE.match(version) and data.decode().strip() == version
