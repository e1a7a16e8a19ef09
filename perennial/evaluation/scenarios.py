"""The built-in scenarios of `perennial evaluate --scenario NAME`.

Each is a small, seeded generator of a pretraining history and a labeled stream that looks like one
situation of production. ``CATALOGUE`` names them with the sentence the report prints; ``build``
makes one for a seed.
"""

from __future__ import annotations

from perennial.evaluation import data

CATALOGUE: dict[str, str] = {
    "default": "the simulator's evaluation schedule: a new pattern when the stream starts, one that vanishes and recurs",
}


def build(name: str, seed: int) -> data.Scenario:
    """Scenario ``name`` of ``CATALOGUE`` for ``seed``; ValueError naming the known ones otherwise."""
    if name == "default":
        return data.simulator_scenario(seed)
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join(CATALOGUE)}")
