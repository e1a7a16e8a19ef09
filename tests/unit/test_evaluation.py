"""The prequential harness never lets a strategy see a label before its label time, and scores
every stream event exactly once, with the model of its moment; the retraining baselines retrain the
pretrained network's shape; a model that ranks nothing stops the run."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest
import torch

from learners.model import TabularNet, state_numpy
from learners.pretrain import pretrain
from learners.registry import Registry
from learners.schema import FeatureSchema
from learners.scoring import ScoringModel
from perennial import cli
from perennial.evaluation import data, harness
from perennial.evaluation.data import table_scenario
from perennial.evaluation.report import scenario_meta, write
from perennial.evaluation.scenarios import CATALOGUE
from perennial.evaluation.scores import CollapsedModel, assert_spread
from perennial.evaluation.strategies import Frozen, Strategy, build
from perennial.settings import Settings
from streams.tables import read_labeled_table


class Spy(Strategy):
    def __init__(self):
        self.now = -np.inf
        self.calls: list[tuple[float, float]] = []
        self.scored: list[np.ndarray] = []
        self.learned = 0

    def learn(self, x, y, label_time, now):
        assert now >= self.now
        self.calls.append((now, float(label_time.max())))
        self.now = now
        self.learned += len(y)

    def score(self, x):
        self.scored.append(np.stack([x[:, 0], np.full(len(x), self.learned)], axis=1))  # how many labels the model had
        return 1 / (1 + np.exp(-x[:, 1]))


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    n = 6000
    df = pd.DataFrame({"a": np.arange(n, dtype=float), "b": rng.normal(size=n), "y": (rng.random(n) < 0.05).astype(int)})
    df["lt"] = np.arange(n) + rng.exponential(300, n)  # row order is time (no time column), labels arrive later
    path = tmp_path / "t.parquet"
    df.to_parquet(path)
    return path


def test_no_label_before_its_time_and_every_event_scored_once(table, tmp_path, monkeypatch):
    spy = Spy()
    monkeypatch.setattr(harness, "build", lambda *a, **k: spy)
    spec = harness.Spec("table", {"path": table, "label_column": "y", "time_column": None, "features": ["a", "b"],
                                  "label_time_column": "lt", "periods": 4})
    result = harness.run(spec, "spy", 0, Settings(), tmp_path)
    assert spy.calls and all(label_time <= now for now, label_time in spy.calls)
    scn = spec.scenario(0)
    scored = np.concatenate(spy.scored)
    scored = scored[np.isin(scored[:, 0], scn.x[:, 0])]  # stream rows (probe rows are held out of the stream)
    assert sorted(scored[:, 0].tolist()) == sorted(scn.x[:, 0].tolist())
    # labels arriving after the end of the stream are never seen
    assert result["labels"] == int((scn.label_time <= scn.period_edges[-1]).sum()) < len(scn.y)
    # an event at time t (here: column a) is scored by the model that had every label known at the
    # start of its step, and no other
    start = scn.period_edges[0]
    step_start = start + np.floor((scored[:, 0] - start) / scn.step_s) * scn.step_s
    known = np.searchsorted(np.sort(scn.label_time), step_start, side="right")
    assert np.array_equal(scored[:, 1], known)


def test_joined_labels_come_as_the_join_sends_them(table, tmp_path, monkeypatch):
    """--label-join: a fraud at its label time when that is before maturity, else a negative at
    maturity and a correction at its label time; every other event a negative at maturity; nothing
    due after the end; nothing early."""
    fed: list[tuple[float, int, float]] = []

    class Recorder(Spy):
        def learn(self, x, y, label_time, now):
            super().learn(x, y, label_time, now)
            fed.extend(zip(x[:, 0].tolist(), y.tolist(), label_time.tolist()))

    spy = Recorder()
    monkeypatch.setattr(harness, "build", lambda *a, **k: spy)
    maturity = 500.0
    spec = harness.Spec("table", {"path": table, "label_column": "y", "time_column": None, "features": ["a", "b"],
                                  "label_time_column": "lt", "periods": 4}, maturity_s=maturity)
    result = harness.run(spec, "spy", 0, Settings(), tmp_path)
    scn = spec.scenario(0)
    assert spec.name == "t-joined-500s" and scn.maturity_s == maturity
    assert all(t <= now for now, t in spy.calls)  # nothing before it arrives
    end = scn.period_edges[-1]
    expected = []
    for t, y, lt in zip(scn.x[:, 0].tolist(), scn.y.tolist(), scn.label_time.tolist()):  # column a is the row's time
        if y == 1 and lt <= t + maturity:
            expected.append((t, 1, lt))
        else:
            expected.append((t, 0, t + maturity))
            if y == 1:
                expected.append((t, 1, lt))
    expected = [e for e in expected if e[2] <= end]
    assert sorted(fed) == sorted(expected) and result["labels"] == len(expected)
    counts = data.join_counts(scn, end)
    assert counts["corrections"] > 0 and counts["never_arrived_frauds"] > 0
    assert counts["frauds"] + counts["corrections"] == sum(y for _, y, _ in expected)
    assert counts["negatives"] == sum(1 - y for _, y, _ in expected)


def test_label_join_asks_for_a_positive_maturity_and_runs_each_scenario_both_ways(capsys):
    args = cli.parser().parse_args(["evaluate", "--scenario", "rare,bursts", "--label-join", "7,30"])
    assert [s.name for s in cli.evaluation_specs(args)] == ["rare", "rare-joined-7d", "rare-joined-30d", "bursts", "bursts-joined-7d", "bursts-joined-30d"]
    assert cli.main(["evaluate", "--scenario", "rare", "--label-join", "0"]) == 2
    assert "--label-join takes positive days of maturity" in capsys.readouterr().err


def test_table_scenario_errors_name_the_problem(table):
    with pytest.raises(ValueError, match="label times before their event times"):
        bad = pd.read_parquet(table).assign(lt=lambda d: d["a"] - 5)
        path = table.with_name("bad.parquet")
        bad.to_parquet(path)
        table_scenario(path, label_column="y", time_column=None, label_time_column="lt")
    with pytest.raises(ValueError, match="not in"):
        table_scenario(table, label_column="y", time_column=None, pattern_column="kind")


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x[:, 0] + rng.normal(size=n) > 2.0).astype(np.int64)


@pytest.fixture
def pretrained_registry(tmp_path):
    x, y = separable(3000, 0)
    registry = Registry(tmp_path / "registry")
    pretrain(("a", "b", "c"), x, y, registry, epochs=2, hidden=16, retention_size=200, replay_seed_size=200)
    return registry


@pytest.mark.parametrize("first", range(6))
def test_a_retraining_baseline_keeps_the_pretrained_shape_in_whatever_order_its_weights_come(pretrained_registry, first):
    """The registry's safetensors load returns the layers in a new random order at every load; the
    retraining baselines read their width from the first one, so a third of all runs retrained a
    network two units wide, which collapsed (every score the same, AP = the fraud rate) on rare fraud."""
    loaded = pretrained_registry.load_current()
    keys = sorted(loaded.weights)
    model = ScoringModel(loaded.version, loaded.schema, {k: loaded.weights[k] for k in keys[first:] + keys[:first]})
    x, y = separable(2000, 1)
    for name in ("sliding", "cumulative"):
        baseline = build(name, model=model, registry=pretrained_registry.root, settings=Settings(), history=(x, y, np.zeros(len(y))),
                         retrain_every_s=10.0, window_s=100.0, seed=0)
        baseline.learn(x[:10], y[:10], np.full(10, 5.0), now=5.0)
        baseline.learn(x[10:20], y[10:20], np.full(10, 15.0), now=15.0)
        assert baseline.summary()["retrains"] == 1
        assert {k: v.shape for k, v in baseline.served.weights.items()} == {k: v.shape for k, v in loaded.weights.items()}


def flat_model(how: str) -> ScoringModel:
    """A model that scores every event the same: its output layer ignores its input ("dead"), or
    its logits are past the scorer's clip for every event ("clipped")."""
    torch.manual_seed(0)
    weights = state_numpy(TabularNet(2, hidden=8).state_dict())
    if how == "dead":
        weights["layers.4.weight"] = np.zeros_like(weights["layers.4.weight"])
    else:
        weights["layers.4.bias"] = np.array([1000.0, -1000.0], np.float32)
    return ScoringModel(how, FeatureSchema.fit(("a", "b"), separable(100, 3)[0][:, :2]), weights)


