"""Every part runs on its own as a `perennial` subcommand, and the demo runs the whole loop."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

pytestmark = pytest.mark.integration

COMMANDS = ("broker", "simulate", "pretrain", "serve", "learn", "demo")


def perennial(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perennial.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command):
    r = perennial(command, "--help")
    assert r.returncode == 0 and f"usage: perennial {command}" in r.stdout


def test_pretrain_from_any_csv_then_serve_refuses_nothing(tmp_path):
    history = tmp_path / "history.csv"
    r = perennial("simulate", "--history", str(history), "--start-day", "0", "--days", "12")
    assert r.returncode == 0, r.stderr
    r = perennial("pretrain", "--history", str(history), "--registry", str(tmp_path / "reg"))
    assert r.returncode == 0, r.stderr
    out = orjson.loads(r.stdout.splitlines()[-1])
    assert out["version"] == "v000001" and out["metrics"]["validation_ap"] > 0.3
    manifest = orjson.loads((tmp_path / "reg" / "versions" / "v000001" / "manifest.json").read_bytes())
    assert "amount" in manifest["feature_schema"]["names"] and "label" not in manifest["feature_schema"]["names"]


def test_user_mistakes_get_a_message_not_a_traceback(tmp_path):
    r = perennial("pretrain", "--history", str(tmp_path / "missing.csv"), "--registry", str(tmp_path / "reg"))
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = perennial("learn", "--registry", str(tmp_path / "empty"))
    assert r.returncode == 2 and "run `perennial pretrain` first" in r.stderr


def test_demo_runs_the_loop_and_writes_its_summary(tmp_path):
    summary = tmp_path / "summary.json"
    env = {**os.environ, "PERENNIAL_PRETRAIN__HISTORY_DAYS": "30"}
    r = perennial("demo", "--duration", "25", "--workdir", str(tmp_path / "demo"), "--summary-json", str(summary), env=env, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = orjson.loads(summary.read_bytes())
    for key in ("versions_promoted", "gate_decisions", "served_version_start", "served_version_end", "events_consumed",
                "events_dead_lettered", "new_pattern_ap_start", "new_pattern_ap_end", "old_patterns_ap_start", "old_patterns_ap_end"):
        assert key in s
    assert s["served_version_start"] == "v000001" and s["events_consumed"] > 10000
    assert s["versions_promoted"] >= 1 and s["served_version_end"] != "v000001"
    assert all({"version", "passed", "reasons", "metrics"} <= set(g) for g in s["gate_decisions"])
    assert s["new_pattern_ap_end"] > s["new_pattern_ap_start"]
    assert s["prediction_requests_failed"] == 0 and s["prediction_requests_ok"] > 100
    assert "stopped every process the demo started" in r.stdout
