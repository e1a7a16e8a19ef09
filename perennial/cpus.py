"""Size numeric thread pools to the CPUs a process may use.

numpy's OpenBLAS, OpenMP and torch each start one thread per host core. In a pod limited to one CPU
on a 64-core node, or on a machine busy with other work, those threads fight each other for the
quota: batches of 64 through ``/v1/predict`` ran at 433 requests/s with the libraries' default pools
against 1,343 with one thread, measured side by side on a busy 2-core machine (issue 17;
docs/benchmarks/serving.md, "under CPU contention", written by ``make bench``). ``allowed_cpus`` reads what the process may
use: its CPU affinity and its cgroup's quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us``); ``limit_threads`` sizes every pool (BLAS and OpenMP through threadpoolctl,
torch's intra-op pool) to a setting, or to those CPUs.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "cpu.max").write_text("150000 100000\\n")
>>> cgroup_quota(root)
1.5
>>> _ = (root / "cpu.max").write_text("max 100000\\n")
>>> cgroup_quota(root) is None
True
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger("perennial.cpus")

CGROUP = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """CPUs the cgroup's quota allows (1.5 for 150 ms per 100 ms), None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def allowed_cpus(root: Path = CGROUP) -> int:
    """Whole CPUs this process may use: its affinity, capped by its cgroup quota (rounded up: a
    quota of 1.5 CPUs can keep two threads busy part of the time), at least 1."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    quota = cgroup_quota(root)
    return max(1, min(affinity, math.ceil(quota)) if quota else affinity)


def limit_threads(setting: int | None, root: Path = CGROUP) -> int | None:
    """Size the numeric pools of this process: ``setting`` threads, or with None the CPUs it may use
    (``allowed_cpus``); 0 leaves every library's own default (one thread per host core). Returns the
    size set (None for 0)."""
    if setting == 0:
        return None
    n = setting if setting is not None else allowed_cpus(root)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)  # OpenBLAS/MKL and OpenMP, for the life of the process
    try:
        import torch
    except ImportError:
        return n
    torch.set_num_threads(n)
    log.debug("numeric thread pools sized to %d", n)
    return n
