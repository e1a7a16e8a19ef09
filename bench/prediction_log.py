"""Cost of the prediction log, against the serving targets: /v1/predict with `serve.prediction_log`
off and on (to the local broker) and the bare FastAPI ceiling, same registry, same load tool, measured
alternately in one run; batches of 64 off and on; and what the log sent."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import httpx
from common import ROOT, registry, serve_env, start, stop, wait_http, wrk
from serving import bodies

from streams.broker import LocalBroker, free_port

SECONDS = 10


def logged(metrics_url: str) -> dict[str, float]:
    text = httpx.get(metrics_url, timeout=5).text
    return {m[1]: float(m[2]) for m in re.finditer(r'^perennial_prediction_log_events_total\{outcome="(\w+)"\} (\S+)$', text, re.M)}


def main() -> list[tuple[str, str, str, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="perennial-bench-log-"))
    reg = registry(tmp / "registry")
    files = bodies(tmp)
    with LocalBroker(log_path=tmp / "broker.log") as broker:
        ports = {"off": free_port(), "on": free_port(), "bare": free_port()}
        procs = {
            "off": start([sys.executable, "-m", "perennial.cli", "serve"], serve_env(reg, ports["off"]), tmp / "off.log"),
            "on": start([sys.executable, "-m", "perennial.cli", "serve"],
                        {**serve_env(reg, ports["on"]), "PERENNIAL_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
                         "PERENNIAL_KAFKA__TOPIC": "bench", "PERENNIAL_SERVE__PREDICTION_LOG": "true"}, tmp / "on.log"),
            "bare": start([sys.executable, "-m", "uvicorn", "bare_app:app", "--host", "127.0.0.1", "--port", str(ports["bare"]),
                           "--log-level", "warning", "--no-access-log", "--app-dir", str(ROOT / "bench")], None, tmp / "bare.log"),
        }
        try:
            for name, port in ports.items():
                wait_http(f"http://127.0.0.1:{port}/" + ("docs" if name == "bare" else "readyz"))
            urls = {name: f"http://127.0.0.1:{port}/v1/predict" for name, port in ports.items()}
            for url in urls.values():
                wrk(url, files["single"], 2)  # warm-up
            runs: dict[str, list[dict]] = {name: [] for name in urls}
            for _ in range(2):  # alternate, so drift on this machine hits all alike
                for name, url in urls.items():
                    runs[name].append(wrk(url, files["single"], SECONDS))
            batches = {name: wrk(urls[name], files["batch64"], SECONDS) for name in ("off", "on")}
            counts = logged(f"http://127.0.0.1:{ports['on']}/metrics")
        finally:
            for proc in procs.values():
                stop(proc)
    mean = {k: {m: sum(r[m] for r in v) / len(v) for m in ("rps", "p50_ms", "p99_ms")} for k, v in runs.items()}
    ceiling = mean["on"]["rps"] / mean["bare"]["rps"]
    per64 = {name: r["rps"] * 64 for name, r in batches.items()}
    failed = sum(r["non_2xx"] for v in runs.values() for r in v) + sum(r["non_2xx"] for r in batches.values())
    queued = counts.get("queued", 0.0)
    share = counts.get("sent", 0.0) / queued if queued else 0.0
    fmt = lambda m: f"{m['rps']:,.0f} ({m['p50_ms']:.2f} ms, {m['p99_ms']:.2f} ms)"
    return [
        ("single event, prediction log off: requests/s (p50, p99)", fmt(mean["off"]), "", ""),
        ("single event, prediction log on: requests/s (p50, p99)", fmt(mean["on"]), "", ""),
        ("single event: bare FastAPI ceiling requests/s (p50, p99)", fmt(mean["bare"]), "", ""),
        ("single event, log on: ratio to the ceiling (the serving target)", f"{ceiling:.2f}", ">= 0.80", "yes" if ceiling >= 0.8 else "no"),
        ("single event: log on relative to off", f"{mean['on']['rps'] / mean['off']['rps']:.2f}", "", ""),
        ("batches of 64, log off: predictions/s", f"{per64['off']:,.0f}", "", ""),
        ("batches of 64, log on: predictions/s (the serving target)", f"{per64['on']:,.0f}", ">= 100,000", "yes" if per64["on"] >= 100_000 else "no"),
        ("events logged: sent / queued (dropped)", f"{share:.3f} of {queued:,.0f} ({counts.get('dropped', 0):,.0f} dropped)", "", ""),
        ("failed requests", str(failed), "0", "yes" if failed == 0 else "no"),
    ]
