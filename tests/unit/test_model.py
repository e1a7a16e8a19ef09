import numpy as np
import pytest
import torch
from torch import nn

from learners.calibration import Calibration
from learners.model import TabularNet, embedding_dim, state_numpy
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


# -- categorical features: embeddings ------------------------------------------------------------


def mixed_schema(n=400, seed=0):
    """2 numbers (b optional: one indicator column), 2 categories (vocabularies of 3 and 10 values)."""
    r = np.random.default_rng(seed)
    rows = [[float(r.normal()), None if r.random() < 0.2 else float(r.exponential()),
             str(r.choice(["US", "GB", "FR"])), f"m{r.integers(10)}"] for _ in range(n)]
    schema = FeatureSchema.fit(("a", "b", "c", "d"), rows, declaration=[{"name": "d", "type": "category", "missing": True}])
    return schema, rows


def test_mixed_schema_layout():
    schema, _ = mixed_schema()
    assert schema.numeric_width == 3 and schema.cardinalities == (5, 12) and schema.input_width == 5


def embedded_net(schema, seed=0, hidden=16, depth=2):
    torch.manual_seed(seed)
    net = TabularNet.for_schema(schema, hidden=hidden, depth=depth)
    with torch.no_grad():  # spread the embeddings so that a wrong gather cannot go unnoticed
        for table in net.embeddings.parameters():
            table.mul_(2.0)
    return net


def torch_logit(net, z):
    with torch.no_grad():
        logits = net(torch.from_numpy(np.asarray(z, dtype=np.float32)))
    return (logits[:, 1] - logits[:, 0]).numpy()


def test_embedding_dim_rule():
    assert [embedding_dim(c) for c in (1, 2, 5, 8, 9, 52)] == [1, 2, 5, 8, 8, 8]
    with pytest.raises(ValueError):
        embedding_dim(0)


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_embedded_numpy_scoring_matches_torch(depth):
    schema, rows = mixed_schema()
    net = embedded_net(schema, depth=depth)
    assert [tuple(t.weight.shape) for t in net.embeddings] == [(5, 5), (12, 8)]
    assert net.layers[0].in_features == 3 + 5 + 8
    model = ScoringModel("v", schema, state_numpy(net.state_dict()))
    raw = schema.encode_rows(rows)
    z = schema.transform(raw)
    assert set(np.unique(z[:, 3])) >= {2.0, 3.0, 4.0} and np.abs(z[:, :3]).max() > 0
    assert np.allclose(model._logit(z), torch_logit(net, z), atol=1e-5)
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(z)), 1)[:, 1].numpy()
    assert np.allclose(model.score(raw), expected, atol=1e-6)


def test_codes_outside_a_features_codes_are_read_as_other_by_both():
    schema, rows = mixed_schema()
    net = embedded_net(schema)
    model = ScoringModel("v", schema, state_numpy(net.state_dict()))
    z = schema.transform(schema.encode_rows(rows[:6]))
    # c has codes 0..4, d 0..11: negative, past the last code, huge, NaN
    for col, strange in ((3, [-1.0, -3.2, 5.0, 7.0, 1e9, np.nan]), (4, [-1.0, -0.6, 12.0, 13.0, 1e9, np.nan])):
        odd, other = z.copy(), z.copy()
        odd[:, col], other[:, col] = strange, 0.0
        assert np.allclose(torch_logit(net, odd), torch_logit(net, other), atol=1e-6)
        assert np.allclose(model._logit(odd), model._logit(other), atol=1e-6)
        assert np.allclose(model._logit(odd), torch_logit(net, odd), atol=1e-5)
    noisy = z.copy()
    noisy[:, 3:] += 1e-3  # float noise on a code is rounded away, in both
    assert np.allclose(torch_logit(net, noisy), torch_logit(net, z), atol=1e-6)
    assert np.allclose(model._logit(noisy), model._logit(z), atol=1e-6)


def test_network_with_embeddings_is_rebuilt_from_its_state():
    schema, rows = mixed_schema()
    net = embedded_net(schema, hidden=12, depth=3)
    again = TabularNet.from_state(net.state_dict())
    assert (again.n_features, again.cardinalities) == (3, (5, 12))
    assert list(again.state_dict()) == list(net.state_dict())
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in net.state_dict().items())
    z = schema.transform(schema.encode_rows(rows))
    assert np.array_equal(torch_logit(again, z), torch_logit(net, z))
    served = ScoringModel("v", schema, state_numpy(net.state_dict()))  # from served (numpy) weights too
    rebuilt = TabularNet.from_state({k: torch.from_numpy(np.array(v)) for k, v in served.weights.items()})
    assert np.array_equal(torch_logit(rebuilt, z), torch_logit(net, z))


