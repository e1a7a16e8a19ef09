"""Peers: the same model and events served by LitServe, MLServer and BentoML, each installed by this
script in its own throwaway virtual environment (not a project dependency), against /v1/predict in
the same run, with the same load tool and one worker each.

Each peer gets the events in its own native request format: LitServe the same JSON bodies as ours,
BentoML the same events under {"events": [...]}, MLServer a V2-protocol FP32 tensor of the same
feature rows. All score with the same numpy arithmetic (bench/peers/peer_model.py).

Each peer is measured twice: with its adaptive batching off (its default) and on, gathering up to
``MAX_BATCH`` requests into one forward pass. The peer's model counts the rows of every pass, and a
run whose batching did not do what it was set to (no pass shared when on, a pass shared when off) is
reported as not measured.

``python peers.py`` prints the rows; ``python run.py peers`` also writes them to docs/benchmarks.md.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np
import orjson
from common import ROOT, SIM, registry, serve_env, start, stop, wait_http, wrk

from learners.registry import Registry
from streams.broker import free_port
from streams.simulator import FEATURES

SECONDS = 10
VENVS = Path(os.environ.get("PERENNIAL_PEERS_DIR", Path(tempfile.gettempdir()) / "perennial-peers"))
PACKAGES = {"litserve": ["litserve"], "mlserver": ["mlserver"], "bentoml": ["bentoml"]}
BATCH = 64
"""Events in a request of the batch figures."""
KINDS = (("single", "single events", 1, 1.5), ("batch64", f"batches of {BATCH}", BATCH, 1.0))
"""The figures of each server: body, label, events a request, our target ratio to a peer."""
MAX_BATCH = 64
"""Most requests a peer's batching puts into one forward pass (BentoML counts events: MAX_BATCH times
the events of a batch request). Ours has no cap: a pass takes every request parsed in one turn of
the event loop (service/batching.py). Under wrk's 32 connections neither limit is reached."""
MAX_WAIT_MS = 2.0
"""Longest a peer's batching waits for a pass to fill (LitServe's batch_timeout, MLServer's
max_batch_time). Ours has no timer (ServeSettings has no wait to copy), but MLServer turns its
batching off at 0, so one short wait stands in for it in both. BentoML has no such setting: it picks
its own wait from the latencies it observes."""


class Passes(NamedTuple):
    """Forward passes a server has run: how many, the rows they scored, how many of each size (where known)."""

    count: float
    rows: float
    sizes: collections.Counter[int]


def venv(name: str) -> Path:
    """A virtual environment with the peer and numpy, made once and reused by later runs."""
    path = VENVS / name
    python = path / "bin" / "python"
    if not (path / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "numpy", *PACKAGES[name]], check=True)
        (path / ".ready").touch()
    return python


def export_model(reg: Path, folder: Path) -> None:
    """The served version's schema, weights and calibration, in files the peers' numpy model reads."""
    model = Registry(reg).load_current()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "schema.json").write_text(json.dumps(model.schema.to_dict()))
    (folder / "calibration.json").write_text(json.dumps({"slope": model.calibration.slope, "intercept": model.calibration.intercept}))
    layers = sorted({k.rsplit(".", 1)[0] for k in model.weights}, key=lambda k: int(k.split(".")[1]))
    arrays = {}
    for i, name in enumerate(layers):
        arrays[f"w{i}"] = np.ascontiguousarray(model.weights[f"{name}.weight"].T)
        arrays[f"b{i}"] = model.weights[f"{name}.bias"]
    np.savez(folder / "weights.npz", **arrays)


def payloads(tmp: Path, model_dir: Path) -> dict[str, dict[str, Path]]:
    rows = SIM.generate(40, 1).features[:BATCH].tolist()
    events = [{"id": str(i), "features": dict(zip(FEATURES, r))} for i, r in enumerate(rows)]
    docs = {
        "ours": {"single": events[0], "batch64": events},
        "litserve": {"single": events[0], "batch64": events},
        "bentoml": {"single": {"events": events[:1]}, "batch64": {"events": events}},
    }
    names = json.loads((model_dir / "schema.json").read_text())["names"]

    def tensor(evs: list[dict]) -> dict:
        data = [e["features"][n] for e in evs for n in names]
        return {"inputs": [{"name": "features", "shape": [len(evs), len(names)], "datatype": "FP32", "data": data}]}

    docs["mlserver"] = {"single": tensor(events[:1]), "batch64": tensor(events)}
    out: dict[str, dict[str, Path]] = {}
    for peer, kinds in docs.items():
        out[peer] = {}
        for kind, doc in kinds.items():
            out[peer][kind] = tmp / f"{peer}-{kind}.json"
            out[peer][kind].write_bytes(orjson.dumps(doc))
    return out


