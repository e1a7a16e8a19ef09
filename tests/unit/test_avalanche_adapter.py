import numpy as np
import pytest
import torch

from learners.avalanche_adapter import ContinualLearner
from learners.checkpoint import load_checkpoint, save_checkpoint
from learners.model import TabularNet
from perennial.settings import LearnSettings

rng = np.random.default_rng(0)


def batch(n=512, d=6, fraud=0.1):
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.random(n) < fraud).astype(np.int64)
    x[y == 1, 0] += 3  # learnable signal
    return x, y


def learner(policy="class_balanced", seed=0):
    torch.manual_seed(seed)
    return ContinualLearner(TabularNet(6, hidden=16), LearnSettings(replay_size=200, replay_policy=policy, batch_size=64))


def test_a_round_changes_the_weights_and_fills_replay():
    L = learner()
    before = L.weights()
    stats = L.learn(*batch())
    after = L.weights()
    assert any(not np.allclose(before[k], after[k]) for k in before)
    assert stats.events == 512 and 0 < stats.replay_size <= 200 and stats.replay_positives > 0
    assert np.isfinite(stats.train_loss)


def test_ewc_penalty_applies_from_the_second_round():
    L = learner()
    assert L.learn(*batch()).ewc_penalty == 0.0
    assert L.learn(*batch()).ewc_penalty > 0.0


def test_forget_empties_replay_and_zeroes_ewc_but_keeps_the_weights():
    L = learner()
    L.learn(*batch())
    assert L.learn(*batch()).ewc_penalty > 0.0
    weights = L.weights()
    L.forget()
    assert len(L._replay_arrays()[1]) == 0 and all(np.array_equal(weights[k], v) for k, v in L.weights().items())
    stats = L.learn(*batch())  # nothing pulls back: no penalty; the memory fills again with new events only
    assert stats.ewc_penalty == 0.0 and 0 < stats.replay_size <= 200


def test_class_balanced_replay_keeps_fraud_represented():
    L = learner()
    for _ in range(4):
        stats = L.learn(*batch(fraud=0.02))
    assert stats.replay_positives / stats.replay_size > 0.05  # far above the 2% in the stream


@pytest.mark.parametrize("policy", ["class_balanced", "reservoir"])
def test_state_survives_a_checkpoint_and_training_resumes_identically(tmp_path, policy):
    a = learner(policy)
    for _ in range(3):
        a.learn(*batch())
    tensors, meta = a.state()
    save_checkpoint(tmp_path / "ckpt.safetensors", tensors, meta)
    loaded_tensors, loaded_meta = load_checkpoint(tmp_path / "ckpt.safetensors")
    b = learner(policy, seed=99)  # different initial weights: everything must come from the checkpoint
    b.restore(loaded_tensors, loaded_meta)

    t2, m2 = b.state()
    assert m2 == meta and set(t2) == set(tensors)
    assert all(torch.equal(tensors[k], t2[k]) for k in tensors)
    assert any(k.startswith("replay.") for k in tensors) and any(k.startswith("ewc.importance.") for k in tensors)

    x, y = batch()
    torch.manual_seed(5)
    sa = a.learn(x, y)
    torch.manual_seed(5)
    sb = b.learn(x, y)
    assert sa == sb
    assert np.allclose(a.predict(x), b.predict(x), atol=1e-6)


def test_restore_refuses_another_replay_policy():
    a = learner("class_balanced")
    a.learn(*batch())
    with pytest.raises(ValueError, match="replay policy"):
        learner("reservoir").restore(*a.state())


def test_no_checkpoint_yet(tmp_path):
    assert load_checkpoint(tmp_path / "none.safetensors") is None


def test_ablations_leave_their_plugin_out_and_still_checkpoint(tmp_path):
    torch.manual_seed(0)
    naive = ContinualLearner(TabularNet(6, hidden=16), LearnSettings(replay_size=0, ewc_lambda=0.0, batch_size=64))
    assert naive.replay is None and naive.ewc is None
    for _ in range(2):
        stats = naive.learn(*batch())
    assert stats.replay_size == 0 and stats.ewc_penalty == 0.0
    tensors, meta = naive.state()
    again = ContinualLearner(TabularNet(6, hidden=16), LearnSettings(replay_size=0, ewc_lambda=0.0, batch_size=64))
    again.restore(tensors, meta)
    assert all(np.array_equal(naive.weights()[k], v) for k, v in again.weights().items())


