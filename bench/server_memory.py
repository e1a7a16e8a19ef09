"""Server memory: resident set of `perennial serve` after 100,000 and after 1,000,000 predictions
(batches of 1,024 over HTTP), read from /proc."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx
from common import registry, rss_mib, serve_env, start, stop, wait_http
from serving import bodies

from streams.broker import free_port

MARKS = (100_000, 1_000_000)


def main(marks: tuple[int, ...] = MARKS) -> list[tuple[str, str, str, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="perennial-bench-mem-"))
    reg = registry(tmp / "registry")
    body = bodies(tmp)["batch1024"].read_bytes()
    port = free_port()
    env = serve_env(reg, port)
    server = start([sys.executable, "-m", "perennial.cli", "serve"], env, tmp / "serve.log")
    out: dict[int, float] = {}
    failed = 0
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        done = 0
        with httpx.Client(timeout=30) as client:
            for mark in sorted(marks):
                while done < mark:
                    r = client.post(f"http://127.0.0.1:{port}/v1/predict", content=body, headers={"Content-Type": "application/json"})
                    failed += r.status_code != 200
                    done += 1024
                out[mark] = rss_mib(server.pid)
    finally:
        stop(server)
    lo, hi = min(out), max(out)
    growth = out[hi] / out[lo]
    return [
        *[(f"server RSS after {m:,} predictions", f"{v:,.0f} MiB", "", "") for m, v in sorted(out.items())],
        ("server RSS growth, last mark / first", f"{growth:.2f}", "flat (<= 1.10)", "yes" if growth <= 1.10 else "no"),
        ("failed requests", str(failed), "0", "yes" if failed == 0 else "no"),
    ]


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row))
