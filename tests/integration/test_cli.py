"""Every part runs on its own as a `perennial` subcommand, and the demo runs the whole loop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from learners.pretrain import pretrain
from learners.registry import Registry

from .own_data import own_history

pytestmark = pytest.mark.integration

COMMANDS = ("broker", "simulate", "pretrain", "serve", "learn", "demo", "evaluate")


def perennial(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perennial.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


def logged_errors(stderr: str) -> str:
    """The messages of the ERROR lines in a command's stderr, which is a JSON log away from a terminal."""
    lines = [orjson.loads(line) for line in stderr.splitlines() if line.strip()]
    return "\n".join(line["message"] for line in lines if line["level"] == "ERROR")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command):
    r = perennial(command, "--help")
    assert r.returncode == 0 and f"usage: perennial {command}" in r.stdout


def test_pretrain_from_any_csv_then_serve_refuses_nothing(tmp_path):
    history = tmp_path / "history.csv"
    r = perennial("simulate", "--history", str(history), "--start-day", "0", "--days", "12")
    assert r.returncode == 0, r.stderr
    r = perennial("pretrain", "--history", str(history), "--registry", str(tmp_path / "reg"), timeout=240)
    assert r.returncode == 0, r.stderr
    events = {e["event"]: e for e in map(orjson.loads, r.stdout.splitlines())}
    data, out = events["pretrain_data"], events["pretrained"]
    assert list(events)[-3:] == ["pretrain_data", "pretrain_schema", "pretrained"]
    assert data["time_column"] == "time" and data["label_column"] == "label" and data["excluded"] == {}
    assert "amount" in data["features"] and not {"id", "time", "card", "terminal", "pattern", "label"} & set(data["features"])
    assert all(f["type"] == "number" and not f["missing"] for f in events["pretrain_schema"]["features"])  # the simulator's: numbers
    assert out["version"] == "v000001" and out["metrics"]["validation_ap"] > 0.3
    assert out["split"]["train"]["events"] == out["metrics"]["train_events"] and out["split"]["validation"]["frauds"] > 0
    manifest = orjson.loads((tmp_path / "reg" / "versions" / "v000001" / "manifest.json").read_bytes())
    assert "amount" in manifest["feature_schema"]["names"] and "label" not in manifest["feature_schema"]["names"]


FAST = {**os.environ, "PERENNIAL_PRETRAIN__EPOCHS": "2", "PERENNIAL_PRETRAIN__RETENTION_SIZE": "500"}


