import numpy as np
import pytest

from learners.calibration import expected_calibration_error, log_loss
from learners.network import NetworkSpec
from learners.pretrain import fit_schema, pretrain
from learners.registry import Registry
from learners.schema import FeatureSchema
from streams.events import EventError

NAMES = ("a", "b", "c")


def history(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x[:, 0] + rng.normal(size=n) > 2.2).astype(np.int64)


def test_pretraining_calibrates_the_first_version_on_its_validation_split(tmp_path):
    x, y = history(5000, 0)
    registry = Registry(tmp_path / "registry")
    manifest = pretrain(NAMES, x, y, registry, epochs=2, hidden=16, retention_size=300, replay_seed_size=300)
    served = registry.load_current()
    assert manifest["calibration"]["method"] == "platt" and served.calibration.to_dict() == manifest["calibration"]
    # the figures recorded are those of the served scores on the later 20% of history
    val_x, val_y = x[4000:], y[4000:]
    m = manifest["metrics"]
    assert m["calibration_ece_after"] == pytest.approx(expected_calibration_error(val_y, served.score(val_x)), abs=1e-6)
    assert m["calibration_ece_before"] == pytest.approx(expected_calibration_error(val_y, served.score_raw(val_x)), abs=1e-6)
    assert m["calibration_log_loss_after"] == pytest.approx(log_loss(val_y, served.score(val_x)), abs=1e-6)
    assert m["calibration_log_loss_after"] <= m["calibration_log_loss_before"]
    assert manifest["calibration"]["figures"]["events"] == 1000 and manifest["calibration"]["figures"]["frauds"] == int(val_y.sum())
    # the guard's first usual rate is counted on served scores, as the learner's guard sees them
    assert m["validation_called_fraud"] == int((served.score(val_x) >= 0.5).sum())


def test_a_history_whose_later_part_holds_no_fraud_is_refused(tmp_path):
    x, y = history(5000, 1)
    y[4000:] = 0
    with pytest.raises(ValueError, match=r"the later 20% of history \(1000 events\) holds 0 frauds"):
        pretrain(NAMES, x, y, Registry(tmp_path / "registry"), epochs=1, hidden=16, retention_size=300, replay_seed_size=300)
    assert Registry(tmp_path / "registry").versions() == []


# -- a history of your own: categories, gaps, your own network ------------------------------------

COUNTRIES = ("US", "GB", "FR", "NG")
MIXED = ("amount", "country", "device_age")


