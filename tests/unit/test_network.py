"""A network of the user's own (learners/network.py): scored by torch as the module itself scores,
fine-tuned by the same Avalanche learner, and refused with its reason when it cannot be built."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from learners.avalanche_adapter import ContinualLearner
from learners.calibration import Calibration
from learners.checkpoint import load_checkpoint, save_checkpoint
from learners.model import TabularNet, state_numpy
from learners.network import BUILTIN, NetworkSpec, build, trainable
from learners.quarantine import learnable
from learners.schema import FeatureSchema
from learners.scoring import ScoringModel
from perennial.settings import LearnSettings

CUSTOM = NetworkSpec.parse("tests.unit.custom_networks:build", '{"width": 12}')
SOME_CALIBRATION = Calibration(slope=1.3, intercept=-0.4)


def mixed(n=600, seed=0):
    """A schema with an optional number and a category, raw rows (NaN: missing) and labels that need both."""
    r = np.random.default_rng(seed)
    a = r.normal(size=n)
    b = np.where(r.random(n) < 0.3, None, r.exponential(size=n))
    c = r.choice(["US", "GB", "FR", "risky"], n, p=[0.4, 0.3, 0.2, 0.1])
    rows = [[float(x), y, z] for x, y, z in zip(a, b, c)]
    schema = FeatureSchema.fit(("a", "b", "c"), rows, min_count=2)
    y = ((c == "risky") | ((b == None) & (a > 1.0))).astype(np.int64)  # noqa: E711 -- elementwise
    return schema, schema.encode_rows(rows), y


def custom_model(schema, seed=0, calibration=SOME_CALIBRATION):
    torch.manual_seed(seed)
    weights = state_numpy(build(CUSTOM, schema).state_dict())
    return ScoringModel("v", schema, weights, calibration=calibration, network=CUSTOM)


def torch_fraud_probability(net, z):
    net.eval()
    with torch.inference_mode():
        return torch.softmax(net(torch.from_numpy(z)), 1)[:, 1].numpy()


def test_a_custom_network_scores_as_its_own_torch_module():
    schema, raw, _ = mixed()
    model = custom_model(schema)
    assert np.isnan(raw).any() and model.network == CUSTOM
    z = schema.transform(raw)
    expected = torch_fraud_probability(trainable(model), z)
    assert np.allclose(model.score_raw(raw), expected, atol=1e-6)
    assert np.allclose(model.score(raw), model.calibration.apply(expected), atol=1e-6)
    assert model._logit(z).dtype == np.float32  # as the numpy path's, for calibration and the gates
    assert np.array_equal(model.score_normalised(z), model.score(raw))


def test_concurrent_scoring_of_a_custom_network_gives_each_caller_its_own_scores():
    schema, raw, _ = mixed(2000)
    model = custom_model(schema)
    chunks = np.array_split(raw, 64)
    alone = [model.score(c) for c in chunks]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(model.score, chunks))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))


def test_trainable_gives_a_copy_of_the_weights_in_training_mode():
    schema, raw, _ = mixed()
    model = custom_model(schema)
    net = trainable(model)
    assert net.training and {k: v.numpy().tolist() for k, v in net.state_dict().items()} == {
        k: v.tolist() for k, v in model.weights.items()}
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    assert np.allclose(model.score_raw(raw), custom_model(schema).score_raw(raw))  # the served model is untouched
    builtin = ScoringModel("v", schema, state_numpy(TabularNet.for_schema(schema, hidden=8).state_dict()))
    assert builtin.network == BUILTIN and isinstance(trainable(builtin), TabularNet)


@pytest.mark.parametrize(("factory", "message"), [
    ("tests.unit.no_such_module:build", "module tests.unit.no_such_module cannot be imported"),
    ("tests.unit.custom_networks:missing", "has no attribute missing"),
    ("tests.unit.custom_networks:NOT_CALLABLE", "is not callable"),
    ("tests.unit.custom_networks:broken", r"failed for this schema \(RuntimeError: this factory needs a GPU\)"),
    ("tests.unit.custom_networks:wrong_shape", r"must return \[N, 2\] logits .* returned \(2, 3\)"),
])
def test_a_network_that_cannot_be_built_is_refused_with_its_reason(factory, message):
    schema, _, _ = mixed(100)
    with pytest.raises(ValueError, match=message):
        ScoringModel("v", schema, {}, network=NetworkSpec(factory))


def test_weights_that_do_not_fit_a_custom_network_are_refused():
    schema, _, _ = mixed(100)
    weights = state_numpy(build(CUSTOM, schema).state_dict())
    with pytest.raises(ValueError, match=r"the weights do not fit network tests.unit.custom_networks:build: .*out.weight"):
        ScoringModel("v", schema, {k: v for k, v in weights.items() if k != "out.weight"}, network=CUSTOM)
    with pytest.raises(ValueError, match="the weights do not fit"):
        ScoringModel("v", schema, weights, network=NetworkSpec(CUSTOM.factory, {"width": 13}))


def test_the_continual_learner_fine_tunes_a_custom_network_and_its_checkpoint_resumes_it(tmp_path):
    schema, raw, y = mixed(800, seed=1)
    z = schema.transform(raw)
    served = custom_model(schema)
    settings = LearnSettings(replay_size=200, batch_size=64, epochs=3)
    learner = ContinualLearner(trainable(served), settings)
    first = learner.learn(z[:400], y[:400])
    second = learner.learn(z[400:], y[400:])
    assert np.isfinite(first.train_loss) and first.ewc_penalty == 0.0 and second.ewc_penalty > 0.0  # EWC from the second round
    assert second.replay_size > 0
    weights = learner.weights()
    assert set(weights) == set(served.weights) and not np.allclose(weights["embeddings.0.weight"], served.weights["embeddings.0.weight"])
    candidate = ScoringModel("candidate", schema, weights, network=served.network)
    assert np.allclose(candidate.score_raw(raw), learner.predict(z), atol=1e-6)
    before = np.average(np.log(np.where(y == 1, served.score_raw(raw), 1 - served.score_raw(raw))))
    after = np.average(np.log(np.where(y == 1, candidate.score_raw(raw), 1 - candidate.score_raw(raw))))
    assert after > before + 0.1  # it learned

    tensors, meta = learner.state()
    save_checkpoint(tmp_path / "ckpt", tensors, meta)
    resumed = ContinualLearner(trainable(served), settings)
    resumed.restore(*load_checkpoint(tmp_path / "ckpt"))
    torch.manual_seed(5)
    a = learner.learn(z[:300], y[:300])
    torch.manual_seed(5)
    b = resumed.learn(z[:300], y[:300])
    assert a == b and all(np.array_equal(v, resumed.weights()[k]) for k, v in learner.weights().items())


def test_the_quarantine_cross_fits_a_custom_network(monkeypatch):
    monkeypatch.setattr("learners.quarantine.STEPS", 4000)  # 5 epochs: enough for this signal
    schema, raw, y = mixed(800, seed=2)
    found = learnable(custom_model(schema, calibration=Calibration()), raw, y, confidence=0.9)
    assert found.released and found.figures["cross_fitted_ap"] > found.figures["served_ap"]
