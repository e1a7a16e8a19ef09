"""Validation gates: may the candidate replace the incumbent?

A pure function of the two models' scores on the evaluation sets, returning a decision with its
reasons and figures. Each comparison is paired (both models on the same events) and weighed with
its uncertainty (``learners.stats``: a class-stratified bootstrap of the AP difference), so a
decision has three outcomes:

- **passed**: the candidate is sane, better on recent events with the configured confidence, and
  not worse on the retention set beyond the tolerance with that confidence;
- **failed**: there is evidence against it: non-finite or collapsed scores, too slow, worse on
  recent events, or worse on the retention set by more than the tolerance (with the confidence);
- **inconclusive**: not enough evidence either way (too few recent frauds, or intervals that
  straddle the margins). The learner then gathers more labeled events for the same candidate; an
  inconclusive candidate is neither served nor counted as a failure.

Examples
--------
A candidate that ranks 30 recent frauds better, and keeps the retention set, passes; its twin is
not called worse, it is inconclusive:

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = np.r_[np.ones(30), np.zeros(3000)].astype(int)
>>> good, weak = rng.normal(size=3030) + 2 * y, rng.normal(size=3030) + 0.5 * y
>>> kw = dict(recent_y=y, retention_y=y, candidate_retention=good, incumbent_retention=good, candidate_latency_ms=0.1)
>>> decide(candidate_recent=good, incumbent_recent=weak, **kw).outcome
'passed'
>>> decide(candidate_recent=good + rng.normal(scale=1e-3, size=3030), incumbent_recent=good, **kw).outcome
'inconclusive'
>>> decide(candidate_recent=weak, incumbent_recent=good, **kw).outcome
'failed'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import binom

from learners.operating import AlertRate, FlipRate, alert_rate, negative_flip_rate, relative_change, threshold_for_alert_rate
from learners.quality import roc_auc
from learners.stats import Comparison, average_precision, paired_ap_difference
from perennial.settings import GateSettings

CHECKS = ("finite", "score_spread", "latency", "evidence", "recent", "retention", "alert_volume", "negative_flips")
OUTCOMES = ("passed", "failed", "inconclusive")
DEFAULT_ALERT_RATE = 0.005
"""Least alert rate of the default operating point (a review queue of the top 0.5% of events)."""


GateThresholds = GateSettings
"""The gates' thresholds are the settings' ``learn.gates`` section itself: one definition per default."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    inconclusive: bool = False  # neither passed nor failed: not enough evidence

    @property
    def outcome(self) -> str:
        return "passed" if self.passed else "inconclusive" if self.inconclusive else "failed"