def test_the_learning_rate_can_be_changed_between_rounds_and_stays():
    L = learner()
    L.learn(*batch())
    L.learning_rate = 5e-3
    L.learn(*batch())
    assert L.learning_rate == pytest.approx(5e-3)
    assert all(g["lr"] == pytest.approx(5e-3) for g in L.strategy.optimizer.param_groups)


def test_replay_memory_seeded_with_history_is_rehearsed_and_then_shared_with_new_events():
    L = learner()
    hx, hy = batch(400, fraud=0.5)
    L.seed_replay(hx, hy)
    x, y = L._replay_arrays()
    assert len(y) == 200 and y.sum() == 100  # each class's share of the 200 slots
    assert {tuple(r) for r in x.tolist()} <= {tuple(r) for r in hx.tolist()}
    for _ in range(3):
        L.learn(*batch(512, fraud=0.1))
    x, y = L._replay_arrays()
    old = {tuple(r) for r in hx.tolist()}
    kept = sum(tuple(r) in old for r in x.tolist())
    assert 0 < kept < len(y)  # history still rehearsed, new events admitted by reservoir sampling


@pytest.mark.parametrize("policy", ["class_balanced", "reservoir"])
def test_batched_data_path_trains_exactly_as_avalanches_own_loaders(monkeypatch, policy):
    """The tensor fetch changes how batches are read, not which: same sampler draws, same weights,
    same replay memory as Avalanche's ReplayDataLoader and EWCPlugin with their per-sample loaders."""
    from avalanche.training.plugins import EWCPlugin, ReplayPlugin

    import learners.avalanche_adapter as adapter

    def run():
        L = learner(policy)
        L.seed_replay(*batch(300))
        for _ in range(3):
            stats = L.learn(*batch(300))
        return L.weights(), L._replay_arrays(), stats

    state = rng.bit_generator.state
    ours = run()
    rng.bit_generator.state = state
    monkeypatch.setattr(adapter._Replay, "before_training_exp", ReplayPlugin.before_training_exp)
    monkeypatch.setattr(adapter._EWC, "compute_importances", EWCPlugin.compute_importances)
    stock = run()
    assert all(np.array_equal(ours[0][k], stock[0][k]) for k in ours[0])
    assert np.array_equal(ours[1][0], stock[1][0]) and np.array_equal(ours[1][1], stock[1][1])
    assert ours[2] == stock[2]


def test_gather_reads_subsets_of_concatenations_in_order():
    from learners.avalanche_adapter import _dataset_tensors, _gather, tensor_dataset

    a = tensor_dataset(torch.arange(12.0).reshape(6, 2), torch.arange(6))
    b = tensor_dataset(torch.arange(100.0, 108.0).reshape(4, 2), torch.arange(10, 14))
    chained = a.concat(b).subset([9, 0, 7, 3]).concat(a.subset([5])).subset([4, 0, 2])
    x, y = _gather(chained)
    slow_x, slow_y = _dataset_tensors(chained)
    assert torch.equal(x, slow_x) and torch.equal(y, slow_y)
    assert y.tolist() == [5, 13, 11]


def test_the_adapter_takes_the_learn_settings_and_their_defaults():
    """One definition per default: the adapter reads the learn settings object itself."""
    default = ContinualLearner(TabularNet(6, hidden=16))
    assert default.config == LearnSettings()
    assert default.optimizer.param_groups[0]["lr"] == LearnSettings().learning_rate
    assert default.strategy.train_epochs == LearnSettings().epochs
    assert default.replay is not None and default.replay.mem_size == LearnSettings().replay_size
    tuned = ContinualLearner(TabularNet(6, hidden=16), LearnSettings(learning_rate=0.01, epochs=1, replay_size=0))
    assert tuned.optimizer.param_groups[0]["lr"] == 0.01 and tuned.strategy.train_epochs == 1 and tuned.replay is None
