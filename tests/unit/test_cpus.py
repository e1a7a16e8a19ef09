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
