"""`perennial learn` as a process: when it dies, its log says why, first."""

from __future__ import annotations

import os
import subprocess
import sys

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


def test_a_learner_that_dies_logs_the_original_exception_with_its_traceback_first(tmp_path):
    tx = Simulator(seed=3, customers=300, terminals=100).generate(0, 5)
    pretrain(FEATURES, tx.features, tx.label, Registry(tmp_path / "registry"), epochs=1, retention_size=200)
    env = {
        **os.environ,
        "PERENNIAL_REGISTRY__PATH": str(tmp_path / "registry"),
        "PERENNIAL_LEARN__CHECKPOINT_PATH": str(tmp_path / "learner.safetensors"),
        "PERENNIAL_LEARN__METRICS_PORT": "0",
    }
    script = tmp_path / "failing_learn.py"
    script.write_text(FAILING_RUN)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    log = done.stderr
    assert done.returncode == 1, log
    assert "the learner stopped on an error" in log
    original, cleanup = log.find("ValueError: the original failure"), log.find("RuntimeError: closing the consumer failed")
    assert 0 <= original < cleanup, log
    assert 'raise ValueError("the original failure")' in log[:original]  # its traceback, not just its message
    assert '"event":"stopped"' in done.stdout and '"failed":true' in done.stdout


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    r = subprocess.run([sys.executable, "-m", "perennial.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"perennial {version('perennial')}" and version("perennial")[0].isdigit()
