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


def _setting_paths(model: type, prefix: str = "") -> list[str]:
    from pydantic import BaseModel

    paths = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            paths += _setting_paths(kind, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


def test_every_setting_is_a_flag_of_every_subcommand_with_its_documentation():
    import argparse

    from perennial.cli import parser
    from perennial.settings import Settings

    paths = _setting_paths(Settings)
    assert len(paths) > 80 and "learn.gates.confidence" in paths
    subparsers = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command, sp in subparsers.choices.items():
        flags = {s: a for a in sp._actions for s in a.option_strings}
        missing = [p for p in paths if f"--{p}" not in flags]
        assert not missing, f"perennial {command} lacks {missing}"
        assert "Confidence of every gate comparison" in (flags["--learn.gates.confidence"].help or "")


def test_flags_override_the_environment_and_short_aliases_override_flags(monkeypatch, tmp_path):
    from perennial.cli import build_settings, parser

    monkeypatch.setenv("PERENNIAL_SERVE__PORT", "5000")
    monkeypatch.setenv("PERENNIAL_SERVE__MAX_BATCH", "16")
    s = build_settings(parser().parse_args(["serve", "--serve.port", "7000", "--learn.gates.confidence", "0.95"]))
    assert (s.serve.port, s.serve.max_batch, s.learn.gates.confidence) == (7000, 16, 0.95)  # max_batch: from the environment
    s = build_settings(parser().parse_args(["serve", "--serve.port", "7000", "--port", "7001", "--registry", str(tmp_path)]))
    assert (s.serve.port, s.registry.path) == (7001, tmp_path)
    s = build_settings(parser().parse_args(["learn", "--serve.prediction_log", "true", "--kafka.security", '{"security_protocol": "SSL"}']))
    assert s.serve.prediction_log is True and s.kafka.security == {"security_protocol": "SSL"}


def test_a_bad_setting_on_the_command_line_is_refused_with_its_name(capsys):
    from perennial.cli import main

    assert main(["serve", "--serve.port", "eighty"]) == 2
    err = capsys.readouterr().err
    assert "serve.port" in err and "valid integer" in err
