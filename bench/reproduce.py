"""Compare two `perennial evaluate` runs figure by figure: the evaluation issue's reproducibility check.

    python bench/reproduce.py RUN_A/results.json RUN_B/results.json [--tolerance 0.005]

Every number of both results (served figures, intervals, R matrices, curves, per-period and per-pattern
figures, summaries) is compared, except timings; exits 1 and lists the differences over the tolerance.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import orjson

TIMINGS = {"learn_s", "score_s", "wall_s", "seconds", "labels_per_s"}


def differences(a, b, path: str = "", tolerance: float = 0.005):  # any JSON
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in TIMINGS:
                continue
            if key not in a or key not in b:
                yield f"{path}/{key}: only in {'the first' if key in a else 'the second'} run"
                continue
            yield from differences(a[key], b[key], f"{path}/{key}", tolerance)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{path}: {len(a)} items against {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}[{i}]", tolerance)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if math.isnan(a) and math.isnan(b):
            return
        if not abs(a - b) <= tolerance:
            yield f"{path}: {a} against {b}"
    elif a != b:
        yield f"{path}: {a!r} against {b!r}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.add_argument("--tolerance", type=float, default=0.005)
    args = p.parse_args()
    a, b = (orjson.loads(f.read_bytes()) for f in (args.first, args.second))
    found = list(differences(a, b, tolerance=args.tolerance))
    compared = sum(1 for _ in _numbers(a))
    print(f"{compared} numbers compared, {len(found)} differ by more than {args.tolerance}")
    for line in found[:50]:
        print("  " + line)
    return 1 if found else 0


def _numbers(x):
    if isinstance(x, dict):
        for k, v in x.items():
            if k not in TIMINGS:
                yield from _numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from _numbers(v)
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield x


if __name__ == "__main__":
    sys.exit(main())