@dataclass(frozen=True, eq=False)
class OperatingPoint:
    """Where the fraud team alerts (served, calibrated scores), and what the swap would change there.

    The alert-volume check limits the growth of false alerts (alerts on legitimate events), the
    review load a swap adds without finding fraud: alerts on frauds rise when a candidate learns a
    new pattern, which is the point, and the false alerts may grow in proportion (the precision at
    the threshold kept: after a concept change a candidate that alerted on 38% more frauds with 38%
    more false alerts was held back for three days of the recurrence scenario); alerts on frauds the
    candidate drops are the flip check's.
    Alert counts at a 0.5% operating point are small (10 alerts among 2,000 events), so the gates
    weigh them like the AP: the events both models alert on, or either, are resampled (a Poisson
    bootstrap, the same replicates for both models), and a change fails only when it exceeds the limit
    with the gates' confidence."""

    threshold: float
    incumbent: AlertRate
    candidate: AlertRate
    flips: FlipRate
    false_alerts: tuple[int, int]  # alerts on legitimate events: incumbent, candidate
    p_volume: float  # probability that the false alerts grow by more than the limit beyond the growth of the fraud alerts
    p_flips: float  # probability that the candidate drops more than the limit of the incumbent's alerted frauds

    @classmethod
    def measure(cls, y: np.ndarray, incumbent: np.ndarray, candidate: np.ndarray, t: GateThresholds, seed: int = 0) -> OperatingPoint:
        threshold = t.operating_threshold
        if threshold is None:  # by default where the alerts are as many as the frauds (at least 0.5% of events)
            rate = t.operating_alert_rate if t.operating_alert_rate is not None else max(DEFAULT_ALERT_RATE, float(np.mean(y)))
            threshold = threshold_for_alert_rate(incumbent, rate)
        inc, cand = incumbent >= threshold, candidate >= threshold
        rng = np.random.default_rng([seed, 0xA1E7])
        either = inc | cand
        w = rng.poisson(1.0, size=(t.resamples, int(either.sum()))).astype(np.float64)
        legit = y[either] == 0
        # false alerts at the team's threshold, per fraud alerted on: more alerts on frauds is the point of
        # learning (a new pattern raises them), and a review queue that grows with the frauds it finds, at
        # the precision it had, is not the load the limit is about
        a, b = w @ (cand[either] & legit), w @ (inc[either] & legit)
        found = np.maximum(1.0, (w @ (cand[either] & ~legit) + 1) / (w @ (inc[either] & ~legit) + 1))
        p_volume = float(np.mean((a + 1) / ((b + 1) * found) - 1 > t.max_alert_volume_change))
        with np.errstate(divide="ignore", invalid="ignore"):
            alerted, dropped = (y[either] == 1) & inc[either], (y[either] == 1) & inc[either] & ~cand[either]
            gained = (y[either] == 1) & ~inc[either] & cand[either]
            lost = (w @ dropped > t.max_negative_flip_rate * (w @ alerted)) & (w @ dropped > w @ gained)
            p_flips = float(np.mean(lost)) if alerted.any() else 0.0
        return cls(threshold, alert_rate(incumbent, threshold), alert_rate(candidate, threshold),
                   negative_flip_rate(y, incumbent, candidate, threshold), (int((inc & (y == 0)).sum()), int((cand & (y == 0)).sum())),
                   p_volume, p_flips)

    def figures(self) -> dict[str, Any]:
        return {"operating_threshold": self.threshold, "incumbent_alert_rate": self.incumbent.rate, "incumbent_alerts": self.incumbent.alerts,
                "candidate_alert_rate": self.candidate.rate, "candidate_alerts": self.candidate.alerts,
                "alert_volume_change": relative_change(self.incumbent, self.candidate), "incumbent_false_alerts": self.false_alerts[0],
                "candidate_false_alerts": self.false_alerts[1], "p_alert_volume_over_limit": self.p_volume,
                "negative_flip_rate": self.flips.rate, "negative_flips": self.flips.flipped, "alerted_frauds": self.flips.alerted_frauds,
                "gained_frauds": self.flips.gained, "p_negative_flips_over_limit": self.p_flips}

    def checks(self, t: GateThresholds, y: np.ndarray, reference_fraud_rate: float | None) -> list[Check]:
        change = relative_change(self.incumbent, self.candidate)
        where = f"at the operating threshold {self.threshold:.4g}"
        moved = _fraud_rate_moved(y, reference_fraud_rate, t)
        if moved:  # calibrated scores follow the fraud rate: more fraud, more alerts; the volume is judged when it is steady
            volume = Check("alert_volume", True, f"not judged: {moved}; {self.candidate.alerts} alerts vs the incumbent's "
                           f"{self.incumbent.alerts} among {self.incumbent.events} events {where}")
        else:
            volume = Check("alert_volume", self.p_volume < t.confidence,
                       f"{self.candidate.alerts} alerts ({self.false_alerts[1]} on legitimate events) vs the incumbent's {self.incumbent.alerts} "
                       f"({self.false_alerts[0]}) among {self.incumbent.events} events {where} ({'n/a' if change is None else f'{change:+.1%}'}); "
                       f"false alerts up by over {t.max_alert_volume_change:.0%} more than the alerts on frauds with probability {self.p_volume:.2f}, "
                       f"fails at {t.confidence:.2f}")
        f = self.flips
        # losses are weighed against gains: with fewer alerts than frauds, catching one means dropping another
        flips = Check("negative_flips", self.p_flips < t.confidence,
                      f"{f.flipped} of the {f.alerted_frauds} frauds the incumbent alerts on {where} dropped "
                      f"({'n/a' if f.rate is None else f'{f.rate:.1%}'}), {f.gained} gained; over the {t.max_negative_flip_rate:.0%} limit "
                      f"(and more lost than gained) with probability {self.p_flips:.2f}, fails at {t.confidence:.2f}")
        return [volume, flips]