def tag(name: str, batching: bool) -> str:
    """The name of a peer's log, pass counts and settings with its batching on or off."""
    return f"{name}-batching-{'on' if batching else 'off'}"


def launch(name: str, batching: bool, python: Path, tmp: Path, model_dir: Path) -> tuple[subprocess.Popen, str, str, Path]:
    """Start a peer on a free port, its batching on or off; returns the process, its prediction URL, a
    URL to wait on and the file its model writes its pass counts to."""
    port = free_port()
    apps = ROOT / "bench" / "peers"
    variant = tag(name, batching)
    stats = tmp / f"{variant}.passes.json"
    env = {"PEER_MODEL_DIR": str(model_dir), "PEER_PORT": str(port), "PYTHONPATH": str(apps), "PEER_STATS": str(stats)}
    log = tmp / f"{variant}.log"
    base = f"http://127.0.0.1:{port}"
    if name == "litserve":
        if batching:
            env |= {"PEER_MAX_BATCH": str(MAX_BATCH), "PEER_MAX_WAIT_MS": str(MAX_WAIT_MS)}
        return start([str(python), str(apps / "litserve_app.py")], env, log), f"{base}/predict", f"{base}/health", stats
    if name == "bentoml":
        if batching:  # BentoML counts events, not requests: MAX_BATCH requests of the largest body
            env["PEER_MAX_BATCH_EVENTS"] = str(MAX_BATCH * BATCH)
        service = "bentoml_app:BatchedFraud" if batching else "bentoml_app:Fraud"
        cmd = [str(python), "-m", "bentoml", "serve", service, "--port", str(port), "--working-dir", str(apps)]
        return start(cmd, env, log), f"{base}/predict", f"{base}/readyz", stats
    repo = tmp / f"{variant}-repo"
    (repo / "fraud").mkdir(parents=True, exist_ok=True)
    (repo / "settings.json").write_text(json.dumps({"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": 0}))
    model = {"name": "fraud", "implementation": "mlserver_app.FraudModel"}
    if batching:
        model |= {"max_batch_size": MAX_BATCH, "max_batch_time": MAX_WAIT_MS / 1000}
    (repo / "fraud" / "model-settings.json").write_text(json.dumps(model))
    cmd = [str(python), "-m", "mlserver.cli.main", "start", str(repo)]
    return start(cmd, env, log), f"{base}/v2/models/fraud/infer", f"{base}/v2/health/ready", stats


def first_score(url: str, body: Path) -> float:
    """The fraud probability a server answers for the single-event body (each in its own format)."""
    doc = httpx.post(url, content=body.read_bytes(), headers={"Content-Type": "application/json"}, timeout=30).json()
    if "outputs" in doc:  # V2 inference protocol
        return float(doc["outputs"][0]["data"][0])
    items = doc["predictions"] if isinstance(doc, dict) and "predictions" in doc else doc
    item = items[0] if isinstance(items, list) else items
    return float(item.get("fraud_probability", item.get("score")))


def peer_passes(stats: Path) -> Passes:
    """A peer's forward passes so far, once its model has written them all (it writes every 0.1 s)."""
    deadline = time.monotonic() + 10
    last: collections.Counter[int] | None = None
    while time.monotonic() < deadline:
        counts = collections.Counter({int(k): v for k, v in json.loads(stats.read_text()).items()}) if stats.exists() else collections.Counter()
        if counts == last:
            return Passes(sum(counts.values()), sum(k * v for k, v in counts.items()), counts)
        last = counts
        time.sleep(0.3)
    raise TimeoutError(f"{stats} kept changing for 10 s after the load stopped")


def our_passes(metrics_url: str) -> Passes:
    """Our forward passes so far, from /metrics (a histogram: no sizes, their sum exact)."""
    text = httpx.get(metrics_url, timeout=10).text
    figure = {m.group(1): float(m.group(2)) for m in re.finditer(r"^perennial_server_forward_pass_rows_(count|sum) (\S+)$", text, re.M)}
    return Passes(figure["count"], figure["sum"], collections.Counter())


