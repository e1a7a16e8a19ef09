"""`perennial evaluate` end to end on a CSV nobody wrote for it: other column names, ISO times, a
label delay, a pattern column and an account column; real processes, real files, real plots, the data
used printed, intervals and fraud counts in the report. The same evaluation twice, in this process and
in spawn workers, gives the same figures, the served ones and their intervals included."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import orjson
import pandas as pd
import pytest

from perennial.evaluation.harness import Spec, run_all, served
from perennial.evaluation.strategies import STRATEGIES
from perennial.settings import Settings
from streams.simulator import FEATURES, PATTERNS, Simulator


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    sim = Simulator(seed=3, customers=600, terminals=300, schedule="compromised_terminal:0-;card_testing:20-")
    tx = sim.generate(0, 36)
    df = pd.DataFrame(tx.features, columns=[f"f_{n}" for n in FEATURES])
    df.insert(0, "ts", pd.to_datetime(tx.time, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ"))
    df.insert(1, "account", [f"acct-{c}" for c in tx.card])
    df.insert(2, "fraud_type", np.asarray(("none",) + PATTERNS)[tx.pattern])
    df["is_fraud"] = tx.label
    path = tmp_path_factory.mktemp("evaluate") / "labeled events.csv"
    df.sample(frac=1, random_state=0).to_csv(path, index=False)  # the file need not be in time order
    return path


def test_evaluate_runs_strategies_prequentially_on_any_csv_and_writes_the_report(csv, tmp_path):
    out = tmp_path / "docs" / "evaluation.md"
    notes = tmp_path / "notes.md"
    notes.write_text("## What was tried\n\nA note the report must end with.\n")
    cmd = [
        sys.executable, "-m", "perennial.cli", "evaluate", "--input", str(csv), "--label-column", "is_fraud",
        "--time-column", "ts", "--label-delay", "86400", "--pattern-column", "fraud_type", "--entity-column", "account",
        "--history-fraction", "0.5", "--periods", "4", "--strategies", "frozen,naive,product,sliding,river",
        "--seeds", "0", "--workers", "2", "--workdir", str(tmp_path / "work"), "--out", str(out), "--card-k", "5",
        "--notes", str(notes),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert lines[-1]["event"] == "evaluated"
    used = next(line for line in lines if line["event"] == "evaluate_data")
    assert used["features"] == [f"f_{n}" for n in FEATURES]  # not the time, the account, the pattern or the label
    assert (used["time_column"], used["label_column"], used["pattern_column"], used["entity_column"]) == ("ts", "is_fraud", "fraud_type", "account")
    assert used["pretraining_train"]["frauds"] + used["pretraining_validation"]["frauds"] == used["history"]["frauds"] > 0

    report = out.read_text()
    assert report.rstrip().endswith("## What was tried\n\nA note the report must end with.")
    for name in ("frozen", "naive", "product", "sliding", "river"):
        assert f"| {name} |" in report
    assert "adaptation card_testing" in report and "R matrix, product" in report
    assert "## Headline: served prequential AP per scenario" in report and "| labeled-events |" in report
    for png in ("ap_over_time.png", "patterns_over_time.png", "r_matrix.png"):
        image = out.parent / "evaluation" / "labeled-events" / png
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 10_000
        assert f"(evaluation/labeled-events/{png})" in report

    raw = orjson.loads((tmp_path / "work" / "results.json").read_bytes())
    (section,) = raw["scenarios"]
    meta, results = section["meta"], {r["strategy"]: r for r in section["results"]}
    # every figure states its sample: a pattern probe under 30 frauds is shown by its count, not a
    # number, and period probes under 30 frauds are left out of ACC and BWT, saying so
    assert all(f"— ({n} frauds)" in report for n in meta["pattern_probe_frauds"].values() if n < 30)
    left_out = sum(n < 30 for n in meta["period_probe_frauds"])
    assert left_out and f"({left_out} of {len(meta['period_probe_frauds'])} probes left out: under 30 frauds)" in report
    for name, d in section["intervals"]["difference"].items():
        assert f"| {name} | {d['difference']:+.3f} | [{d['low']:+.3f}, {d['high']:+.3f}] | {d['verdict']} | {d['frauds']:,} |" in report
    assert results["frozen"]["versions"][1:] == [] and len(results["naive"]["versions"]) == results["naive"]["summary"]["rounds"] + 1
    assert meta["patterns"] == ["card_testing", "compromised_terminal"] and meta["new_patterns"] == ["card_testing"]
    frozen, naive, product = results["frozen"], results["naive"], results["product"]
    # the new pattern is learned by the learners and not by the frozen model
    assert naive["R_pattern"][-1][0] > frozen["R_pattern"][-1][0] + 0.3
    assert product["R_pattern"][-1][0] > frozen["R_pattern"][-1][0] + 0.3
    assert product["summary"]["rounds"] > 0 and product["summary"]["published"] > 0
    # each served version's alerts on the fixed sample, and those on legitimate events, beside them in the target
    assert all(0 <= v["false_alerts"] <= v["alerts"] for r in results.values() for v in r["versions"])
    assert "; false alerts: largest change" in report
    # every strategy saw the same labels and scored the same events
    assert len({r["labels"] for r in results.values()}) == 1 and len({r["events"] for r in results.values()}) == 1
    assert all(p["card_precision"] is not None for p in naive["periods"])


TIMINGS = {"learn_s", "score_s"}  # wall-clock seconds: the only figures a second run may change


def differences(a, b, path="") -> list[str]:
    """Where two results differ: numbers by more than 0.005, anything else at all."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        same = np.shape(a) == np.shape(b) and np.allclose(a, b, atol=0.005, rtol=0, equal_nan=True)
        return [] if same else [f"{path}: arrays differ by up to {np.nanmax(np.abs(np.subtract(a, b))) if np.shape(a) == np.shape(b) else 'shape'}"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a if k not in TIMINGS for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [d for i, (u, v) in enumerate(zip(a, b)) for d in differences(u, v, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and (abs(a - b) <= 0.005 or (np.isnan(a) and np.isnan(b))):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


@pytest.mark.timeout(900)
def test_the_same_evaluation_twice_gives_every_figure_again(tmp_path):
    """Two separate evaluations of the same scenario, one in this process and one in two spawn
    workers (each pretraining its own registry), agree on every figure to 0.005."""
    spec = Spec("simulator", {"customers": 300, "terminals": 150, "history_days": 20, "stream_days": 10, "period_days": 5},
                retrain_every_periods=0.5)  # two retrains in two periods
    first = run_all(spec, list(STRATEGIES), [0], Settings(), tmp_path / "first", workers=1, progress=lambda _: None)
    second = run_all(spec, list(STRATEGIES), [0], Settings(), tmp_path / "second", workers=2, progress=lambda _: None)
    assert [r["strategy"] for r in first] == [r["strategy"] for r in second]  # results.json in one order
    intervals = [served(spec, {0: spec.scenario(0)}, results, confidence=0.95) for results in (first, second)]
    first, second = ({r["strategy"]: r for r in results} for results in (first, second))
    assert first["sliding"]["summary"]["retrains"] >= 2 and first["cumulative"]["summary"]["retrains"] >= 2
    assert differences(first, second) == [] and differences(*intervals) == []


def test_evaluate_replays_joined_labels_and_reports_what_the_delay_costs(csv, tmp_path):
    """--label-join: the same file replayed with frauds labeled alone and the rest maturing into
    negatives, compared paired with every label at its label time, in the report and results.json."""
    out = tmp_path / "report.md"
    cmd = [
        sys.executable, "-m", "perennial.cli", "evaluate", "--input", str(csv), "--label-column", "is_fraud", "--time-column", "ts",
        "--label-delay", "3600", "--history-fraction", "0.5", "--periods", "3", "--strategies", "frozen,naive", "--label-join", "4",
        "--seeds", "0", "--workers", "2", "--workdir", str(tmp_path / "work"), "--out", str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = orjson.loads((tmp_path / "work" / "results.json").read_bytes())
    explicit, joined = raw["scenarios"]
    assert (explicit["name"], joined["name"]) == ("labeled-events", "labeled-events-joined-4d")
    assert "label_delay" not in explicit and joined["label_delay"]["reference"] == "labeled-events"
    frozen, naive = joined["label_delay"]["difference"]["frozen"], joined["label_delay"]["difference"]["naive"]
    assert frozen["difference"] == 0.0 and frozen["verdict"] == "no evidence either way"  # a frozen model learns nothing either way
    assert naive["difference"] != 0.0
    results = {s["name"]: {r["strategy"]: r for r in s["results"]} for s in raw["scenarios"]}
    feed = joined["feed"][0]
    # the explicit replay delivers every label due by the end; the joined one fewer negatives (4 days of maturity) and no early ones
    assert results["labeled-events-joined-4d"]["naive"]["labels"] == feed["frauds"] + feed["negatives"] + feed["corrections"]
    assert feed["negatives"] < explicit["feed"][0]["negatives"] and feed["frauds"] + feed["corrections"] == explicit["feed"][0]["frauds"]
    report = out.read_text()
    assert "## How the label delay changes quality" in report
    row = next(line for line in report.splitlines() if line.startswith("| labeled-events-joined-4d | ") and "/" in line)
    assert f"{feed['frauds']:,} / {feed['negatives']:,} / {feed['corrections']:,} / {feed['never_arrived_frauds']:,}" in row
    assert f"{naive['difference']:+.3f} [{naive['low']:+.3f}, {naive['high']:+.3f}]" in row