def test_pretrain_infers_prints_and_writes_the_schema_of_your_own_data(tmp_path):
    history = own_history(tmp_path / "history.csv")
    reg = tmp_path / "reg"
    r = perennial("pretrain", "--history", str(history), "--registry", str(reg), env=FAST, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    events = {e["event"]: e for e in map(orjson.loads, r.stdout.splitlines())}
    data, written = events["pretrain_data"], events["pretrain_schema"]
    assert data["features"] == ["amount", "country", "device_age", "channel"]
    assert data["excluded"] == {"session": "free-form text: 4000 distinct values in 4000 rows (an id, not a category)"}
    declaration = [{"name": "amount", "type": "number", "missing": False}, {"name": "country", "type": "category", "missing": False},
                   {"name": "device_age", "type": "number", "missing": True}, {"name": "channel", "type": "number", "missing": False}]
    assert written["path"] == str(reg / "schema.json") and written["features"] == declaration
    assert orjson.loads((reg / "schema.json").read_bytes()) == declaration
    logged = "\n".join(orjson.loads(line)["message"] for line in r.stderr.splitlines() if line.strip())
    assert "country     category  required  4 value(s): US, FR, GB, NG (+ other, missing)" in logged
    fs = orjson.loads((reg / "versions" / "v000001" / "manifest.json").read_bytes())["feature_schema"]
    assert fs["categories"] == [None, ["US", "FR", "GB", "NG"], None, None] and fs["optional"] == [False, False, True, False]

    # edited and passed back: the channel is a category, the amount may be missing; written elsewhere this time
    edited = tmp_path / "edited.json"
    declaration[3]["type"], declaration[0]["missing"] = "category", True
    edited.write_bytes(orjson.dumps(declaration))
    out = tmp_path / "again.json"
    r = perennial("pretrain", "--history", str(history), "--registry", str(tmp_path / "reg2"), "--schema", str(edited),
                  "--schema-out", str(out), env=FAST, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    fs = orjson.loads((tmp_path / "reg2" / "versions" / "v000001" / "manifest.json").read_bytes())["feature_schema"]
    assert sorted(fs["categories"][3]) == ["1", "2", "3"] and fs["optional"] == [True, False, True, False]
    assert orjson.loads(out.read_bytes()) == declaration and not (tmp_path / "reg2" / "schema.json").exists()


BAD_SCHEMAS = {
    "not JSON": (b"[{name: amount}]", "edited.json: the feature declaration is not valid JSON"),
    "an unknown type": (b'[{"name": "amount", "type": "money"}]', "feature 'amount': unknown type 'money'"),
    "a feature the history lacks": (b'[{"name": "session", "type": "category"}]',
                                    "declares 'session', which is not a feature of the history (free-form text: 4000 distinct"),
    "required where the history has gaps": (b'[{"name": "device_age", "missing": false}]',
                                            "feature 'device_age' is declared missing: false but"),
    "a number that holds text": (b'[{"name": "country", "type": "number"}]', "feature 'country' is declared a number but row 0 holds"),
}


@pytest.mark.parametrize("case", BAD_SCHEMAS)
def test_a_bad_schema_file_is_refused_before_anything_is_written(tmp_path, case):
    text, message = BAD_SCHEMAS[case]
    history = own_history(tmp_path / "history.csv")
    (tmp_path / "edited.json").write_bytes(text)
    r = perennial("pretrain", "--history", str(history), "--registry", str(tmp_path / "reg"), "--schema", str(tmp_path / "edited.json"),
                  env=FAST, timeout=240)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert message in logged_errors(r.stderr)
    assert not (tmp_path / "reg").exists()


def test_pretrain_trains_and_publishes_a_network_of_your_own(tmp_path):
    history = own_history(tmp_path / "history.csv")
    reg = tmp_path / "reg"
    r = perennial("pretrain", "--history", str(history), "--registry", str(reg), "--model", "tests.unit.custom_networks:build",
                  "--model-kwargs", '{"width": 8}', env=FAST, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = orjson.loads((reg / "versions" / "v000001" / "manifest.json").read_bytes())
    assert manifest["network"] == {"factory": "tests.unit.custom_networks:build", "kwargs": {"width": 8}}
    assert Registry(reg).load_current().network.factory == "tests.unit.custom_networks:build"


BAD_MODELS = {
    "no such module": (["--model", "nosuch.models:build"], "network factory nosuch.models:build: module nosuch.models cannot be imported"),
    "no such attribute": (["--model", "tests.unit.custom_networks:nothing"], "tests.unit.custom_networks has no attribute nothing"),
    "a factory that raises": (["--model", "tests.unit.custom_networks:broken"],
                              "network factory tests.unit.custom_networks:broken failed for this schema (RuntimeError: this factory needs a GPU)"),
    "a network of the wrong shape": (["--model", "tests.unit.custom_networks:wrong_shape"], "must return [N, 2] logits"),
    "arguments that are not JSON": (["--model", "tests.unit.custom_networks:build", "--model-kwargs", "{width: 8}"], "--model-kwargs is not JSON"),
    "arguments it does not take": (["--model", "tests.unit.custom_networks:build", "--model-kwargs", '{"depth": 8}'],
                                   "failed for this schema (TypeError"),
}


@pytest.mark.parametrize("case", BAD_MODELS)
def test_a_network_that_cannot_be_built_is_refused_naming_it(tmp_path, case):
    flags, message = BAD_MODELS[case]
    history = own_history(tmp_path / "history.csv", n=1000)
    r = perennial("pretrain", "--history", str(history), "--registry", str(tmp_path / "reg"), *flags, env=FAST, timeout=240)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert message in logged_errors(r.stderr)
    assert not (tmp_path / "reg").exists()


def test_user_mistakes_get_a_message_not_a_traceback(tmp_path):
    r = perennial("pretrain", "--history", str(tmp_path / "missing.csv"), "--registry", str(tmp_path / "reg"))
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = perennial("learn", "--registry", str(tmp_path / "empty"))
    assert r.returncode == 2 and "run `perennial pretrain` first" in logged_errors(r.stderr)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A small pretrained registry: one version, its retention set and replay seed."""
    path = tmp_path_factory.mktemp("pretrained") / "registry"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3))
    y = (x[:, 0] + rng.normal(size=2000) > 1.5).astype(np.int64)
    pretrain(("a", "b", "c"), x, y, Registry(path), epochs=1, retention_size=200, replay_seed_size=200)
    return path


def files(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a directory)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _edit_manifest(reg: Path) -> None:
    path = reg / "versions" / "v000001" / "manifest.json"
    doc = orjson.loads(path.read_bytes())
    doc["feature_schema"]["mean"][1] += 1.0
    path.write_bytes(orjson.dumps(doc))


def _only_retention_left(reg: Path) -> None:
    shutil.rmtree(reg / "versions")
    (reg / "CURRENT").unlink()


# registry state -> (how to make it, flags, what stderr must say)
REFUSED = {
    "CURRENT missing": (lambda reg: (reg / "CURRENT").unlink(), ["--if-empty"],
                        ["holds versions v000001 to v000001 but nothing to serve: there is no CURRENT",
                         "--if-empty pretrains only a registry without versions, so nothing was changed",
                         "the newest sound version is v000001: printf 'v000001\\n' >"]),
    "CURRENT garbage": (lambda reg: (reg / "CURRENT").write_bytes(b"\x00\xffjunk"), ["--if-empty"],
                        ["CURRENT holds b'\\x00\\xffjunk', not a version id", "the newest sound version is v000001"]),
    "CURRENT's manifest edited": (_edit_manifest, ["--if-empty"],
                                  ["the manifest of v000001 does not match its checksum", "No version verifies: restore"]),
    "a retention set but no version": (_only_retention_left, ["--if-empty"],
                                       ["has no version but has retention.safetensors and replay-seed.safetensors"]),
    "a sound registry, without --if-empty": (lambda reg: None, [],
                                             ["already holds versions v000001 to v000001; pretraining never writes over them"]),
}


@pytest.mark.parametrize("state", REFUSED)
def test_pretrain_refuses_a_registry_with_content_and_changes_nothing(tmp_path, pretrained, state):
    make, flags, messages = REFUSED[state]
    reg = tmp_path / "registry"
    shutil.copytree(pretrained, reg)
    make(reg)
    before = files(reg)
    env = {**os.environ, "PERENNIAL_PRETRAIN__HISTORY_DAYS": "10", "PERENNIAL_PRETRAIN__EPOCHS": "1"}
    r = perennial("pretrain", "--registry", str(reg), *flags, env=env, timeout=300)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr[-2000:]
    refusal = logged_errors(r.stderr)
    for message in messages:
        assert message in refusal, refusal
    assert files(reg) == before


def test_pretrain_if_empty_skips_a_sound_registry(tmp_path, pretrained):
    reg = tmp_path / "registry"
    shutil.copytree(pretrained, reg)
    before = files(reg)
    r = perennial("pretrain", "--registry", str(reg), "--if-empty")
    assert r.returncode == 0, r.stderr
    assert orjson.loads(r.stdout.splitlines()[-1])["version"] == "v000001" and files(reg) == before


def test_demo_runs_the_loop_and_writes_its_summary(tmp_path):
    summary = tmp_path / "summary.json"
    env = {**os.environ, "PERENNIAL_PRETRAIN__HISTORY_DAYS": "20"}
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
    events = [orjson.loads(line) for line in r.stdout.splitlines()]  # in a pipe, the demo's story is JSON lines
    (reported,) = [e for e in events if e["event"] == "summary"]
    assert reported["served_version_end"] == s["served_version_end"] and reported["summary_json"] == str(summary)


def test_demo_with_joined_labels_learns_from_fraud_labels_alone(tmp_path):
    """`perennial demo --labels join`: transactions are posted to the server when they happen (and
    logged), only fraud labels are sent, later, by id; the learner joins them to the features as
    scored, the rest mature into negatives, and what it learns is promoted and served."""
    summary = tmp_path / "summary.json"
    env = {**os.environ, "PERENNIAL_PRETRAIN__HISTORY_DAYS": "20", "PERENNIAL_DEMO__JOIN_MATURITY_S": "86400"}
    r = perennial("demo", "--labels", "join", "--duration", "30", "--workdir", str(tmp_path / "demo"), "--summary-json", str(summary),
                  env=env, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = orjson.loads(summary.read_bytes())
    join = s["join"]
    assert s["labels"] == "join" and "labels joined: transactions posted to the server" in r.stdout
    assert join["predictions_total"] > 10_000 and join["matured_total"] > 5_000 and join["labels_total"] > 50
    # the learner consumed only what the join sent: fraud labels joined (a label parked at the end is not sent yet) and matured negatives
    assert (
        0 < s["events_consumed"] <= join["events_sent_total"]
        and join["matured_total"] < join["events_sent_total"] <= join["labels_total"] + join["matured_total"]
    )
    assert s["versions_promoted"] >= 1 and s["new_pattern_ap_end"] > s["new_pattern_ap_start"] + 0.3
    assert s["prediction_requests_failed"] == 0 and s["events_dead_lettered"] == 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_servers_log_is_json_lines_in_a_pod_uvicorns_own_lines_included(tmp_path, pretrained):
    """`perennial serve` with stderr not a terminal: every line a JSON object, uvicorn's included (an
    invalid HTTP request is logged by uvicorn itself) under the server's name, perennial.serve.http.
    (kafka-python's lines keep their own logger names, kafka.*: no broker runs here.)"""
    import socket
    import time

    port = _free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "PERENNIAL_LOG__FORMAT"},
           "PERENNIAL_REGISTRY__PATH": str(pretrained), "PERENNIAL_SERVE__PORT": str(port), "PERENNIAL_SERVE__NUMERIC_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "perennial.cli", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                    sock.recv(1024)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
                time.sleep(0.2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    lines = [orjson.loads(line) for line in err.splitlines()]  # every line parses
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert not [line for line in lines if line["logger"].startswith("uvicorn")], err  # the server's HTTP layer speaks as perennial.serve.*
    assert any(line["logger"] == "perennial.serve.http" and "Invalid HTTP request" in line["message"] for line in lines), err


def _at_a_terminal(args: list[str], env: dict) -> str:
    """What `perennial ARGS` writes to stderr when stderr is a terminal (a pseudo-terminal)."""
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "perennial.cli", *args], env=env, stderr=follower, stdout=subprocess.DEVNULL, timeout=60)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    assert done.returncode == 2
    return b"".join(chunks).decode()


@pytest.mark.parametrize("log_format", ["auto", "text", "json"])
def test_a_user_mistake_is_logged_in_the_format_of_the_terminal_or_the_setting(tmp_path, log_format):
    """At a terminal the log is readable text unless `log.format` forces JSON; away from one it is
    JSON unless it forces text. A setting mistake goes through the same log, not a bare print."""
    env = {**{k: v for k, v in os.environ.items() if k != "PERENNIAL_LOG__FORMAT"}, "PERENNIAL_REGISTRY__PATH": str(tmp_path / "empty")}
    if log_format != "auto":
        env["PERENNIAL_LOG__FORMAT"] = log_format
    terminal = _at_a_terminal(["learn"], env).strip().splitlines()
    piped = perennial("learn", env=env).stderr.strip().splitlines()
    for lines, as_json in ((terminal, log_format == "json"), (piped, log_format != "text")):
        (line,) = [ln for ln in lines if "run `perennial pretrain` first" in ln]
        if as_json:
            doc = orjson.loads(line)
            assert doc["level"] == "ERROR" and doc["logger"] == "perennial.learn"
        else:
            assert " ERROR perennial.learn: perennial learn: " in line and not line.startswith("{")