def mixed_history(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of cells as a table holds them: an amount, a country (fraud far likelier in NG) and a
    device age that is missing for a fifth of the rows (more often for frauds)."""
    rng = np.random.default_rng(seed)
    country = rng.choice(COUNTRIES, n, p=[0.5, 0.2, 0.2, 0.1])
    y = (rng.random(n) < np.where(country == "NG", 0.35, 0.02)).astype(np.int64)
    amount = rng.lognormal(3 + y, 1.0)
    age = rng.exponential(100, n)
    gone = rng.random(n) < np.where(y == 1, 0.5, 0.15)
    rows = np.empty((n, 3), dtype=object)
    rows[:, 0], rows[:, 1] = amount.tolist(), country.tolist()
    rows[:, 2] = [None if g else a for g, a in zip(gone.tolist(), age.tolist())]
    return rows, y


def test_a_history_of_categories_and_gaps_is_pretrained_as_raw_vectors(tmp_path):
    rows, y = mixed_history(5000, 0)
    registry = Registry(tmp_path / "registry")
    manifest = pretrain(MIXED, rows, y, registry, epochs=3, hidden=16, retention_size=300, replay_seed_size=300)
    fs = manifest["feature_schema"]
    assert fs["names"] == list(MIXED) and fs["optional"] == [False, False, True]
    assert fs["categories"][0] is None and set(fs["categories"][1]) == set(COUNTRIES) and fs["categories"][2] is None
    assert manifest["network"] == {"factory": "learners.model:build", "kwargs": {"hidden": 16}}
    served = registry.load_current()
    schema = served.schema
    # the retention set and the replay seed hold raw vectors: NaN where the device age is missing, country codes
    for x, _ in (registry.load_retention()[:2], registry.load_replay_seed()):
        assert np.isnan(x[:, 2]).any() and not np.isnan(x[:, :2]).any()
        assert set(np.unique(x[:, 1]).tolist()) <= set(range(2, 2 + len(COUNTRIES)))
    raw = schema.encode_rows(rows[4000:])
    assert manifest["metrics"]["validation_ap"] > 3 * y[4000:].mean()
    # what was learned from the category and from the absence itself
    ng, us = schema.encode_rows([[20.0, "NG", 50.0], [20.0, "US", 50.0]])
    assert served.score(np.array([ng]))[0] > 2 * served.score(np.array([us]))[0]
    gone = raw[np.isnan(raw[:, 2])]
    assert served.score(gone).mean() > served.score(raw[~np.isnan(raw[:, 2])]).mean()
    assert manifest["metrics"]["validation_unseen_categories"] == 0


def test_a_gap_only_in_the_later_part_makes_the_feature_optional_unless_declared_required(tmp_path):
    rows, y = mixed_history(2000, 1)
    rows[:, 2] = 1.0
    rows[1900, 2] = None  # in the later 20%, which the schema is not fitted on
    schema = fit_schema(MIXED, rows)
    assert schema.optional == (False, False, True) and np.isnan(schema.encode_rows(rows[1900:1901])[0, 2])
    with pytest.raises(EventError, match=r"row 1900: feature 'device_age' is missing and not declared optional"):
        pretrain(MIXED, rows, y, Registry(tmp_path / "registry"), schema=fit_schema(MIXED, rows, [{"name": "device_age", "missing": False}]),
                 epochs=1, hidden=16, retention_size=300, replay_seed_size=300)
    assert Registry(tmp_path / "registry").versions() == []


def test_a_declaration_overrides_what_is_inferred():
    rows, _ = mixed_history(2000, 2)
    rows[:, 0] = [float(v % 3) for v in range(2000)]  # a code that is no quantity
    declared = [{"name": "amount", "type": "category"}, {"name": "country", "missing": True, "max_categories": 2}]
    schema = fit_schema(MIXED, rows, declared)
    assert schema.categories == (("0", "1", "2"), ("US", "FR"), None)  # the two most frequent countries
    assert schema.optional == (False, True, True)


def test_numbers_only_are_pretrained_as_before(tmp_path):
    x, y = history(3000, 3)
    manifest = pretrain(NAMES, x, y, Registry(tmp_path / "registry"), epochs=1, hidden=16, retention_size=300, replay_seed_size=300)
    assert set(manifest["feature_schema"]) == {"names", "log1p", "mean", "std"}  # no optional, no categories
    assert fit_schema(NAMES, x) == FeatureSchema.fit(NAMES, x[:2400])
    retention = Registry(tmp_path / "registry").load_retention()[0]
    assert np.isin(retention, x[2400:]).all()  # rows as they were, not re-encoded


def test_a_network_of_your_own_is_trained_and_published_by_its_name(tmp_path):
    rows, y = mixed_history(3000, 4)
    spec = NetworkSpec.parse("tests.unit.custom_networks:build", '{"width": 8}')
    manifest = pretrain(MIXED, rows, y, Registry(tmp_path / "registry"), network=spec, epochs=2, retention_size=300, replay_seed_size=300)
    assert manifest["network"] == {"factory": "tests.unit.custom_networks:build", "kwargs": {"width": 8}}
    assert manifest["metrics"]["validation_ap"] > 2 * y[2400:].mean()
    with pytest.raises(ValueError, match=r"network factory tests.unit.custom_networks:broken failed for this schema \(RuntimeError"):
        pretrain(MIXED, rows, y, Registry(tmp_path / "other"), network=NetworkSpec("tests.unit.custom_networks:broken"), epochs=1)
    assert Registry(tmp_path / "other").versions() == []
    # built, but not trainable (no parameters) or scoring NaN: refused naming the network, nothing written
    for factory, kwargs, why in (("untrainable", {}, "optimizer got an empty parameter list"), ("faulty", {"fails": "nan", "above": -100}, "NaN")):
        with pytest.raises(ValueError, match=rf"network tests.unit.custom_networks:{factory} cannot be trained on this history \(.*{why}"):
            pretrain(MIXED, rows, y, Registry(tmp_path / factory), network=NetworkSpec(f"tests.unit.custom_networks:{factory}", kwargs), epochs=1)
        assert not (tmp_path / factory).exists() or Registry(tmp_path / factory).versions() == []