@dataclass(frozen=True)
class GateDecision:
    checks: tuple[Check, ...]
    metrics: dict[str, Any] = field(default_factory=dict)
    operating: OperatingPoint | None = None

    @property
    def outcome(self) -> str:
        """failed if any check failed, else inconclusive if any lacked evidence, else passed."""
        outcomes = {c.outcome for c in self.checks}
        return "failed" if "failed" in outcomes else "inconclusive" if "inconclusive" in outcomes else "passed"

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def reasons(self) -> list[str]:
        """Why it failed or was inconclusive (those checks), or why it passed (every check)."""
        held = [c for c in self.checks if not c.passed]
        return [f"{c.name}: {c.detail}" for c in (held or self.checks)]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "outcome": self.outcome, "reasons": self.reasons,
                "checks": [asdict(c) for c in self.checks], "metrics": self.metrics}


def decide(
    *,
    recent_y: np.ndarray,
    candidate_recent: np.ndarray,
    incumbent_recent: np.ndarray,
    retention_y: np.ndarray,
    candidate_retention: np.ndarray,
    incumbent_retention: np.ndarray,
    candidate_latency_ms: float,
    thresholds: GateThresholds | None = None,
    baseline_retention_ap: float | None = None,
    retention_weights: np.ndarray | None = None,
    reference_fraud_rate: float | None = None,
    concept_change: str | None = None,
    seed: int = 0,
) -> GateDecision:
    """Compare candidate and incumbent scores on recent events neither trained on and on the retention
    set (whose legitimate events may carry ``retention_weights``: sampled, weighted to the real rate).
    During a ``concept_change`` an operator confirmed (its description), the checks that hold the
    candidate to the past (retention; alert volume and flips at the incumbent's operating threshold)
    are reported but do not bind: the operator declared the past's labels, and with them the
    incumbent's alerts, out of date."""
    t = thresholds or GateThresholds()
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
    enough = positives >= t.min_recent_positives and positives < len(recent_y)
    checks.append(
        Check(
            "evidence", enough,
            f"{positives} frauds among {len(recent_y)} recent events neither model trained on (need {t.min_recent_positives})",
            inconclusive=not enough,
        )
    )

    safe = lambda s: np.nan_to_num(s, nan=0.5, posinf=1.0, neginf=0.0)  # figures even for a broken candidate
    m: dict[str, Any] = {
        "recent_events": len(recent_y),
        "recent_positives": positives,
        "retention_events": len(retention_y),
        "retention_positives": int(np.sum(retention_y)),
        "candidate_recent_auc": roc_auc(recent_y, safe(candidate_recent)),
        "incumbent_recent_auc": roc_auc(recent_y, incumbent_recent),
        "candidate_retention_auc": roc_auc(retention_y, safe(candidate_retention)),
        "incumbent_retention_auc": roc_auc(retention_y, incumbent_retention),
        "candidate_score_mean": float(np.mean(safe(all_scores))) if all_scores.size else None,
        "candidate_score_std": spread,
        "candidate_latency_ms": candidate_latency_ms,
    }

    operating = None
    if enough:
        recent = paired_ap_difference(recent_y, safe(candidate_recent), incumbent_recent, confidence=t.confidence,
                                      resamples=t.resamples, seed=seed)
        m.update(_figures("recent", recent))
        checks.append(_recent_check(recent, t))
        operating = OperatingPoint.measure(recent_y, incumbent_recent, safe(candidate_recent), t, seed)
        m.update(operating.figures())
    else:
        m["candidate_recent_ap"] = average_precision(recent_y, safe(candidate_recent))
        m["incumbent_recent_ap"] = average_precision(recent_y, incumbent_recent)
        checks.append(Check("recent", False, "not judged: too few recent frauds", inconclusive=True))

    retention = paired_ap_difference(retention_y, safe(candidate_retention), incumbent_retention, weights=retention_weights,
                                     confidence=t.confidence, resamples=t.resamples, seed=seed)
    m.update(_figures("retention", retention))
    past = [_retention_check(retention, t, baseline_retention_ap, m.get("recent_ap_difference_low", 0.0))]
    if operating is not None:
        past += operating.checks(t, np.asarray(recent_y), reference_fraud_rate)
    if concept_change:  # reported, not binding
        past = [c if c.passed else Check(c.name, True, f"{c.detail}; not binding: {concept_change}") for c in past]
    return GateDecision(checks=(*checks, *past), metrics=m, operating=operating)


