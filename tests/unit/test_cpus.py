"""Numeric thread pools sized to the CPUs a process may use: the cgroup quota read (v2 and v1), the
affinity cap, and the pools of a fresh process actually resized (BLAS through threadpoolctl, torch)."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from perennial.cpus import allowed_cpus, cgroup_quota


def test_cgroup_v1_quota_and_unlimited(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path) == 2.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(tmp_path) is None
    assert cgroup_quota(tmp_path / "nothing here") is None


def test_allowed_cpus_is_the_quota_rounded_up_under_the_affinity(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU
    assert allowed_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{(affinity + 3) * 100000} 100000\n")  # more than the machine
    assert allowed_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("garbage")
    assert allowed_cpus(tmp_path) == affinity


PROBE = """
import json, sys, pathlib
from threadpoolctl import threadpool_info
import torch
from perennial.cpus import limit_threads
setting = json.loads(sys.argv[1])
root = pathlib.Path(sys.argv[2])
print(json.dumps({"set": limit_threads(setting, root), "torch": torch.get_num_threads(),
                  "blas": sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})}))
"""


@pytest.mark.parametrize("setting, quota, expected", [(None, "100000 100000", 1), (3, "max 100000", 3), (0, "100000 100000", None)])
def test_a_fresh_process_has_its_pools_sized(tmp_path, setting, quota, expected):
    (tmp_path / "cpu.max").write_text(quota)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", PROBE, orjson.dumps(setting).decode(), str(tmp_path)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = orjson.loads(r.stdout.splitlines()[-1])
    assert out["set"] == expected
    if expected is not None:
        assert out["torch"] == expected and out["blas"] == [expected]
    else:  # 0 leaves the libraries' defaults: a thread per core of the machine
        assert out["torch"] == len(os.sched_getaffinity(0))


# --- the commands size their pools -----------------------------------------------------------------

COMMAND = """
import json, os, signal, sys

def pools(*_):
    # in the main thread, where the command sized the pools and where the server scores
    from threadpoolctl import threadpool_info
    torch = sys.modules.get("torch")
    info = threadpool_info()
    sized = [p for p in info if p.get("threading_layer") != "disabled"]  # a single-threaded build (cvxopt's) stays at 1
    doc = {"blas": sorted({p["num_threads"] for p in sized if p["user_api"] == "blas"}),
           "openmp": sorted({p["num_threads"] for p in sized if p["user_api"] == "openmp"}),
           "torch": torch.get_num_threads() if torch else None}
    with open(os.environ["PROBE_OUT"] + ".tmp", "w") as f:
        json.dump(doc, f)
    os.replace(os.environ["PROBE_OUT"] + ".tmp", os.environ["PROBE_OUT"])

signal.signal(signal.SIGUSR1, pools)
from perennial.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _pools_of_a_running_command(command: str, env: dict[str, str], ready, out) -> dict:
    """The numeric pools of a real `perennial <command>` process, read inside it (SIGUSR1) once
    ``ready()``: the command's own start-up, settings from the environment, nothing patched."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-c", COMMAND, command], env={**env, "PROBE_OUT": str(out)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready(proc):
            assert proc.poll() is None and time.monotonic() < deadline, f"`perennial {command}` never got ready:\n{_output(proc)}"
            time.sleep(0.1)
        while not out.exists():  # signalled until it answers: the handler runs once the main thread runs Python again
            assert proc.poll() is None and time.monotonic() < deadline, f"`perennial {command}` never reported:\n{_output(proc)}"
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.1)
        return orjson.loads(out.read_bytes())
    finally:
        proc.kill()
        proc.wait()


def _output(proc: subprocess.Popen) -> str:
    """What a process stopped here wrote."""
    proc.kill()
    return proc.communicate()[0]


def _command_env(tmp_path, registry) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and not k.startswith("PERENNIAL_")}
    return {**env, "PERENNIAL_REGISTRY__PATH": str(registry), "PERENNIAL_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "PERENNIAL_LOG__FORMAT": "text"}


def _not_the_default() -> int:
    """A pool size no library picks by itself here (their default: a thread per CPU of the machine)."""
    return len(os.sched_getaffinity(0)) + 1


def test_perennial_serve_sizes_its_pools_before_it_serves(tmp_path, two_feature_registry):
    """Would fail if `perennial serve` stopped calling ``limit_threads`` (its pools would be a thread
    per core) or ignored ``serve.numeric_threads``: read inside the running server, after a prediction."""
    import httpx

    from streams.broker import free_port

    n, port = _not_the_default(), free_port()
    env = {**_command_env(tmp_path, two_feature_registry), "PERENNIAL_SERVE__PORT": str(port),
           "PERENNIAL_SERVE__NUMERIC_THREADS": str(n)}

    def ready(_proc) -> bool:
        try:
            r = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"features": {"amount": 3.0, "hour": 1.0}}, timeout=2)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    pools = _pools_of_a_running_command("serve", env, ready, tmp_path / "serve.json")
    assert pools == {"blas": [n], "openmp": [n], "torch": n}


class _Sized(Exception):
    """Stops `perennial learn` once it has sized its pools (nothing trained, no broker needed)."""


def test_perennial_learn_sizes_its_pools_before_it_learns(tmp_path, two_feature_registry, monkeypatch):
    """Would fail if `perennial learn` stopped calling ``limit_threads`` or passed it another setting
    than ``learn.numeric_threads``: the command's own entry (``main(["learn"])``, settings from the
    environment) runs until the learner sizes its pools. In process, not as a real learner, whose
    start-up alone (importing Avalanche) takes ~10 s; the pools a call gives a fresh process are
    checked above."""
    import logging
    import signal

    import numpy as np

    import learners.learner
    import learners.loop
    from learners.registry import Registry
    from perennial.cli import main

    Registry(two_feature_registry).save_retention(np.random.default_rng(0).uniform(0, 10, (40, 2)).astype(np.float32),
                                                  np.arange(40) % 2)
    calls = []

    def sized(setting):
        calls.append(setting)
        raise _Sized

    def learning(learner, stop):
        raise AssertionError("`perennial learn` started learning with its pools unsized")

    monkeypatch.setattr(learners.learner, "limit_threads", sized)
    monkeypatch.setattr(learners.loop, "run", learning)
    for name, value in {**_command_env(tmp_path, two_feature_registry), "PERENNIAL_LEARN__METRICS_PORT": "0",
                        "PERENNIAL_LEARN__CHECKPOINT_PATH": str(tmp_path / "learner.safetensors")}.items():
        monkeypatch.setenv(name, value)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # the command takes them
    root = logging.getLogger()
    log_handlers, log_level = root.handlers[:], root.level  # and the root logger (a handler on this test's stderr)
    try:
        for setting in ("3", "0"):
            monkeypatch.setenv("PERENNIAL_LEARN__NUMERIC_THREADS", setting)
            with pytest.raises(_Sized):
                main(["learn"])
        monkeypatch.delenv("PERENNIAL_LEARN__NUMERIC_THREADS")
        with pytest.raises(_Sized):
            main(["learn"])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        root.handlers[:] = log_handlers
        root.setLevel(log_level)
    assert calls == [3, 0, None]  # None: the CPUs the process may use (its cgroup quota, its affinity)