@pytest.mark.parametrize("how", ["dead", "clipped"])
def test_the_collapse_detector_raises_on_a_model_that_scores_every_event_the_same(how):
    x = separable(500, 4)[0][:, :2]
    working = ScoringModel("ok", flat_model("dead").schema, state_numpy(TabularNet(2, hidden=8).state_dict()))
    assert_spread(working.score(x), "a working model")
    with pytest.raises(CollapsedModel, match=r"^the model under test: a collapsed model, its 500 scores spread by"):
        assert_spread(flat_model(how).score(x), "the model under test")


def test_a_collapsed_model_stops_the_run_naming_the_strategy_and_the_probe(table, tmp_path, monkeypatch):
    flat = Frozen(flat_model("dead"))
    flat.name = "flat"
    monkeypatch.setattr(harness, "build", lambda *a, **k: flat)
    spec = harness.Spec("table", {"path": table, "label_column": "y", "time_column": None, "features": ["a", "b"], "periods": 4})
    with pytest.raises(CollapsedModel, match=r"^strategy 'flat' at row 0\.00 of t\.parquet.*, on the probe of period 0: a collapsed model"):
        harness.run(spec, "flat", 0, Settings(), tmp_path)


def test_a_missing_time_column_is_an_error_naming_the_flag_and_row_order_is_asked_for(table, capsys):
    with pytest.raises(ValueError, match=r"time column 'time' is not in .*--time-column, .*--time-column ''"):
        read_labeled_table(table, "y")
    assert read_labeled_table(table, "y", None).time is None  # row order, asked for explicitly
    assert cli.main(["evaluate", "--input", str(table), "--label-column", "y", "--workdir", "unused"]) == 2
    assert "--time-column" in capsys.readouterr().err


