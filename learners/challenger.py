"""The candidate being judged, and the evidence gathered for it.

A candidate is cut from the learner's weights after a round and frozen. Every labeled event that
arrives after the cut was seen by neither the candidate nor the served version, whichever share
(trained or held out) it then goes to: it is evidence for a paired comparison of the two. So a
candidate is judged on the present (the events labeled since it was cut, not a stale window of
held-out events), on every newly labeled event rather than a tenth of them, and it keeps gathering
until the comparison is conclusive: with 0.1% fraud, a round of 2,048 events holds two frauds, and a
decision waits for ``min_recent_positives`` of them.

Meanwhile the learner trains on: when the candidate is decided (served, rejected, or dropped as no
better after ``evidence_max_frauds``), the next one is cut from the weights of that moment.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from learners.network import NetworkSpec
from learners.scoring import ScoringModel


class Challenger:
    def __init__(self, model: ScoringModel, cut_round: int):
        self.model = model
        self.cut_round = cut_round
        n = len(model.schema.names)
        self.x, self.y = np.zeros((0, n), np.float32), np.zeros(0, np.int64)

    def observe(self, x: np.ndarray, y: np.ndarray) -> None:
        """Labeled events that arrived since the cut (neither model trained on them)."""
        self.x = np.concatenate([self.x, np.asarray(x, np.float32)])
        self.y = np.concatenate([self.y, np.asarray(y, np.int64)])

    @property
    def frauds(self) -> int:
        return int(self.y.sum())

    def exhausted(self, max_frauds: int, max_events: int) -> bool:
        """Enough evidence gathered that an inconclusive comparison means "no better"."""
        return self.frauds >= max_frauds or len(self.y) >= max_events

    def figures(self, round_now: int) -> dict[str, Any]:
        return {"cut_round": self.cut_round, "rounds_judged": round_now - self.cut_round,
                "evidence_events": len(self.y), "evidence_frauds": self.frauds}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Tensors and metadata for the learner's checkpoint."""
        tensors = {f"weights.{k}": v for k, v in self.model.weights.items()}
        return {**tensors, "x": self.x, "y": self.y}, {"cut_round": self.cut_round, "network": self.model.network.to_dict()}

    @classmethod
    def restore(cls, schema, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> Challenger:
        weights = {k[len("weights."):]: np.array(v) for k, v in tensors.items() if k.startswith("weights.")}
        network = NetworkSpec.from_dict(meta.get("network"))  # none in checkpoints from before: the built-in network
        challenger = cls(ScoringModel("candidate", schema, weights, network=network), meta["cut_round"])
        challenger.observe(tensors["x"], tensors["y"])
        return challenger
