import numpy as np
import pytest

from learners.calibration import expected_calibration_error, log_loss
from learners.pretrain import pretrain
from learners.registry import Registry

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