@pytest.fixture
def leaky(tmp_path):
    """Every column numeric: the pattern, the account, the label time and an id could pass for features."""
    rng = np.random.default_rng(1)
    n = 3000
    y = (rng.random(n) < 0.05).astype(int)
    df = pd.DataFrame({"txn_id": np.arange(n), "time": np.arange(n) * 60.0, "a": rng.normal(size=n) + 2 * y, "b": rng.normal(size=n),
                       "kind": y * rng.integers(1, 3, n), "acct": rng.integers(0, 50, n), "lt": np.arange(n) * 60.0 + 600, "label": y})
    path = tmp_path / "leaky.csv"
    df.to_csv(path, index=False)
    return path


def test_columns_in_use_are_never_features(leaky):
    table = read_labeled_table(leaky, "label", "time", extra_columns=["kind", "acct", "lt"])
    assert table.features == ("a", "b")
    with pytest.raises(ValueError, match=r"kind of --features are the label, time, pattern, entity or label-time column"):
        read_labeled_table(leaky, "label", "time", features=["a", "kind"], extra_columns=["kind"])
    with pytest.raises(ValueError, match="never a feature"):
        read_labeled_table(leaky, "label", "time", features=["a", "time"])
    scn = table_scenario(leaky, pattern_column="kind", entity_column="acct", label_time_column="lt", periods=4)
    assert scn.names == ("a", "b")


def test_pretrain_prints_the_features_the_columns_and_the_split_with_class_counts(leaky, tmp_path, capsys):
    assert cli.main(["pretrain", "--history", str(leaky), "--registry", str(tmp_path / "registry")]) == 0
    lines = {line["event"]: line for line in map(orjson.loads, capsys.readouterr().out.splitlines())}
    assert lines["pretrain_data"]["features"] == ["a", "b", "kind", "acct", "lt"]  # pretrain knows no pattern column: name --features
    assert lines["pretrain_data"]["time_column"] == "time" and lines["pretrain_data"]["label_column"] == "label"
    y = pd.read_csv(leaky)["label"].to_numpy()
    split = lines["pretrained"]["split"]
    assert split == {"train": {"events": 2400, "frauds": int(y[:2400].sum())}, "validation": {"events": 600, "frauds": int(y[2400:].sum())}}


def test_a_built_in_scenario_is_named_from_the_catalogue():
    spec = harness.Spec("builtin", {"name": "default"})
    assert spec.name == "default" and spec.description == CATALOGUE["default"]
    with pytest.raises(ValueError, match="unknown scenario 'nope'; known: default"):
        harness.Spec("builtin", {"name": "nope"}).scenario(0)


def test_the_cli_refuses_an_unknown_scenario_naming_the_built_in_ones(capsys):
    assert cli.main(["evaluate", "--scenario", "default,nope"]) == 2
    assert "unknown scenario nope; built in: default" in capsys.readouterr().err


def test_an_identical_pair_reads_no_evidence_in_the_report_and_absent_columns_leave_no_sentence(table, tmp_path):
    """The real harness on a file without time, entity or pattern columns: frozen's run, and a copy of
    it under the product's name (the same scores on the same events)."""
    spec = harness.Spec("table", {"path": table, "label_column": "y", "time_column": None, "features": ["a", "b"], "periods": 4})
    frozen = harness.run(spec, "frozen", 0, Settings(), tmp_path)
    assert len(frozen["versions"]) == 1 and frozen["versions"][0]["alerts"] == round(frozen["alert_rate"] * frozen["alert_sample_events"])
    assert frozen["alert_rate"] >= 0.005
    same = {**frozen, "strategy": "product", "scores": frozen["scores"].copy(), "ap_replicates": frozen["ap_replicates"]}
    built = {0: spec.scenario(0)}
    intervals = harness.served(spec, built, [same, frozen], confidence=0.95)
    d = intervals["difference"]["frozen"]
    assert d["low"] <= 0 <= d["high"] and d["verdict"] == "no evidence either way"
    meta = {**scenario_meta([built[0]], spec.card_k), "data": harness.data_used(spec, built[0], Registry(tmp_path / "seed-0" / "registry")),
            "alert_budget": 0.005, "resamples": 200, "confidence": 0.95}
    out = tmp_path / "report.md"
    write([{"name": spec.name, "description": spec.description, "meta": meta, "intervals": intervals, "results": [same, frozen]}], out, "test")
    report = out.read_text()
    assert f"| {spec.name} | {d['frauds']:,} |" in report
    assert "| frozen | +0.000 | [" in report and "no evidence either way" in report
    assert "| served AP: product at least frozen's (within the paired interval) | product − frozen +0.000 [+0.000, +0.000]: " \
        "no evidence either way | yes |" in report
    assert "top-None" not in report and "card precision" not in report and "Per pattern" not in report
    assert "time `row order (asked for with --time-column '')`" in report and "features (2): `a`, `b`" in report
    assert "row 0-" in report  # periods counted in rows, not hours
