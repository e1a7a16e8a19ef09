"""Serving benchmark: POST /v1/predict against the bare FastAPI ceiling, same uvicorn settings, same
load tool (wrk, one thread, 32 connections), measured alternately in one run; then batches; then batches
of 64 under CPU contention, our pools sized to one thread against each library's own (``contended``)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import orjson
from common import ROOT, SIM, registry, serve_env, start, stop, wait_http, wrk

from streams.broker import free_port
from streams.simulator import FEATURES

SECONDS = 10


def bodies(tmp: Path) -> dict[str, Path]:
    rows = SIM.generate(40, 1).features[:1024].tolist()
    events = [{"id": str(i), "features": dict(zip(FEATURES, r))} for i, r in enumerate(rows)]
    out = {"single": events[0], "batch64": events[:64], "batch1024": events}
    paths = {}
    for name, doc in out.items():
        paths[name] = tmp / f"{name}.json"
        paths[name].write_bytes(orjson.dumps(doc))
    return paths


def main() -> list[tuple[str, str, str, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="perennial-bench-"))
    reg = registry(tmp / "registry")
    files = bodies(tmp)
    ours_port, bare_port = free_port(), free_port()
    env = serve_env(reg, ours_port)
    ours = start([sys.executable, "-m", "perennial.cli", "serve"], env, tmp / "serve.log")
    bare = start([sys.executable, "-m", "uvicorn", "bare_app:app", "--host", "127.0.0.1", "--port", str(bare_port),
                  "--log-level", "warning", "--no-access-log", "--app-dir", str(ROOT / "bench")], None, tmp / "bare.log")
    try:
        wait_http(f"http://127.0.0.1:{ours_port}/readyz")
        wait_http(f"http://127.0.0.1:{bare_port}/docs")
        ours_url, bare_url = f"http://127.0.0.1:{ours_port}/v1/predict", f"http://127.0.0.1:{bare_port}/v1/predict"
        wrk(ours_url, files["single"], 2), wrk(bare_url, files["single"], 2)  # warm-up
        runs = {"ours": [], "bare": []}
        for _ in range(2):  # alternate, so drift on this machine hits both alike
            runs["bare"].append(wrk(bare_url, files["single"], SECONDS))
            runs["ours"].append(wrk(ours_url, files["single"], SECONDS))
        mean = {k: {m: sum(r[m] for r in v) / len(v) for m in ("rps", "p50_ms", "p99_ms")} for k, v in runs.items()}
        b64 = wrk(ours_url, files["batch64"], SECONDS)
        b1024 = wrk(ours_url, files["batch1024"], SECONDS, connections=4)
        failed = sum(r["non_2xx"] for v in runs.values() for r in v) + b64["non_2xx"] + b1024["non_2xx"]
    finally:
        stop(ours)
        stop(bare)
    ratio = mean["ours"]["rps"] / mean["bare"]["rps"]
    p64, p1024 = b64["rps"] * 64, b1024["rps"] * 1024
    return [
        (
            "single event: /v1/predict requests/s (p50, p99)",
            f"{mean['ours']['rps']:,.0f} ({mean['ours']['p50_ms']:.2f} ms, {mean['ours']['p99_ms']:.2f} ms)",
            "",
            "",
        ),
        (
            "single event: bare FastAPI ceiling requests/s (p50, p99)",
            f"{mean['bare']['rps']:,.0f} ({mean['bare']['p50_ms']:.2f} ms, {mean['bare']['p99_ms']:.2f} ms)",
            "",
            "",
        ),
        ("single event: ratio to the ceiling", f"{ratio:.2f}", ">= 0.80", "yes" if ratio >= 0.8 else "no"),
        ("batches of 64: predictions/s", f"{p64:,.0f}", ">= 100,000", "yes" if p64 >= 100_000 else "no"),
        ("batches of 1,024: predictions/s", f"{p1024:,.0f}", ">= 100,000", "yes" if p1024 >= 100_000 else "no"),
        ("failed requests", str(failed), "0", "yes" if failed == 0 else "no"),
        *contended(reg, files["batch64"], tmp),
    ]


BUSY = "while True: pass"


def contended(reg: Path, body: Path, tmp: Path) -> list[tuple[str, str, str, str]]:
    """Batches of 64 while a busy loop per CPU competes for the machine: the server with its numeric
    pools sized (serve.numeric_threads 1, the default) against the libraries' own pools (0: a thread
    per core), measured alternately in one run."""
    ports = {"sized": free_port(), "default pools": free_port()}
    servers = {
        name: start([sys.executable, "-m", "perennial.cli", "serve"],
                    {**serve_env(reg, port), "PERENNIAL_SERVE__NUMERIC_THREADS": "1" if name == "sized" else "0"}, tmp / f"serve-{port}.log")
        for name, port in ports.items()
    }
    busy = []
    try:
        for port in ports.values():
            wait_http(f"http://127.0.0.1:{port}/readyz")
        busy = [start([sys.executable, "-c", BUSY]) for _ in range(os.cpu_count() or 1)]
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in ports}
        for _ in range(2):
            for name, port in ports.items():
                runs[name].append(wrk(f"http://127.0.0.1:{port}/v1/predict", body, SECONDS // 2))
    finally:
        for proc in busy + list(servers.values()):
            stop(proc)
    rps = {name: sum(r["rps"] for r in v) / len(v) for name, v in runs.items()}
    p99 = {name: max(r["p99_ms"] for r in v) for name, v in runs.items()}
    failed = sum(r["non_2xx"] for v in runs.values() for r in v)
    ratio = rps["sized"] / rps["default pools"]
    return [
        (f"under CPU contention ({os.cpu_count()} busy loops), batches of 64: requests/s with pools sized to 1 thread (p99)",
         f"{rps['sized']:,.0f} ({p99['sized']:.1f} ms)", "", ""),
        ("under CPU contention, batches of 64: requests/s with a pool thread per core (p99)",
         f"{rps['default pools']:,.0f} ({p99['default pools']:.1f} ms)", "", ""),
        ("under CPU contention: sized / per-core pools", f"{ratio:.2f}", ">= 1.0", "yes" if ratio >= 1.0 else "no"),
        ("under CPU contention: failed requests", str(failed), "0", "yes" if failed == 0 else "no"),
    ]

