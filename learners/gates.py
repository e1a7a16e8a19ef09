"""Validation gates: may the candidate replace the incumbent?

A pure function of the two models' scores on the evaluation sets, returning a decision with its
reasons and figures. The candidate must

- give finite scores that are not collapsed (sanity),
- score each event within the latency budget (sanity),
- be judged on enough recent frauds (evidence),
- detect recent fraud at least as well as the incumbent (adaptation: recent held-out events that
  neither model trained on),
- not lose more than a set amount of average precision on the retention set (forgetting).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from learners.quality import average_precision, roc_auc


CHECKS = ("finite", "score_spread", "latency", "evidence", "recent", "retention")


@dataclass(frozen=True)
class GateThresholds:
    max_retention_drop: float = 0.02
    max_retention_drop_from_baseline: float = 0.05
    min_recent_gain: float = -0.01
    min_recent_positives: int = 5
    min_score_std: float = 1e-3
    max_latency_ms: float = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    checks: tuple[Check, ...]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def reasons(self) -> list[str]:
        """Why it failed (the failed checks), or why it passed (every check)."""
        failed = [c for c in self.checks if not c.passed]
        return [f"{c.name}: {c.detail}" for c in (failed or self.checks)]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks], "metrics": self.metrics}


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def decide(
    *,
    recent_y: np.ndarray,
    candidate_recent: np.ndarray,
    incumbent_recent: np.ndarray,
    retention_y: np.ndarray,
    candidate_retention: np.ndarray,
    incumbent_retention: np.ndarray,
    candidate_latency_ms: float,
    thresholds: GateThresholds = GateThresholds(),
    baseline_retention_ap: float | None = None,
) -> GateDecision:
    """Compare candidate and incumbent scores on the recent held-out set and the retention set."""
    t = thresholds
    checks: list[Check] = []
    all_scores = np.concatenate([candidate_recent, candidate_retention])

    finite = bool(np.isfinite(all_scores).all())
    checks.append(Check("finite", finite, "all scores finite" if finite else "candidate produced NaN or infinite scores"))
    finite_scores = all_scores[np.isfinite(all_scores)]
    spread = float(np.std(finite_scores)) if finite_scores.size else 0.0
    checks.append(
        Check("score_spread", spread >= t.min_score_std, f"score std {spread:.2e} (minimum {t.min_score_std:.0e})")
    )
    checks.append(
        Check(
            "latency",
            candidate_latency_ms <= t.max_latency_ms,
            f"{candidate_latency_ms:.3f} ms per event (budget {t.max_latency_ms} ms)",
        )
    )

    positives = int(np.sum(recent_y))
    checks.append(
        Check(
            "evidence",
            positives >= t.min_recent_positives,
            f"{positives} frauds among {len(recent_y)} recent held-out events (need {t.min_recent_positives})",
        )
    )

    safe = lambda s: np.nan_to_num(s, nan=0.5, posinf=1.0, neginf=0.0)  # noqa: E731 - figures even for a broken candidate
    m = {
        "recent_events": int(len(recent_y)),
        "recent_positives": positives,
        "candidate_recent_ap": average_precision(recent_y, safe(candidate_recent)),
        "incumbent_recent_ap": average_precision(recent_y, incumbent_recent),
        "candidate_recent_auc": roc_auc(recent_y, safe(candidate_recent)),
        "incumbent_recent_auc": roc_auc(recent_y, incumbent_recent),
        "candidate_retention_ap": average_precision(retention_y, safe(candidate_retention)),
        "incumbent_retention_ap": average_precision(retention_y, incumbent_retention),
        "candidate_retention_auc": roc_auc(retention_y, safe(candidate_retention)),
        "incumbent_retention_auc": roc_auc(retention_y, incumbent_retention),
        "candidate_score_mean": float(np.mean(safe(all_scores))) if all_scores.size else None,
        "candidate_score_std": spread,
        "candidate_latency_ms": candidate_latency_ms,
    }

    cand, inc = m["candidate_recent_ap"], m["incumbent_recent_ap"]
    ok = cand is not None and inc is not None and cand >= inc + t.min_recent_gain
    checks.append(Check("recent", ok, f"candidate AP {_fmt(cand)} vs incumbent {_fmt(inc)} (min gain {t.min_recent_gain})"))

    cand, inc = m["candidate_retention_ap"], m["incumbent_retention_ap"]
    ok = cand is not None and inc is not None and cand >= inc - t.max_retention_drop
    detail = f"candidate AP {_fmt(cand)} vs incumbent {_fmt(inc)} (max drop {t.max_retention_drop})"
    if baseline_retention_ap is not None:
        # small drops must not add up round after round: a floor under the pretrained version's AP
        ok = ok and cand >= baseline_retention_ap - t.max_retention_drop_from_baseline
        detail += f" and vs the pretrained version {_fmt(baseline_retention_ap)} (max drop {t.max_retention_drop_from_baseline})"
    checks.append(Check("retention", ok, detail))

    return GateDecision(passed=all(c.passed for c in checks), checks=tuple(checks), metrics=m)
