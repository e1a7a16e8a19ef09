"""Swap under load: wrk drives single-event requests for 30 s while a new version is published every
second (the server follows the registry), against the same load without swaps, in the same run."""

from __future__ import annotations

import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from common import registry, serve_env, start, stop, wait_http, wrk
from serving import bodies

from learners.registry import Registry
from streams.broker import free_port

SECONDS = 30


def publisher(reg: Path, stop_event: threading.Event, published: list[str]) -> None:
    """One new version per second: the served weights, slightly perturbed, published and made CURRENT."""
    r = Registry(reg)
    base = r.load_current()
    rng = np.random.default_rng(0)
    while not stop_event.wait(1.0):
        weights = {k: (v + rng.normal(0, 1e-3, v.shape)).astype(np.float32) for k, v in base.weights.items()}
        manifest = r.publish(weights, base.schema, parent=r.current_version(), metrics={}, gate_report={"passed": True, "reasons": ["bench"]})
        published.append(manifest["version"])


def refusals(url: str) -> int:
    m = re.search(r'^perennial_server_swaps_total\{result="refused"\} ([\d.e+]+)', httpx.get(url, timeout=5).text, re.M)
    return int(float(m.group(1))) if m else 0


def swaps_done(url: str) -> int:
    text = httpx.get(url, timeout=5).text
    m = re.search(r'^perennial_server_swaps_total\{result="swapped"\} ([\d.e+]+)', text, re.M)
    return int(float(m.group(1))) if m else 0


def main() -> list[tuple[str, str, str, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="perennial-bench-swap-"))
    reg = registry(tmp / "registry")
    body = bodies(tmp)["single"]
    port = free_port()
    env = serve_env(reg, port, poll_s=0.2)
    server = start([sys.executable, "-m", "perennial.cli", "serve"], env, tmp / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz")
        wrk(f"{url}/v1/predict", body, 3)  # warm-up
        calm = wrk(f"{url}/v1/predict", body, SECONDS)
        before = swaps_done(f"{url}/metrics")
        halt, published = threading.Event(), []
        pub = threading.Thread(target=publisher, args=(reg, halt, published), daemon=True)
        pub.start()
        busy = wrk(f"{url}/v1/predict", body, SECONDS)
        halt.set()
        pub.join(5)
        time.sleep(1)
        swapped = swaps_done(f"{url}/metrics") - before
        refused = refusals(f"{url}/metrics")
    finally:
        stop(server)
    ratio = busy["p99_ms"] / calm["p99_ms"]
    failed = busy["non_2xx"] + calm["non_2xx"]
    return [
        (
            "swap under load: versions published / swapped by the server",
            f"{len(published)} / {swapped} ({refused} refused)",
            "one per second",
            "yes" if swapped >= SECONDS - 5 and not refused else "no",
        ),
        ("swap under load: requests/s, p50, p99 (no swaps)", f"{calm['rps']:,.0f}, {calm['p50_ms']:.2f} ms, {calm['p99_ms']:.2f} ms", "", ""),
        ("swap under load: requests/s, p50, p99 (a swap per second)", f"{busy['rps']:,.0f}, {busy['p50_ms']:.2f} ms, {busy['p99_ms']:.2f} ms", "", ""),
        ("swap under load: p99 ratio, swaps / no swaps", f"{ratio:.2f}", "<= 1.5", "yes" if ratio <= 1.5 else "no"),
        ("swap under load: failed requests", str(failed), "0", "yes" if failed == 0 else "no"),
    ]


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row))