def measure(url: str, files: dict[str, Path], passes: Callable[[], Passes]) -> dict[str, dict[str, float]]:
    """wrk figures of each of KINDS, each with the forward passes it took: the requests a pass held on
    average and (peers) at most."""
    wrk(url, files["single"], 2)  # warm-up (BentoML's batching also tunes its wait on the first requests)
    out = {}
    for kind, _, events, _ in KINDS:
        before = passes()
        figures = wrk(url, files[kind], SECONDS)
        after = passes()
        sizes = after.sizes - before.sizes
        figures["requests_per_pass"] = (after.rows - before.rows) / max(after.count - before.count, 1) / events
        figures["largest_pass"] = max(sizes, default=0) / events
        out[kind] = figures
    return out


def check_batching(batching: bool, figures: dict[str, dict[str, float]]) -> None:
    """A peer's batching must do what it was set to: share passes among requests under load when on,
    never when off. A setting that silently does nothing is not a measurement."""
    for kind, f in figures.items():
        if batching and f["requests_per_pass"] <= 1:
            raise RuntimeError(f"batching on, yet every request of {kind} was scored in a pass of its own")
        if not batching and f["largest_pass"] > 1:
            raise RuntimeError(f"batching off, yet a pass of {kind} held {f['largest_pass']:g} requests")


def serve_peer(name: str, batching: bool, tmp: Path, model_dir: Path, files: dict[str, Path], reference: float) -> dict[str, dict[str, float]] | str:
    """One peer's figures with its batching on or off, or why there are none."""
    try:
        proc, url, ready, stats = launch(name, batching, venv(name), tmp, model_dir)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"could not be installed: {exc}"
    try:
        wait_http(ready, 180)
        gap = abs(first_score(url, files["single"]) - reference)
        if gap > 1e-5:
            raise RuntimeError(f"{name} scores the same event {gap:.2e} away from ours: not the same model")
        figures = measure(url, files, lambda: peer_passes(stats))
        check_batching(batching, figures)
        return figures
    except (TimeoutError, RuntimeError, httpx.HTTPError, subprocess.CalledProcessError) as exc:
        return f"not measured: {exc}; log in {tmp / tag(name, batching)}.log"
    finally:
        stop(proc)


def _cell(f: dict[str, float], per_request: int, peer: bool) -> str:
    unit = "requests/s" if per_request == 1 else "predictions/s"
    passes = f"{f['requests_per_pass']:.2f} requests a pass" + (f" (largest {f['largest_pass']:g})" if peer else "")
    failed = f"; {f['non_2xx']:,.0f} failed" if f["non_2xx"] else ""
    return f"{f['rps'] * per_request:,.0f} {unit}, p50 {f['p50_ms']:.2f} / p99 {f['p99_ms']:.2f} ms, {passes}{failed}"


def peer_rows(name: str, batching: bool, ours: dict[str, dict[str, float]], peer: dict[str, dict[str, float]] | str) -> list[tuple[str, str, str, str]]:
    """A peer's figures with its batching on or off, each with our figure of the same kind divided by it."""
    variant = f"{name}, batching {'on' if batching else 'off'}"
    if isinstance(peer, str):
        return [(variant, peer, "", "no")]
    rows = []
    for kind, label, per_request, target in KINDS:
        ratio = ours[kind]["rps"] / peer[kind]["rps"]
        met = ratio >= target and not peer[kind]["non_2xx"]
        rows.append((f"{variant}: {label}", f"{_cell(peer[kind], per_request, True)}; ours {ratio:.2f}x", f">= {target:g}x", "yes" if met else "no"))
    return rows


def main() -> list[tuple[str, str, str, str]]:
    """Ours is measured again before each peer (the machine's load may change in the minutes a run
    takes), and each ratio divides by that measurement."""
    tmp = Path(tempfile.mkdtemp(prefix="perennial-bench-peers-"))
    reg = registry(tmp / "registry")
    model_dir = tmp / "model"
    export_model(reg, model_dir)
    files = payloads(tmp, model_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ours = start([sys.executable, "-m", "perennial.cli", "serve"], serve_env(reg, port), tmp / "serve.log")
    rows = []
    try:
        wait_http(f"{base}/readyz")
        reference = first_score(f"{base}/v1/predict", files["ours"]["single"])
        for name in PACKAGES:
            o = measure(f"{base}/v1/predict", files["ours"], lambda: our_passes(f"{base}/metrics"))
            rows += [(f"ours, before {name}: {label}", _cell(o[kind], per_request, False), "", "") for kind, label, per_request, _ in KINDS]
            for batching in (False, True):
                rows += peer_rows(name, batching, o, serve_peer(name, batching, tmp, model_dir, files[name], reference))
    finally:
        stop(ours)
    return rows


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row))
