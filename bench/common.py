"""Helpers shared by the benchmarks: a small pretrained registry, processes, wrk, the report table."""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from learners.pretrain import pretrain  # noqa: E402
from learners.registry import Registry  # noqa: E402
from streams.simulator import FEATURES, Simulator  # noqa: E402

SIM = Simulator(seed=5, customers=3000, terminals=1000)


def registry(path: Path) -> Path:
    if Registry(path).current_version() is None:
        tx = SIM.generate(0, 30)
        pretrain(FEATURES, tx.features, tx.label, Registry(path), epochs=3, retention_size=2000)
    return path


def serve_env(reg: Path, port: int, poll_s: float = 60) -> dict[str, str]:
    """Environment of a benchmarked `perennial serve`: the registry, the port, no broker (announcements
    off), the registry followed every ``poll_s`` seconds."""
    return {"PERENNIAL_REGISTRY__PATH": str(reg), "PERENNIAL_SERVE__PORT": str(port),
            "PERENNIAL_SERVE__REGISTRY_POLL_S": str(poll_s), "PERENNIAL_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def start(args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """A process in its own process group, so that ``stop`` also ends what it spawns (LitServe's workers)."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child writes to it while it runs
    return subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL to what is left of it after 10 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group's stragglers, even when the leader exited
    except ProcessLookupError:
        pass
    proc.wait(10)


def wrk(url: str, body_file: Path, seconds: int = 10, connections: int = 32) -> dict[str, float]:
    """Requests/s, latency percentiles and failed requests (non-2xx answers and socket errors) from
    wrk posting one JSON body."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk); `make bench` installs it")
    script = body_file.with_suffix(".lua")
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
    )
    out = subprocess.run(
        [exe, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url], capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    lat = {p: _ms(re.search(rf"^\s+{p}%\s+(\S+)", out, re.M).group(1)) for p in ("50", "99")}
    failed = (int(errors.group(1)) if errors else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"], "non_2xx": failed}


def _ms(value: str) -> float:
    for unit, factor in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def report(title: str, rows: list[tuple[str, str, str, str]], notes: list[str], path: Path) -> str:
    """A markdown section: figure, value, target, met."""
    lines = [f"## {title}", "", f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}", "",
             "| figure | value | target | met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += [""] + [f"- {n}" for n in notes] + [""]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    return text


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