def _fraud_rate_moved(y: np.ndarray, reference: float | None, t: GateThresholds) -> str | None:
    """Why the fraud rate of the recent events is not the served version's (beyond the alert-volume
    limit, with the gates' confidence), or None when it is steady (or there is no reference)."""
    if reference is None or not 0 < reference < 1:
        return None
    n, k = len(y), int(np.sum(y))
    m, tail = t.max_alert_volume_change, (1 - t.confidence) / 2
    low, high = binom.ppf(tail, n, reference / (1 + m)), binom.ppf(1 - tail, n, min(1.0, reference * (1 + m)))
    if low <= k <= high:
        return None
    return f"the fraud rate moved: {k} frauds among {n} events ({k / n:.2%}) against the served version's {reference:.2%}"


def _figures(name: str, c: Comparison) -> dict[str, Any]:
    """The comparison's figures under the names the manifest, the log and the metrics use."""
    return {
        f"candidate_{name}_ap": c.a, f"incumbent_{name}_ap": c.b, f"{name}_ap_difference": c.diff,
        f"{name}_ap_difference_low": c.low, f"{name}_ap_difference_high": c.high, f"{name}_p_better": c.p_better,
        f"{name}_frauds": c.frauds, f"{name}_events": c.events,
    }


def _interval(c: Comparison) -> str:
    return (f"candidate AP {c.a:.4f} vs incumbent {c.b:.4f}: difference {c.diff:+.4f}, {c.confidence:.0%} interval "
            f"[{c.low:+.4f}, {c.high:+.4f}] on {c.frauds} frauds among {c.events} events")


def _recent_check(c: Comparison, t: GateThresholds) -> Check:
    verdict = c.verdict(t.confidence, t.max_recent_drop, t.min_recent_gain)
    detail = f"{_interval(c)}; {verdict}"
    if verdict == "better":
        return Check("recent", True, f"{detail} (better by over {t.min_recent_gain} with {t.confidence:.0%} confidence)")
    if verdict == "worse":
        return Check("recent", False, f"{detail} (worse by over {t.max_recent_drop} with {t.confidence:.0%} confidence)")
    return Check("recent", False, f"{detail}: not enough evidence yet that it is better (P(better) {c.p_above(t.min_recent_gain):.2f}, "
                 f"need {t.confidence:.2f})", inconclusive=True)


def _retention_check(c: Comparison, t: GateThresholds, baseline: float | None, present_gain: float) -> Check:
    """Forgetting: worse on the retention set by more than the tolerance (with the confidence) fails.
    The tolerance grows with what the candidate surely gains on the present (``present_gain``, the
    lower bound of its recent AP difference, times ``forgetting_for_gain``): when the concept itself
    changed (a boundary that flips), knowing the present means unlearning part of the past. Under the
    floor, a candidate fails only if it is not above the incumbent: the floor stops drops adding up,
    and must not keep out one that recovers part of the past (after a concept returned, it held back
    candidates better than the incumbent on retention for three days of the recurrence scenario)."""
    traded = t.forgetting_for_gain * max(0.0, present_gain)
    drop = max(t.max_retention_drop, traded)
    worse = c.p_below(-drop) >= t.confidence
    detail = f"{_interval(c)} (max drop {drop:.4g} at {t.confidence:.0%} confidence"
    detail += f": {t.forgetting_for_gain:g} x the sure gain on recent events {present_gain:+.4f})" if traded > t.max_retention_drop else ")"
    if worse:
        return Check("retention", False, f"{detail}: worse, P(drop over {drop:.4g}) {c.p_below(-drop):.2f}")
    if baseline is not None:
        # small drops must not add up round after round: a floor under the pretrained version's AP
        floor = baseline - max(t.max_retention_drop_from_baseline, traded)
        detail += f" and vs the pretrained version {baseline:.4f} (floor {floor:.4f})"
        if c.a < floor and c.diff <= 0:  # one already under it that recovers part of the past is not held back
            return Check("retention", False, f"{detail}: under the floor {floor:.4f}, and under the incumbent")
    return Check("retention", True, detail)
