"""The learner: the only writer of the registry, with no broker in it (the Kafka edge is loop.py).

Each event is validated (malformed ones and duplicate ids to the dead-letter topic) and either
waits for the next round or, for a hashed share, for the held-out set the gates judge with. A round
is checked by the label-rate guard, trained (Avalanche: replay + online EWC), gated against the
served version, and published and announced if it passes. Operators' commands (rollback, pause,
resume) and the probation of a newly served version act on the same state. Everything needed to
resume is in one atomic checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from typing import Any

import numpy as np
import torch

from learners.accounting import Accounting, DeadLetter, DeadLetterJournal, EventBuffer, Undelivered
from learners.avalanche_adapter import ContinualLearner
from learners.calibration import fit_platt
from learners.challenger import Challenger
from learners.checkpoint import load_checkpoint, save_checkpoint
from learners.concept_change import MAX_ROUNDS as MAX_CONCEPT_CHANGE_ROUNDS
from learners.concept_change import ConceptChange
from learners.contradiction import ContradictionGuard, Contradictions
from learners.drift import DriftMonitor, log_loss
from learners.gates import GateDecision, GateThresholds, decide
from learners.label_guard import LabelRateGuard
from learners.metrics import LearnerMetrics
from learners.network import NetworkSpec, trainable
from learners.probation import Probation
from learners.quarantine import learnable
from learners.registry import Registry, RegistryError
from learners.retention import Keeper
from learners.scoring import ScoringModel
from learners.stats import average_precision
from perennial.cpus import limit_threads
from perennial.settings import Settings
from streams import kafka as kio
from streams.events import OTHER, EventError, LabeledEvent, parse_event

log = logging.getLogger("perennial.learn")

Emit = Callable[..., None]

DECISIONS_KEPT = 20
"""Gate decisions kept in the registry for ``GET /v1/model`` (why the last candidates were or were not served)."""
DECISION_FIGURES = (
    "recent_ap_difference", "recent_ap_difference_low", "recent_ap_difference_high", "recent_frauds", "recent_events",
    "retention_ap_difference", "retention_ap_difference_low", "retention_ap_difference_high", "retention_frauds",
    "operating_threshold", "incumbent_false_alerts", "candidate_false_alerts", "negative_flips", "alerted_frauds", "gained_frauds",
)


class Learner:
    def __init__(self, settings: Settings, metrics: LearnerMetrics, emit: Emit):
        self.settings, self.metrics, self.emit = settings, metrics, emit
        cfg = settings.learn
        self.registry = Registry(settings.registry.path)
        self.keeper = Keeper(self.registry, settings.registry, metrics)
        self.registry.remove_incomplete()
        self.keeper.maybe_prune()
        incumbent = self.registry.load_current()
        if incumbent is None:
            raise RegistryError(f"registry {settings.registry.path} has no version yet; run `perennial pretrain` first")
        self.incumbent: ScoringModel = incumbent
        self.schema = incumbent.schema
        self.retention_x, self.retention_y, self.retention_w = self.registry.load_retention()
        limit_threads(cfg.numeric_threads)
        self.adapter = ContinualLearner(trainable(incumbent), cfg)
        self.thresholds = GateThresholds(**cfg.gates.model_dump())
        n = len(self.schema.names)
        for i in self.schema.features.positions:  # each categorical feature's series exists from the start
            metrics.unseen_categories.labels(self.schema.names[i])
        self.pending = EventBuffer(n)  # to train on in the next round
        self.pending_holdout = EventBuffer(n)  # to hold out once the round is accepted
        self.holdout = EventBuffer(n, limit=cfg.holdout_size)
        self.quarantine = EventBuffer(n, limit=cfg.quarantine_max_events)  # label-rate rounds, until released
        self.released = EventBuffer(n)  # released by an operator: trained in the next round, past the label-rate guard
        self.seen: OrderedDict[str, None] = OrderedDict()
        cp = cfg.checkpoint_path
        self.journal = DeadLetterJournal(cp.with_name(f"{cp.name}.dead-letters"))
        self.undelivered = Undelivered(cp.with_name(f"{cp.name}.dead-letters-undelivered"))
        self.acct = Accounting()
        self.offsets: dict[str, int] = {}  # "topic:partition" -> next offset to read
        self.backlog = 0  # events on the topic not yet read, as the consumer last saw it
        self.failures = 0
        self.pending_since: float | None = None
        self.drift = DriftMonitor(cfg.drift_delta)
        self.reacting = 0  # rounds left of the reaction to a drift
        self.change = ConceptChange()  # a concept change an operator confirmed, while it lasts
        self.paused = False
        self.control_offsets: dict[str, int] = {}
        self.probation: Probation | None = None
        self.challengers: list[Challenger] = []  # candidates cut at successive rounds, oldest first
        self.decisions: deque[dict[str, Any]] = deque(maxlen=DECISIONS_KEPT)
        first = self.registry.manifest(self.registry.versions()[0])
        self.guard = LabelRateGuard(cfg.max_label_rate_ratio, first.get("metrics", {}).get("fraud_rate"))
        self.contradictions = ContradictionGuard(
            cfg.contradiction_score, cfg.contradiction_alpha, cfg.contradiction_odds_ratio,
            usual=_validation_contradictions(first, cfg.contradiction_score),
        )
        self.baseline_retention_ap: float | None = first.get("metrics", {}).get("retention_ap")  # a confirmed concept change moves it
        if not self._restore() and cfg.replay_seed:
            seed = self.registry.load_replay_seed()
            if seed is not None:
                self.adapter.seed_replay(self.schema.transform(seed[0]), seed[1])
        self._observe_served()
        self._observe_buffers()
        metrics.contradiction_usual_rate.set(self.contradictions.usual_rate)
        if self.baseline_retention_ap is not None:
            metrics.retention_baseline.set(self.baseline_retention_ap)

    # -- checkpoint -------------------------------------------------------------------------

    def _restore(self) -> bool:
        loaded = load_checkpoint(self.settings.learn.checkpoint_path)
        if loaded is None:
            return False
        tensors, meta = loaded
        if meta["features"] != list(self.schema.names):
            raise RegistryError("checkpoint was written for other features than the served version; remove it to start over")
        network = NetworkSpec.from_dict(meta.get("network"))  # none in checkpoints from before: the built-in network
        if not (network.builtin and self.incumbent.network.builtin) and network != self.incumbent.network:
            raise RegistryError(f"checkpoint was written for network {network.to_dict()}, the served version is "
                                f"{self.incumbent.network.to_dict()}; remove the checkpoint to start over")
        self.adapter.restore({k[8:]: v for k, v in tensors.items() if k.startswith("learner.")}, meta["learner"])
        self.pending.load(tensors["pending.x"].numpy(), tensors["pending.y"].numpy())
        self.pending_holdout.load(tensors["pending_holdout.x"].numpy(), tensors["pending_holdout.y"].numpy())
        self.guard.baseline = meta["label_rate"]
        self.contradictions.usual = tuple(meta.get("contradiction_usual", self.contradictions.usual))
        self.holdout.load(tensors["holdout.x"].numpy(), tensors["holdout.y"].numpy())
        for name, buf in (("quarantine", self.quarantine), ("released", self.released)):
            if f"{name}.y" in tensors:
                buf.load(tensors[f"{name}.x"].numpy(), tensors[f"{name}.y"].numpy())
        self.seen = OrderedDict.fromkeys(meta["seen"])
        self.acct = Accounting(**meta["accounting"])
        self.offsets = meta["offsets"]
        self.failures = meta["failures"]
        self.paused = meta.get("paused", False)
        self.control_offsets = meta.get("control_offsets", {})
        self._react(meta.get("drift_reacting", 0))
        self.change = ConceptChange.restore(meta.get("concept_change"))
        self.baseline_retention_ap = meta.get("retention_baseline", self.baseline_retention_ap)
        self.metrics.paused.set(int(self.paused))
        if self.pending:
            self.pending_since = time.monotonic()
        for i, cmeta in enumerate(meta.get("challengers", [])):
            prefix = f"challenger{i}."
            self.challengers.append(Challenger.restore(
                self.schema, {k[len(prefix):]: v.numpy() for k, v in tensors.items() if k.startswith(prefix)}, cmeta,
            ))
        self.emit("restored", offsets=self.offsets, accounting=asdict(self.acct), pending=len(self.pending))
        return True

    def checkpoint(self) -> None:
        started = time.perf_counter()
        ltensors, lmeta = self.adapter.state()
        tensors = {f"learner.{k}": v for k, v in ltensors.items()}
        for name, buf in (("pending", self.pending), ("pending_holdout", self.pending_holdout), ("holdout", self.holdout),
                          ("quarantine", self.quarantine), ("released", self.released)):
            x, y = buf.arrays()
            tensors[f"{name}.x"], tensors[f"{name}.y"] = torch.from_numpy(x), torch.from_numpy(y)
        meta: dict[str, Any] = {
            "features": list(self.schema.names),
            "network": self.incumbent.network.to_dict(),
            "learner": lmeta,
            "seen": list(self.seen),
            "accounting": asdict(self.acct),
            "offsets": self.offsets,
            "failures": self.failures,
            "incumbent": self.incumbent.version,
            "paused": self.paused,
            "label_rate": self.guard.baseline,
            "contradiction_usual": list(self.contradictions.usual),
            "control_offsets": self.control_offsets,
            "drift_reacting": self.reacting,
            "concept_change": self.change.state(),
            "retention_baseline": self.baseline_retention_ap,
        }
        meta["challengers"] = []
        for i, challenger in enumerate(self.challengers):
            ctensors, cmeta = challenger.state()
            meta["challengers"].append(cmeta)
            tensors.update(
                {f"challenger{i}.{k}": torch.from_numpy(np.array(v, order="C")) for k, v in ctensors.items()}
            )  # copies: torch refuses read-only arrays
        self.metrics.dead_letters_undelivered.set(len(self.undelivered))
        self.undelivered.checkpointed()  # first: a crash before the checkpoint may send one twice, never lose it
        save_checkpoint(self.settings.learn.checkpoint_path, tensors, meta)
        self.journal.checkpointed(self.offsets)
        self.metrics.checkpoint_duration.observe(time.perf_counter() - started)

    # -- events -----------------------------------------------------------------------------

    def handle(self, raw: bytes | None, key: bytes | None, source: tuple[str, int, int], dead_letters: kio.DeadLetterSink) -> None:
        """Account for one consumed record: it waits for a round, or it is dead-lettered with a
        reason. No record stops the learner: an unforeseen failure costs that record alone."""
        self.acct.consumed += 1
        self.metrics.consumed.inc()
        try:
            self._take(parse_event(raw, self.schema.features))
        except EventError as exc:
            self._dead_letter(raw, key, source, exc.reason, exc.message, dead_letters)
        except Exception as exc:
            log.exception("the record at %s could not be handled; it goes to the dead-letter topic", kio.record_source(*source))
            message = f"{type(exc).__name__}: {exc} (a fault of the learner, not necessarily of the event; please report it)"
            self._dead_letter(raw, key, source, "internal_error", message, dead_letters)

    def _take(self, event: LabeledEvent) -> None:
        """Buffer a valid event for the next round (or its held-out share), unless its id was seen."""
        if event.id in self.seen:
            raise EventError("duplicate_id", f"event id {event.id!r} was already received; it is not trained twice")
        self.metrics.label_delay.observe(max(0.0, time.time() - event.time))
        held_out = zlib.crc32(event.id.encode()) % 100 < self.settings.learn.holdout_percent
        buffer = self.pending_holdout if held_out else self.pending
        buffer.add(event.features, event.label)
        for i in self.schema.features.positions:  # a code OTHER: a value outside the vocabulary
            if event.features[i] == OTHER:
                self.metrics.unseen_categories.labels(self.schema.names[i]).inc()
        if buffer is self.pending and len(self.pending) == 1:
            self.pending_since = time.monotonic()
        self.seen[event.id] = None
        if len(self.seen) > self.settings.learn.dedup_window:
            self.seen.popitem(last=False)

    def _dead_letter(
        self, raw: bytes | None, key: bytes | None, source: tuple[str, int, int], reason: str, message: str,
        dead_letters: kio.DeadLetterSink,
    ) -> None:
        self.acct.dead_lettered[reason] = self.acct.dead_lettered.get(reason, 0) + 1
        self.metrics.dead_lettered.labels(reason).inc()
        letter = DeadLetter(raw, key, reason, message, source)
        if self.journal.entry(kio.record_source(*source), raw) in self.journal.delivered:  # read again after a crash
            return
        self._send(letter, dead_letters)

    def resend_dead_letters(self, dead_letters: kio.DeadLetterSink) -> None:
        """Send again the dead letters refused so far (each comes back if refused once more)."""
        for letter in self.undelivered.take():
            self._send(letter, dead_letters)

    def _send(self, letter: DeadLetter, dead_letters: kio.DeadLetterSink) -> None:
        dead_letters.send(
            letter.raw, letter.key, letter.reason, letter.message, letter.source, partial(self._delivered, letter),
        )

    def _delivered(self, letter: DeadLetter, error: Exception | None) -> None:
        """The outcome of one dead letter (on the producer's thread)."""
        origin = kio.record_source(*letter.source)
        if error is None:
            self.journal.add(self.journal.entry(origin, letter.raw))
            return
        self.metrics.dead_letter_failures.inc()
        if kio.worth_sending_again(error):  # a lost topic, a cut longer than the producer's retries, the broker's own error
            self.undelivered.add(letter)
            log.error(
                "the dead letter of %s could not be sent yet (%s: %s); it is kept and sent again at the next checkpoint",
                origin, type(error).__name__, error,
            )
            return
        log.error(
            "the dead letter of %s was refused (%s: %s) and will not be sent again; the record itself stays in its topic",
            origin, type(error).__name__, error,
        )

    def round_due(self) -> bool:
        if self.paused:
            return False
        cfg = self.settings.learn
        if len(self.pending) + len(self.released) >= self.round_size and (
            # behind: let the round grow (up to round_max_events) while unread events remain
            self.reacting > 0 or self.backlog < cfg.round_events or len(self.pending) >= cfg.round_max_events
        ):
            return True
        waited = time.monotonic() - self.pending_since if self.pending_since is not None else 0.0
        return len(self.pending) >= cfg.round_min_events and waited >= cfg.round_max_s

    # -- rounds -----------------------------------------------------------------------------

    @property
    def round_size(self) -> int:
        """Events that start a round: fewer while reacting to a drift."""
        cfg = self.settings.learn
        return max(cfg.round_min_events, int(cfg.round_events * cfg.drift_round_factor)) if self.reacting else cfg.round_events

    def _react(self, rounds: int) -> None:
        """Set the rounds left of a drift reaction and the learning rate that goes with it."""
        cfg = self.settings.learn
        self.reacting = rounds
        self.adapter.learning_rate = cfg.learning_rate * (cfg.drift_lr_factor if rounds else 1.0)
        self.metrics.drift_reacting.set(int(rounds > 0))

    def train_round(self, announce: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Train on the pending events, gate the candidate, publish it if it passes."""
        started = time.perf_counter()
        x, y = self.pending.arrays()
        hx_new, hy_new = self.pending_holdout.arrays()
        # during a confirmed concept change the label rate is learned, not enforced: a flood of one class may be the change
        quarantine = self.guard.check(np.concatenate([y, hy_new]), enforce=not self.change.active)
        self.pending.clear()
        self.pending_holdout.clear()
        self.pending_since = None
        self.acct.rounds += 1
        if quarantine and not self._learnable_burst(np.concatenate([x, hx_new]), np.concatenate([y, hy_new]), quarantine):
            return self._quarantine(np.concatenate([x, hx_new]), np.concatenate([y, hy_new]), quarantine)
        if len(self.released):  # an operator vouched for them: past the label-rate guard, into training
            rx, ry = self.released.arrays()
            x, y = np.concatenate([rx, x]), np.concatenate([ry, y])
            self.released.clear()
        scores = self.incumbent.score(x)
        contradictions = self._check_contradictions(
            np.concatenate([x, hx_new]), np.concatenate([scores, self.incumbent.score(hx_new)]), np.concatenate([y, hy_new]),
        )
        if contradictions.flagged:  # the contradicting events are kept for an operator, the rest goes on
            self._keep(np.concatenate([x, hx_new])[contradictions.suspects], np.concatenate([y, hy_new])[contradictions.suspects])
            trained, held = ~contradictions.suspects[: len(y)], ~contradictions.suspects[len(y) :]
            x, y, scores, hx_new, hy_new = x[trained], y[trained], scores[trained], hx_new[held], hy_new[held]
        for row, label in zip(hx_new, hy_new.tolist()):
            self.holdout.add(tuple(row), label)
        self.acct.held_out += len(hy_new)
        self.metrics.held_out.inc(len(hy_new))
        if not len(y):  # every event to train on contradicted the served model
            self.metrics.gate_decisions.labels("quarantined").inc()
            self.metrics.pending.set(0)
            reasons = ["contradiction: every event to train on was quarantined"]
            return {"round": self.acct.rounds, "passed": False, "outcome": "quarantined", "quarantined": True, "reasons": reasons, "metrics": {}}
        self._judge_probation(x, y, announce)
        drifts = self.drift.update(log_loss(y, scores))  # prequential: before training
        if drifts:
            self.metrics.drift_detected.inc(drifts)
            # also inside a concept change's longer reaction (keeping that one took operated recurrence from 0.843 to 0.820)
            if self.settings.learn.drift_reaction:
                self._react(self.settings.learn.drift_reaction_rounds)
            self.emit(
                "drift", round=self.acct.rounds, loss_estimation=self.drift.estimation, window_events=self.drift.width,
                reacting_rounds=self.reacting,
            )
        for challenger in self.challengers:  # neither it nor the served version has seen these events
            challenger.observe(np.concatenate([x, hx_new]), np.concatenate([y, hy_new]))
        report: dict[str, Any] = {"round": self.acct.rounds, "trained_events": len(y)}
        if self.change.active:
            report["concept_change_rounds"] = self.change.rounds_left
        if contradictions.flagged:
            report["contradiction"] = contradictions.figures()
        decision, version = self._judge_challengers(report, announce)  # before training: a reset then trains on this round
        stats = self.adapter.learn(self.schema.transform(x), y)
        if self.reacting:
            self._react(self.reacting - 1)
        if self.change.round_done():
            self._concept_change_over()
        self.acct.trained += len(y)
        cut = ScoringModel("candidate", self.schema, self.adapter.weights(), network=self.incumbent.network)
        self.challengers.append(Challenger(cut, self.acct.rounds))
        thin(self.challengers, self.settings.learn.gates.candidates)
        self._observe_round(stats, decision, version, time.perf_counter() - started)
        self.emit(
            "gate", round=self.acct.rounds, passed=report["passed"], outcome=report["outcome"], version=version,
            reasons=report["reasons"], metrics=report.get("metrics", {}), candidate=report.get("candidate"),
            train_loss=stats.train_loss, ewc_penalty=stats.ewc_penalty, trained_events=len(y), contradiction=contradictions.figures(),
        )
        return report

    def _judge_challengers(self, report: dict[str, Any], announce: Callable[[dict[str, Any]], None]) -> tuple[GateDecision | None, str | None]:
        """Judge each candidate on the events labeled since it was cut. The newest that passes is served
        (with it, every candidate cut before it is dropped: the events they would be judged on were
        trained into the new version); one that fails, or is still inconclusive with all the evidence it
        may gather, is dropped; the others gather on. Fills ``report`` with the served candidate's
        decision, else the oldest's (the most evidence); returns that decision and the version published."""
        t = self.thresholds
        ready = [c for c in self.challengers if c.frauds >= t.min_recent_positives]
        if not ready:
            oldest = self.challengers[0] if self.challengers else None
            reasons = ([f"evidence: {oldest.frauds} frauds among {len(oldest.y)} events since the oldest candidate was cut "
                        f"(need {t.min_recent_positives})"] if oldest else ["no candidate yet: one is cut from this round's weights"])
            report.update(passed=False, outcome="inconclusive" if oldest else "pending", reasons=reasons,
                          candidate=oldest.figures(self.acct.rounds) if oldest else None)
            return None, None
        judged = [(c, *self._judge(c)) for c in ready]
        passed = [j for j in judged if j[3] == "passed"]
        challenger, candidate, decision, outcome = passed[-1] if passed else judged[0]
        report.update(decision.to_dict(), outcome=outcome, candidate=challenger.figures(self.acct.rounds),
                      others=[{**c.figures(self.acct.rounds), "outcome": o} for c, _, _, o in judged if c is not challenger])
        for c, _, d, o in judged:
            self.metrics.gate_decisions.labels(o).inc()
            if o in ("failed", "no_better"):
                self.challengers.remove(c)
            if o == "failed":
                for check in d.checks:
                    if check.outcome == "failed":
                        self.metrics.gate_failures.labels(check.name).inc()
        if outcome == "no_better":
            report["reasons"] = [f"no better: still inconclusive after {challenger.frauds} frauds among {len(challenger.y)} events "
                                 f"(the most a candidate gathers); it is dropped", *report["reasons"]]
        version = None
        if passed:
            version = self._serve(challenger, candidate, decision, report, announce)
        elif any(o == "failed" for *_, o in judged):
            self.failures += 1
            if self.failures >= self.settings.learn.reset_after_failures:
                self.adapter.load_weights(self.incumbent.weights)
                self.failures = 0
                self.metrics.resets.inc()
                self.emit("reset", round=self.acct.rounds, to_version=self.incumbent.version)
        self._record_decision(report, version)
        return decision, version

    def _judge(self, challenger: Challenger) -> tuple[ScoringModel, GateDecision, str]:
        """One candidate (calibrated on its evidence), its decision and outcome."""
        candidate = self._calibrated(challenger)
        decision = decide(
            recent_y=challenger.y,
            candidate_recent=candidate.score(challenger.x),
            incumbent_recent=self.incumbent.score(challenger.x),
            retention_y=self.retention_y,
            candidate_retention=candidate.score(self.retention_x),
            incumbent_retention=self.incumbent.score(self.retention_x),
            retention_weights=self.retention_w,
            candidate_latency_ms=_latency_ms(candidate, challenger.x),
            thresholds=self.thresholds,
            baseline_retention_ap=self.baseline_retention_ap,
            reference_fraud_rate=self.incumbent.calibration.figures.get("weighted_fraud_rate"),
            concept_change=f"an operator confirmed a concept change ({self.change.rounds_left} rounds left)" if self.change.active else None,
            seed=self.acct.rounds + challenger.cut_round,
        )
        outcome = decision.outcome
        t = self.thresholds
        if outcome == "inconclusive" and challenger.exhausted(t.evidence_max_frauds, t.evidence_max_events):
            outcome = "no_better"
        return candidate, decision, outcome

    def _serve(self, challenger: Challenger, candidate: ScoringModel, decision: GateDecision, report: dict[str, Any],
               announce: Callable[[dict[str, Any]], None]) -> str:
        """Publish and announce a candidate that passed; drop the candidates cut before it."""
        manifest = self.registry.publish(
            candidate.weights, self.schema, parent=self.incumbent.version, metrics=decision.metrics,
            gate_report=report, offsets=dict(self.offsets), calibration=candidate.calibration, network=candidate.network,
        )
        parent = self.incumbent
        self.incumbent = self.registry.load(manifest["version"])
        s = self.settings.learn
        self.probation = Probation(self.incumbent, parent, s.gates.min_recent_positives, s.rollback_margin, s.gates.confidence)
        self.acct.published += 1
        self.change.published += self.change.active
        self.failures = 0
        self.challengers = [c for c in self.challengers if c.cut_round > challenger.cut_round]
        announce(manifest)
        self.keeper.maybe_prune()
        return manifest["version"]

    def _record_decision(self, report: dict[str, Any], version: str | None) -> None:
        """Keep the decision with its figures where ``GET /v1/model`` reads it (a write failure is logged:
        it never stops a round)."""
        figures = report.get("metrics", {})
        self.decisions.append({
            "time": time.time(), "round": report["round"], "outcome": report["outcome"], "published": version,
            "served": self.incumbent.version, "candidate": report.get("candidate"), "reasons": report["reasons"],
            "figures": {k: figures[k] for k in DECISION_FIGURES if k in figures},
        })
        try:
            self.registry.save_decisions(list(self.decisions))
        except OSError as exc:
            log.error("the gate decisions could not be written to %s: %s", self.registry.decisions_path, exc)

    @staticmethod
    def _calibrated(challenger: Challenger) -> ScoringModel:
        """The candidate with a calibration fitted on its evidence (events it never trained on), so that
        its served scores are fraud probabilities like the incumbent's."""
        y, raw = challenger.y, challenger.model.score_raw(challenger.x)
        if not 0 < y.sum() < len(y) or not np.isfinite(raw).all():  # nothing to fit on, or a broken candidate the gates reject
            return challenger.model
        return dataclasses.replace(challenger.model, calibration=fit_platt(raw, y))

    def _learnable_burst(self, x: np.ndarray, y: np.ndarray, reason: str) -> bool:
        """A round the label-rate guard flagged goes on to training when its labels prove learnable
        (``learners.quarantine``): a genuine burst, not random fake labels."""
        found = learnable(self.incumbent, x, y, confidence=self.thresholds.confidence, seed=self.acct.rounds)
        if found.released:
            self.metrics.quarantine_released.labels("automatic").inc(len(y))
            self.emit("release", round=self.acct.rounds, trigger="automatic", guard=reason, **found.figures)
        return found.released

    def _quarantine(self, x: np.ndarray, y: np.ndarray, reason: str) -> dict[str, Any]:
        """Keep a round's events out of training and of the held-out set, until an operator releases
        them; count and report it."""
        events = len(y)
        self._keep(x, y)
        self.acct.quarantined += events
        self.metrics.quarantined.labels("label_rate").inc(events)
        self.metrics.gate_decisions.labels("quarantined").inc()
        self.emit("quarantine", round=self.acct.rounds, events=events, reason="label_rate", detail=reason)
        return {"round": self.acct.rounds, "passed": False, "outcome": "quarantined", "quarantined": True,
                "reasons": [f"label_rate: {reason}"], "metrics": {}}

    def _check_contradictions(self, x: np.ndarray, scores: np.ndarray, y: np.ndarray) -> Contradictions:
        """Test the round (trained and held-out shares) for labels contradicting the served model; count
        and report a flagged round's contradicting events, which are then neither trained on nor held out.

        A version on probation is not trusted yet: an event counts as called fraud only if its parent
        calls it fraud too, so the labels that show a bad new version wrong reach its probation."""
        if self.probation is not None:
            scores = np.minimum(scores, self.probation.parent.score(x))
        found = self.contradictions.check(scores, y, enforce=not self.change.active)
        if found.rate is not None:
            self.metrics.contradiction_rate.set(found.rate)
        self.metrics.contradiction_usual_rate.set(self.contradictions.usual_rate)
        if found.flagged:
            self.acct.quarantined += found.contradicted
            self.metrics.quarantined.labels("contradiction").inc(found.contradicted)
            self.emit(
                "quarantine", round=self.acct.rounds, events=found.contradicted, reason="contradiction",
                alpha=self.contradictions.alpha, score=self.contradictions.score, **found.figures(),
            )
        return found

    # -- operations ---------------------------------------------------------------------------

    def _judge_probation(self, x: np.ndarray, y: np.ndarray, announce: Callable[[dict[str, Any]], None]) -> None:
        """Roll back a newly served version that does worse than its parent on events labeled since."""
        if self.probation is None:
            return
        verdict = self.probation.observe(x, y)
        if verdict is None:
            return
        self.probation = None
        self.emit("probation", rollback=verdict.rollback, **verdict.figures)
        if verdict.rollback:
            self.rollback(verdict.figures["parent"], "automatic", verdict.reason, announce)

    def rollback(self, target: str, trigger: str, reason: str, announce: Callable[[dict[str, Any]], None]) -> None:
        """Serve ``target`` again and train on from it; recorded in the registry's history."""
        model = self.registry.load(target, expect_features=self.schema.names)
        if not same_network(model, self.incumbent):
            raise RegistryError(f"version {target} is network {model.network.to_dict()}; the learner trains "
                                f"{self.incumbent.network.to_dict()}: it rolls back to versions of its own network only")
        previous = self.incumbent.version
        self.registry.set_current(target, reason=reason, trigger=trigger)
        self.incumbent = model
        self.adapter.load_weights(model.weights)
        self.failures = 0
        self.probation = None
        self.metrics.rollbacks.labels(trigger).inc()
        self._observe_served()
        announce(model.manifest)
        self.emit("rollback", trigger=trigger, from_version=previous, to_version=target, reason=reason)

    def apply(self, cmd: dict[str, Any], consumer, announce: Callable[[dict[str, Any]], None]) -> None:
        """Apply an operator command from the control topic."""
        action = cmd["action"]
        if action == "release_quarantine":
            self.release_quarantine(cmd)
            return
        if action == "concept_change":
            self.confirm_concept_change(cmd)
            return
        if action == "rollback":
            target = cmd.get("version") or self.incumbent.manifest.get("parent")
            if not target or target == self.incumbent.version:
                self.emit("command", id=cmd.get("id"), action=action, applied=False, reason="no other version to roll back to")
                return
            try:
                self.rollback(target, "manual", cmd.get("reason") or "operator rollback", announce)
            except RegistryError as exc:
                self.emit("command", id=cmd.get("id"), action=action, applied=False, reason=str(exc))
                return
            action = "pause"  # a manual rollback also pauses learning until an operator resumes it
        self.paused = action == "pause"
        (consumer.pause if self.paused else consumer.resume)(*consumer.assignment())
        self.metrics.paused.set(int(self.paused))
        self.emit("command", id=cmd.get("id"), action=cmd["action"], applied=True, paused=self.paused)

    def _keep(self, x: np.ndarray, y: np.ndarray) -> None:
        """Keep quarantined events (in the checkpoint) until an operator releases them."""
        for row, label in zip(x, y.tolist()):
            self.quarantine.add(tuple(row), label)

    def confirm_concept_change(self, cmd: dict[str, Any]) -> None:
        """An operator confirmed that the labels changed meaning (not poisoning): the kept events are
        released now and, while the change lasts (``learners.concept_change``), neither guard
        quarantines, the checks that hold a candidate to the past do not bind, the learner reacts as
        to a drift and, with ``concept_change_forget``, it forgets its replay memory and EWC importances."""
        cfg = self.settings.learn
        rounds = cmd.get("rounds") or cfg.concept_change_rounds
        if not isinstance(rounds, int) or not 1 <= rounds <= MAX_CONCEPT_CHANGE_ROUNDS:  # the admin route checks; the topic may hold anything
            self.emit("command", id=cmd.get("id"), action=cmd["action"], applied=False,
                      reason=f"rounds must be a whole number from 1 to {MAX_CONCEPT_CHANGE_ROUNDS}, not {rounds!r}")
            return
        self.change.start(rounds)
        if cfg.concept_change_forget:
            self.adapter.forget()
        if cfg.drift_reaction:
            self._react(max(self.reacting, rounds))
        self.failures = 0
        self.release_quarantine({**cmd, "action": "concept_change"}, trigger="concept_change")
        self.emit("concept_change", id=cmd.get("id"), rounds=rounds, forgot=cfg.concept_change_forget, reason=cmd.get("reason"))

    def _concept_change_over(self) -> None:
        """The retention floor starts from what the served version keeps of the past (it moved on from
        the pretrained version by consent)."""
        served = average_precision(self.retention_y, self.incumbent.score(self.retention_x), self.retention_w)
        if served is not None:
            self.baseline_retention_ap = served
            self.metrics.retention_baseline.set(served)
        self.emit("concept_change_over", round=self.acct.rounds, served=self.incumbent.version, published=self.change.published,
                  retention_baseline=self.baseline_retention_ap)

    def release_quarantine(self, cmd: dict[str, Any], trigger: str = "operator") -> None:
        """Move the kept quarantined events to the next round's (through its contradiction check; they
        are not tested against the label rate again). Their events leave ``quarantined`` for
        ``pending`` (the released buffer counts there), so the accounting still balances."""
        x, y = self.quarantine.arrays()
        self.quarantine.clear()
        for row, label in zip(x, y.tolist()):
            self.released.add(tuple(row), label)
        if len(y) and self.pending_since is None:
            self.pending_since = time.monotonic()
        self.acct.quarantined -= len(y)
        self.metrics.quarantine_released.labels(trigger).inc(len(y))
        self.emit("command", id=cmd.get("id"), action=cmd["action"], applied=True, released=len(y), frauds=int(y.sum()),
                  reason=cmd.get("reason"))

    def _observe_round(self, stats, decision, version, seconds) -> None:
        m = self.metrics
        m.trained.inc(stats.events)
        m.rounds.inc()
        m.round_duration.observe(seconds)
        m.last_round.set(time.time())
        m.drift_estimation.set(self.drift.estimation)
        m.drift_width.set(self.drift.width)
        m.train_loss.set(stats.train_loss)
        m.ewc_penalty.set(stats.ewc_penalty)
        m.replay_size.set(stats.replay_size)
        m.replay_positive_ratio.set(stats.replay_positives / max(stats.replay_size, 1))
        if self.challengers:
            m.evidence_events.set(len(self.challengers[0].y))
            m.evidence_frauds.set(self.challengers[0].frauds)
        figures = decision.metrics if decision is not None else {}
        for model in ("candidate", "incumbent"):
            for name in ("recent", "retention"):
                for gauge, figure in ((m.ap, "ap"), (m.auc, "auc")):
                    value = figures.get(f"{model}_{name}_{figure}")
                    if value is not None:
                        gauge.labels(model, name).set(value)
        if decision is not None and decision.operating is not None:
            op = decision.operating
            m.observe_operating_point(op.threshold, op.incumbent, op.candidate, op.flips)
        for name in ("recent", "retention"):
            if f"{name}_ap_difference" in figures:
                for bound, key in (("low", "_low"), ("estimate", ""), ("high", "_high")):
                    m.ap_difference.labels(name, bound).set(figures[f"{name}_ap_difference{key}"])
                m.gate_frauds.labels(name).set(figures[f"{name}_frauds"])
        if version:
            m.published.inc()
            self._observe_served()

    def _observe_buffers(self) -> None:
        """Export the buffers' sizes as they are when scraped. Events restored from the checkpoint
        count as consumed by this process, so that its counters balance:
        consumed == trained + held_out + quarantined + pending + pending_holdout + dead_lettered."""
        self.metrics.pending.set_function(lambda: len(self.pending) + len(self.released))
        self.metrics.concept_change.set_function(lambda: self.change.rounds_left)
        self.metrics.pending_holdout.set_function(lambda: len(self.pending_holdout))
        self.metrics.quarantine_kept.set_function(lambda: len(self.quarantine))
        self.metrics.consumed.inc(len(self.pending) + len(self.pending_holdout) + len(self.released))

    def _observe_served(self) -> None:
        self.metrics.version_number.set(int(self.incumbent.version[1:]))
        ece = self.incumbent.calibration.figures.get("ece_after")
        if ece is not None:  # on the events its calibration was fitted on
            self.metrics.served_calibration_error.set(ece)
        self.metrics.last_publish.set(self.incumbent.manifest.get("created_ts", 0.0))


def thin(challengers: list[Challenger], keep: int) -> None:
    """Keep at most ``keep`` candidates, spaced roughly geometrically in age: the oldest (the most
    evidence: where fraud is rare only an old candidate has enough frauds to be judged) and the
    newest always stay, and an interior one whose neighbours are closest together goes first. So
    a candidate cut before a change (a burst, a returning concept) does not hold up the judging of
    one that learned it, and one is always old enough to be judged.

    >>> from types import SimpleNamespace as C
    >>> cands = []
    >>> for r in range(1, 21):
    ...     cands.append(C(cut_round=r)); thin(cands, 4)
    >>> [c.cut_round for c in cands]
    [1, 11, 17, 20]
    """
    while len(challengers) > keep:
        if keep < 3:
            del challengers[1 if keep == 2 else -1]
            continue
        now = challengers[-1].cut_round
        # the gap an interior candidate's removal would leave, relative to its older neighbour's age
        gaps = [(challengers[i + 1].cut_round - challengers[i - 1].cut_round) / (now - challengers[i - 1].cut_round + 1)
                for i in range(1, len(challengers) - 1)]
        del challengers[1 + int(np.argmin(gaps))]


def same_network(a: ScoringModel, b: ScoringModel) -> bool:
    """Whether the weights of ``a`` load into the network trained from ``b``: the same spec or, for the
    built-in network (shaped after its weights, whatever its factory's arguments), weights of the same shapes."""
    if a.network.builtin and b.network.builtin:
        return {k: v.shape for k, v in a.weights.items()} == {k: v.shape for k, v in b.weights.items()}
    return a.network == b.network


def _validation_contradictions(first: dict[str, Any], score: float) -> tuple[float, float]:
    """Events the pretrained version called fraud in its validation data at ``score``, and those of them
    labeled legitimate; none if it was pretrained at another score (or before they were recorded)."""
    m = first.get("metrics", {})
    if m.get("contradiction_score") != score:
        return (0.0, 0.0)
    return (float(m["validation_called_fraud"]), float(m["validation_contradicted"]))


def _latency_ms(model: ScoringModel, x: np.ndarray, n: int = 200) -> float:
    """Median time to score one event alone, in milliseconds."""
    rows = x[:n] if len(x) else np.zeros((1, len(model.schema.names)), np.float32)
    times = []
    for row in rows:
        t = time.perf_counter()
        model.score(row[None, :])
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)