def test_a_network_of_numbers_only_is_the_mlp_it_always_was():
    torch.manual_seed(0)
    net = TabularNet(4, hidden=8)
    torch.manual_seed(0)
    before = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    assert list(net.state_dict()) == ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias",
                                      "layers.4.weight", "layers.4.bias"]
    assert all(torch.equal(v, before.state_dict()[k.removeprefix("layers.")]) for k, v in net.state_dict().items())
    assert [n for n, _ in net.named_parameters()] == list(net.state_dict())
    schema = FeatureSchema(("a", "b", "c", "d"), (False,) * 4, (0.0,) * 4, (1.0,) * 4)
    assert list(TabularNet.for_schema(schema, hidden=8).state_dict()) == list(net.state_dict())
    assert TabularNet.from_state(net.state_dict()).cardinalities == ()


def _mismatch(weights, key, shape):
    out = dict(weights)
    out[key] = np.zeros(shape, dtype=np.float32)
    return out


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda w: _mismatch(w, "embeddings.0.weight", (6, 5)), r"embeddings.0.weight has 6 rows but categorical feature 'c' has 5 codes"),
        (lambda w: _mismatch(w, "embeddings.1.weight", (12, 4)),
         r"embeddings.1.weight \(feature 'd'\) has 4 dimensions; 12 codes take embedding_dim\(12\) = 8"),
        (lambda w: _mismatch(w, "embeddings.1.weight", (12,)), r"embeddings.1.weight \(feature 'd'\) is malformed"),
        (lambda w: {k: v for k, v in w.items() if k != "embeddings.1.weight"},
         r"weights hold 1 embedding table\(s\) but the schema has 2 categorical feature\(s\): c, d"),
        (lambda w: _mismatch(w, "embeddings.2.weight", (3, 3)), r"weights hold 3 embedding table\(s\) but the schema has 2"),
        (lambda w: {("embeddings.5.weight" if k == "embeddings.1.weight" else k): v for k, v in w.items()}, r"numbered 0..1, found \[0, 5\]"),
        (lambda w: _mismatch(w, "embeddings.0.bias", (5,)), r"'embeddings.0.bias'; an embedding has one weight"),
        (lambda w: _mismatch(w, "layers.0.weight", (16, 17)),
         r"the first layer takes 17 inputs but the schema gives 3 numeric columns \+ 13 embedding dimensions \(5 \+ 8\) = 16"),
    ],
)
def test_weights_that_do_not_fit_the_schemas_categories_are_refused(change, message):
    schema, _ = mixed_schema()
    weights = state_numpy(embedded_net(schema).state_dict())
    ScoringModel("v", schema, dict(weights))  # as they are: fine
    with pytest.raises(ValueError, match=message):
        ScoringModel("v", schema, change(weights))


def test_weights_with_embeddings_for_a_schema_of_numbers_are_refused():
    schema, _ = mixed_schema()
    numbers = FeatureSchema(("a", "b", "c"), (False,) * 3, (0.0,) * 3, (1.0,) * 3)
    with pytest.raises(ValueError, match=r"2 embedding table.* but the schema has 0 categorical"):
        ScoringModel("v", numbers, state_numpy(embedded_net(schema).state_dict()))
    with pytest.raises(ValueError, match=r"weights hold 0 embedding table\(s\) but the schema has 2 categorical feature\(s\): c, d"):
        ScoringModel("v", schema, state_numpy(TabularNet(3, hidden=16).state_dict()))
    with pytest.raises(ValueError, match=r"the first layer takes 15 inputs but the schema gives 3 numeric columns \+ 13 "):
        ScoringModel("v", schema, state_numpy(TabularNet(2, hidden=16, cardinalities=(5, 12)).state_dict()))


def test_a_network_with_embeddings_trains_in_the_continual_learner():
    from learners.avalanche_adapter import ContinualLearner
    from perennial.settings import LearnSettings

    schema, rows = mixed_schema(600, seed=3)
    z = schema.transform(schema.encode_rows(rows))
    y = (z[:, 3] == 2.0).astype(np.int64)  # fraud: the most frequent value of c (a signal only its embedding can carry)
    net = embedded_net(schema)
    learner = ContinualLearner(net, LearnSettings(replay_size=100, batch_size=64))
    before = learner.weights()
    stats = learner.learn(z, y)
    after = learner.weights()
    assert np.isfinite(stats.train_loss) and stats.events == 600
    assert not np.allclose(before["embeddings.0.weight"], after["embeddings.0.weight"])
    assert set(after) == set(before)
    served = ScoringModel("v", schema, after)
    assert np.allclose(served.score_normalised(z), learner.predict(z), atol=1e-5)
    assert np.isfinite(learner.learn(z, y).train_loss)  # a second round: replay and EWC over the embeddings too
