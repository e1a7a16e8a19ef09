"""Peers: the same model and events served by LitServe, MLServer and BentoML, each installed by this
script in its own throwaway virtual environment (not a project dependency), against /v1/predict in
the same run, with the same load tool and one worker each.

Each peer gets the events in its own native request format: LitServe the same JSON bodies as ours,
BentoML the same events under {"events": [...]}, MLServer a V2-protocol FP32 tensor of the same
feature rows. All score with the same numpy arithmetic (bench/peers/peer_model.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
import orjson

from common import ROOT, SIM, registry, serve_env, start, stop, wait_http, wrk  # noqa: I001
from learners.registry import Registry
from streams.broker import free_port
from streams.simulator import FEATURES

SECONDS = 10
VENVS = Path(os.environ.get("PERENNIAL_PEERS_DIR", Path(tempfile.gettempdir()) / "perennial-peers"))
PACKAGES = {"litserve": ["litserve"], "mlserver": ["mlserver"], "bentoml": ["bentoml"]}


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
    model = Registry(reg).load_current()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "schema.json").write_text(json.dumps(model.schema.to_dict()))
    layers = sorted({k.rsplit(".", 1)[0] for k in model.weights}, key=lambda k: int(k.split(".")[1]))
    arrays = {}
    for i, name in enumerate(layers):
        arrays[f"w{i}"] = np.ascontiguousarray(model.weights[f"{name}.weight"].T)
        arrays[f"b{i}"] = model.weights[f"{name}.bias"]
    np.savez(folder / "weights.npz", **arrays)


def payloads(tmp: Path, model_dir: Path) -> dict[str, dict[str, Path]]:
    rows = SIM.generate(40, 1).features[:64].tolist()
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


def launch(name: str, python: Path, tmp: Path, model_dir: Path) -> tuple[subprocess.Popen, str, str]:
    """Start a peer on a free port; returns the process, its prediction URL and a URL to wait on."""
    port = free_port()
    apps = ROOT / "bench" / "peers"
    env = {"PEER_MODEL_DIR": str(model_dir), "PEER_PORT": str(port), "PYTHONPATH": str(apps)}
    base = f"http://127.0.0.1:{port}"
    if name == "litserve":
        proc = start([str(python), str(apps / "litserve_app.py")], env, tmp / f"{name}.log")
        return proc, f"{base}/predict", f"{base}/health"
    if name == "bentoml":
        cmd = [str(python), "-m", "bentoml", "serve", "bentoml_app:Fraud", "--port", str(port), "--working-dir", str(apps)]
        return start(cmd, env, tmp / f"{name}.log"), f"{base}/predict", f"{base}/readyz"
    repo = tmp / "mlserver-repo"
    (repo / "fraud").mkdir(parents=True, exist_ok=True)
    (repo / "settings.json").write_text(json.dumps({"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": 0}))
    (repo / "fraud" / "model-settings.json").write_text(json.dumps({"name": "fraud", "implementation": "mlserver_app.FraudModel"}))
    cmd = [str(python), "-m", "mlserver.cli.main", "start", str(repo)]
    return start(cmd, env, tmp / f"{name}.log"), f"{base}/v2/models/fraud/infer", f"{base}/v2/health/ready"


def first_score(url: str, body: Path) -> float:
    """The fraud probability a server answers for the single-event body (each in its own format)."""
    doc = httpx.post(url, content=body.read_bytes(), headers={"Content-Type": "application/json"}, timeout=30).json()
    if "outputs" in doc:  # V2 inference protocol
        return float(doc["outputs"][0]["data"][0])
    items = doc["predictions"] if isinstance(doc, dict) and "predictions" in doc else doc
    item = items[0] if isinstance(items, list) else items
    return float(item.get("fraud_probability", item.get("score")))


def measure(url: str, files: dict[str, Path]) -> dict[str, dict[str, float]]:
    wrk(url, files["single"], 2)  # warm-up
    return {"single": wrk(url, files["single"], SECONDS), "batch64": wrk(url, files["batch64"], SECONDS)}


def main() -> list[tuple[str, str, str, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="perennial-bench-peers-"))
    reg = registry(tmp / "registry")
    model_dir = tmp / "model"
    export_model(reg, model_dir)
    files = payloads(tmp, model_dir)
    results: dict[str, dict[str, dict[str, float]] | str] = {}
    port = free_port()
    env = serve_env(reg, port)
    ours = start([sys.executable, "-m", "perennial.cli", "serve"], env, tmp / "serve.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        reference = first_score(f"http://127.0.0.1:{port}/v1/predict", files["ours"]["single"])
        results["ours"] = measure(f"http://127.0.0.1:{port}/v1/predict", files["ours"])
    finally:
        stop(ours)
    for name in PACKAGES:
        try:
            python = venv(name)
            proc, url, ready = launch(name, python, tmp, model_dir)
        except (subprocess.CalledProcessError, OSError) as exc:
            results[name] = f"could not be installed: {exc}"
            continue
        try:
            wait_http(ready, 180)
            gap = abs(first_score(url, files[name]["single"]) - reference)
            if gap > 1e-5:
                raise RuntimeError(f"{name} scores the same event {gap:.2e} away from ours: not the same model")
            results[name] = measure(url, files[name])
        except (TimeoutError, RuntimeError, httpx.HTTPError, subprocess.CalledProcessError) as exc:
            results[name] = f"did not serve: {exc}; log in {tmp / (name + '.log')}"
        finally:
            stop(proc)
    rows = []
    o = results["ours"]
    rows.append(("ours: single requests/s (p99); batches of 64 predictions/s", f"{o['single']['rps']:,.0f} ({o['single']['p99_ms']:.2f} ms); {o['batch64']['rps'] * 64:,.0f}", "", ""))
    for name in PACKAGES:
        r = results[name]
        if isinstance(r, str):
            rows.append((f"{name}", r, "", "no"))
            continue
        failed = sum(v["non_2xx"] for v in r.values())
        single = o["single"]["rps"] / r["single"]["rps"]
        batch = o["batch64"]["rps"] / r["batch64"]["rps"]
        rows.append((f"{name}: single requests/s (p99); batches of 64 predictions/s", f"{r['single']['rps']:,.0f} ({r['single']['p99_ms']:.2f} ms); {r['batch64']['rps'] * 64:,.0f}"
                     + (f"; {failed} failed" if failed else ""), "", ""))
        rows.append((f"ours vs {name}: single events", f"{single:.2f}x", ">= 1.5x", "yes" if single >= 1.5 and not failed else "no"))
        rows.append((f"ours vs {name}: batches of 64", f"{batch:.2f}x", ">= 1.0x", "yes" if batch >= 1.0 and not failed else "no"))
    return rows


if __name__ == "__main__":
    for row in main():
        print(" | ".join(row))
