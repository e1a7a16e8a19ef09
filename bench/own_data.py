"""What your own data and your own model cost a server (issue 16): batches of 64 and single events
through /v1/predict, alternately against four servers in one run:

- ``numbers``: the built-in MLP on the simulator's all-numeric features (numpy forward pass): the baseline;
- ``missing``: the same plus two optional numbers, absent or null in half the events (imputed, flagged);
- ``categories``: the same numbers plus three categorical features (vocabularies of 4, 20 and 50,
  unseen values in some events), embedded by the built-in network (numpy: one gather per feature);
- ``custom torch``: the baseline's features and an MLP of the same shape, but a user's module
  (bench/nets.py, named by its import name) scored by torch under inference_mode.

Each figure's ratio is to ``numbers`` measured in the same run. The networks are freshly initialised
(timing does not depend on what they learned).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson
from common import ROOT, SIM, serve_env, start, stop, wait_http, wrk

from learners.model import TabularNet, state_numpy
from learners.network import NetworkSpec, build
from learners.registry import Registry
from learners.schema import FeatureSchema
from streams.broker import free_port
from streams.simulator import FEATURES

SECONDS = 5
OPTIONAL = ("device_age_days", "account_age_days")
CATEGORIES = {"channel": 4, "country": 20, "mcc": 50}
CUSTOM = NetworkSpec("nets:build", {"hidden": 64})
CONFIGS = ("numbers", "missing", "categories", "custom torch")


def _history(n: int, rng: np.random.Generator) -> tuple[list[str], list[list]]:
    """Rows of the simulator's features plus the extra columns (as a user's table would have them)."""
    x = SIM.generate(0, 3).features[:n]
    names = [*FEATURES, *OPTIONAL, *CATEGORIES]
    rows = []
    for r in x.tolist():
        extra = [None if rng.random() < 0.5 else float(rng.gamma(2, 100)) for _ in OPTIONAL]
        cats = [f"{name}-{rng.integers(size)}" for name, size in CATEGORIES.items()]
        rows.append([*r, *extra, *cats])
    return names, rows


def _registry(path: Path, names: list[str], rows: list[list], spec: NetworkSpec | None = None) -> Path:
    table = np.array(rows, dtype=object)
    schema = FeatureSchema.fit(tuple(names), table, min_count=1)
    net = build(spec, schema) if spec else TabularNet.for_schema(schema)
    Registry(path).publish(state_numpy(net.state_dict()), schema, parent=None, **({"network": spec} if spec else {}))
    return path


def _bodies(tmp: Path, rng: np.random.Generator) -> dict[str, dict[str, Path]]:
    """Per configuration, a single event and a batch of 64 (what its schema takes)."""
    rows = SIM.generate(40, 1).features[:64].tolist()
    out: dict[str, dict[str, Path]] = {}
    for config in CONFIGS:
        events = []
        for i, r in enumerate(rows):
            features: dict[str, object] = dict(zip(FEATURES, r))
            if config == "missing":
                for name in OPTIONAL:
                    u = rng.random()  # a quarter absent, a quarter null, half present
                    if u >= 0.5:
                        features[name] = float(rng.gamma(2, 100))
                    elif u >= 0.25:
                        features[name] = None
            if config == "categories":  # one value in ten unseen
                features |= {name: f"{name}-{rng.integers(size * 11 // 10)}" for name, size in CATEGORIES.items()}
            events.append({"id": str(i), "features": features})
        out[config] = {}
        for kind, doc in (("single", events[0]), ("batch64", events)):
            out[config][kind] = tmp / f"{config.replace(' ', '-')}-{kind}.json"
            out[config][kind].write_bytes(orjson.dumps(doc))
    return out


def main() -> list[tuple[str, str, str, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="perennial-bench-own-"))
    rng = np.random.default_rng(0)
    _, rows = _history(5000, rng)
    numbers = [r[: len(FEATURES)] for r in rows]
    registries = {
        "numbers": _registry(tmp / "numbers", list(FEATURES), numbers),
        "missing": _registry(tmp / "missing", [*FEATURES, *OPTIONAL], [r[: len(FEATURES) + len(OPTIONAL)] for r in rows]),
        "categories": _registry(tmp / "categories", [*FEATURES, *CATEGORIES], [r[: len(FEATURES)] + r[-len(CATEGORIES):] for r in rows]),
        "custom torch": _registry(tmp / "custom", list(FEATURES), numbers, CUSTOM),
    }
    files = _bodies(tmp, rng)
    ports = {config: free_port() for config in CONFIGS}
    env_extra = {"PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")])}  # bench/nets.py
    servers = {config: start([sys.executable, "-m", "perennial.cli", "serve"], {**serve_env(registries[config], port), **env_extra},
                             tmp / f"serve-{port}.log") for config, port in ports.items()}
    runs: dict[tuple[str, str], list[dict[str, float]]] = {(c, k): [] for c in CONFIGS for k in ("single", "batch64")}
    try:
        for port in ports.values():
            wait_http(f"http://127.0.0.1:{port}/readyz")
        for config, port in ports.items():  # warm-up, and a check that every body is scored
            for kind in ("single", "batch64"):
                warm = wrk(f"http://127.0.0.1:{port}/v1/predict", files[config][kind], 1)
                if warm["non_2xx"]:
                    raise RuntimeError(f"{config} refused its {kind} body; see {tmp}/serve-{port}.log")
        for _ in range(2):  # alternately, so drift on this machine hits every server alike
            for config, port in ports.items():
                for kind in ("single", "batch64"):
                    runs[config, kind].append(wrk(f"http://127.0.0.1:{port}/v1/predict", files[config][kind], SECONDS))
    finally:
        for proc in servers.values():
            stop(proc)
    rps = {key: sum(r["rps"] for r in v) / len(v) for key, v in runs.items()}
    p99 = {key: max(r["p99_ms"] for r in v) for key, v in runs.items()}
    failed = sum(r["non_2xx"] for v in runs.values() for r in v)
    out = []
    for config in CONFIGS:
        single, batch = rps[config, "single"], rps[config, "batch64"] * 64
        ratio_single, ratio_batch = single / rps["numbers", "single"], batch / (rps["numbers", "batch64"] * 64)
        shown = "" if config == "numbers" else f"; {ratio_single:.2f} / {ratio_batch:.2f} of numbers"
        out.append((f"{config}: single events requests/s (p99); batches of 64 predictions/s (p99)",
                    f"{single:,.0f} ({p99[config, 'single']:.2f} ms); {batch:,.0f} ({p99[config, 'batch64']:.1f} ms){shown}",
                    "", ""))
    out.append(("failed requests", str(failed), "0", "yes" if failed == 0 else "no"))
    return out
