"""`perennial learn` as a process: when it dies, its log says why, first."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson

from learners.pretrain import pretrain
from learners.registry import Registry
from streams.simulator import FEATURES, Simulator

# The loop fails, and closing its clients fails too: the second error must not hide the first.
FAILING_RUN = """
import sys
import learners.loop

def run(learner, stop):
    try:
        raise ValueError("the original failure")
    finally:
        raise RuntimeError("closing the consumer failed")

learners.loop.run = run
from perennial.cli import main
sys.exit(main(["learn"]))
"""


def failing_learner(tmp_path, log_format: str) -> subprocess.CompletedProcess:
    tx = Simulator(seed=3, customers=300, terminals=100).generate(0, 5)
    pretrain(FEATURES, tx.features, tx.label, Registry(tmp_path / "registry"), epochs=1, retention_size=200)
    env = {
        **{k: v for k, v in os.environ.items() if k != "PERENNIAL_LOG__FORMAT"},
        "PERENNIAL_REGISTRY__PATH": str(tmp_path / "registry"),
        "PERENNIAL_LEARN__CHECKPOINT_PATH": str(tmp_path / "learner.safetensors"),
        "PERENNIAL_LEARN__METRICS_PORT": "0",
        **({"PERENNIAL_LOG__FORMAT": log_format} if log_format != "auto" else {}),
    }
    script = tmp_path / "failing_learn.py"
    script.write_text(FAILING_RUN)
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)


def test_a_learner_that_dies_logs_the_original_exception_with_its_traceback_first(tmp_path):
    done = failing_learner(tmp_path, "text")
    log = done.stderr
    assert done.returncode == 1, log
    assert "the learner stopped on an error" in log
    original, cleanup = log.find("ValueError: the original failure"), log.find("RuntimeError: closing the consumer failed")
    assert 0 <= original < cleanup, log
    assert 'raise ValueError("the original failure")' in log[:original]  # its traceback, not just its message
    assert '"event":"stopped"' in done.stdout and '"failed":true' in done.stdout  # events stay JSON: programs read them


def test_away_from_a_terminal_logs_and_events_are_json_lines(tmp_path):
    """In a pod (stdout and stderr are not terminals) every log line is a JSON object with its time,
    level, logger and message, the traceback in exc_info; every event a JSON line."""
    done = failing_learner(tmp_path, "auto")
    assert done.returncode == 1
    lines = [orjson.loads(line) for line in done.stderr.splitlines()]  # every line parses
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert all(line["logger"].startswith("perennial.") for line in lines)
    (error,) = [line for line in lines if line["level"] == "ERROR"]
    assert error["logger"] == "perennial.learn" and "the learner stopped on an error" in error["message"]
    trace = error["exc_info"]
    assert 0 <= trace.find("ValueError: the original failure") < trace.find("RuntimeError: closing the consumer failed")
    events = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert events[-1]["event"] == "stopped" and events[-1]["failed"] is True


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    r = subprocess.run([sys.executable, "-m", "perennial.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"perennial {version('perennial')}" and version("perennial")[0].isdigit()
