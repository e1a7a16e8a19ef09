"""Weights and checkpoints are safetensors only: no code path can unpickle anything."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = re.compile(r"\bimport pickle\b|\bpickle\.loads?\(|torch\.load\(|allow_pickle\s*=\s*True|joblib\.load\(")


def test_no_pickle_in_the_product():
    sources = [p for d in ("service", "learners", "streams", "perennial") for p in (ROOT / d).rglob("*.py")]
    assert len(sources) > 20
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in sources for i, line in enumerate(p.read_text().splitlines(), 1) if FORBIDDEN.search(line)]
    assert not offenders, offenders
