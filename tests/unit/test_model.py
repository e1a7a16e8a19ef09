import numpy as np
import pytest
import torch

from learners.calibration import Calibration
from learners.model import TabularNet, state_numpy
from learners.schema import FeatureSchema
from learners.scoring import ScoringModel


def test_numpy_scoring_matches_torch():
    torch.manual_seed(0)
    net = TabularNet(4, hidden=8)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32) * 3
    schema = FeatureSchema.fit(("a", "b", "c", "d"), x)
    model = ScoringModel("v", schema, state_numpy(net.state_dict()))
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(schema.transform(x))), 1)[:, 1].numpy()
    assert np.allclose(model.score(x), expected, atol=1e-6)


def test_served_weights_are_read_only():
    model = ScoringModel("v", FeatureSchema(("a",), (False,), (0.0,), (1.0,)), state_numpy(TabularNet(1, hidden=2).state_dict()))
    with pytest.raises(ValueError):
        next(iter(model.weights.values()))[0] = 1


def test_weights_for_another_schema_are_rejected():
    with pytest.raises(ValueError, match="expect 3 features"):
        ScoringModel("v", FeatureSchema(("a",), (False,), (0.0,), (1.0,)), state_numpy(TabularNet(3).state_dict()))


def test_network_is_rebuilt_from_any_saved_shape():
    net = TabularNet(5, hidden=12, depth=3)
    again = TabularNet.from_state(net.state_dict())
    assert [p.shape for p in again.parameters()] == [p.shape for p in net.parameters()]


def test_a_calibrated_model_serves_its_calibration_of_the_network_score():
    torch.manual_seed(1)
    net = TabularNet(4, hidden=8)
    x = np.random.default_rng(1).normal(size=(500, 4)).astype(np.float32)
    schema = FeatureSchema.fit(("a", "b", "c", "d"), x)
    weights = state_numpy(net.state_dict())
    cal = Calibration(slope=1.7, intercept=-3.2)
    raw, served = ScoringModel("v", schema, weights), ScoringModel("v", schema, weights, calibration=cal)
    assert np.allclose(served.score(x), cal.apply(raw.score(x)), rtol=1e-5, atol=1e-7)
    assert np.array_equal(served.score_raw(x), raw.score(x))
    assert np.array_equal(served.score_normalised(schema.transform(x)), served.score(x))
    assert np.array_equal(np.argsort(served.score(x)), np.argsort(raw.score(x)))
    assert served.score(x).mean() < raw.score(x).mean() / 5
