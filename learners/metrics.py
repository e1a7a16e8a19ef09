"""Prometheus metrics of `perennial learn`, on their own CollectorRegistry (base units, _total counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from learners.gates import CHECKS
from learners.operating import AlertRate, FlipRate
from streams.events import REASONS

QUARANTINE_REASONS = ("label_rate", "contradiction")


class LearnerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.consumed = Counter(
            "perennial_learner_events_consumed_total",
            "Labeled events read from the topic (from a start, the restored pending events included): "
            "trained + held out + quarantined + pending + pending held-out + dead-lettered.", registry=r,
        )
        self.trained = Counter("perennial_learner_events_trained_total", "Labeled events trained on.", registry=r)
        self.held_out = Counter("perennial_learner_events_held_out_total", "Labeled events kept out of training to judge candidates.", registry=r)
        self.quarantined = Counter(
            "perennial_learner_events_quarantined_total",
            "Events neither trained on nor held out, by reason: label_rate (a round's implausible fraud rate), "
            "contradiction (labeled legitimate where the served model calls fraud, in a round with implausibly many).",
            ["reason"], registry=r,
        )
        for reason in QUARANTINE_REASONS:
            self.quarantined.labels(reason)
        self.contradiction_rate = Gauge(
            "perennial_learner_contradiction_rate",
            "Share of the last round's events the served model calls fraud (score at least learn.contradiction_score) labeled legitimate.",
            registry=r,
        )
        self.contradiction_usual_rate = Gauge(
            "perennial_learner_contradiction_usual_rate",
            "The usual share of events the served model calls fraud labeled legitimate, which rounds are tested against.",
            registry=r,
        )
        self.dead_lettered = Counter(
            "perennial_learner_events_dead_lettered_total",
            "Events sent to the dead-letter topic by reason: malformed, a duplicate id, or an internal error.", ["reason"], registry=r,
        )
        self.dead_letter_failures = Counter(
            "perennial_learner_dead_letter_failures_total",
            "Dead letters the producer or the broker refused: sent again when the refusal is retriable "
            "(a lost topic, a long cut), else logged (the record stays in its topic).",
            registry=r,
        )
        self.dead_letters_undelivered = Gauge(
            "perennial_learner_dead_letters_undelivered", "Dead letters refused for now, kept and sent again at each checkpoint.", registry=r,
        )
        for reason in REASONS:
            self.dead_lettered.labels(reason)
        self.unseen_categories = Counter(
            "perennial_learner_unseen_categories_total",
            "Labeled events whose categorical feature held a value outside its vocabulary (learned as 'other'), by feature.",
            ["feature"], registry=r,
        )
        self.label_delay = Histogram(
            "perennial_learner_label_delay_seconds", "Event time to consumption of its label.", registry=r,
            buckets=(60, 600, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400),
        )
        self.rounds = Counter("perennial_learner_rounds_total", "Training rounds completed.", registry=r)
        self.round_duration = Histogram(
            "perennial_learner_round_duration_seconds", "Duration of one round (training and gates).", registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.train_loss = Gauge("perennial_learner_train_loss", "Mean cross-entropy of the last round.", registry=r)
        self.ewc_penalty = Gauge("perennial_learner_ewc_penalty", "Mean online-EWC penalty added to the loss in the last round.", registry=r)
        self.registry_versions = Gauge("perennial_registry_versions", "Versions in the registry after the last retention pass.", registry=r)
        self.registry_bytes = Gauge("perennial_registry_bytes", "Bytes of the registry's versions after the last retention pass.", registry=r)
        self.registry_removed = Counter("perennial_registry_versions_removed_total",
                                        "Versions removed by the retention policy (registry.keep_last, keep_within_s, max_versions).", registry=r)
        self.replay_size = Gauge("perennial_learner_replay_events", "Events in the replay memory.", registry=r)
        self.replay_positive_ratio = Gauge("perennial_learner_replay_positive_ratio", "Share of frauds in the replay memory.", registry=r)
        self.gate_decisions = Counter("perennial_learner_gate_decisions_total", "Gate decisions by result.", ["result"], registry=r)
        self.gate_failures = Counter("perennial_learner_gate_failures_total", "Failed gate checks by check.", ["check"], registry=r)
        for result in ("passed", "failed", "inconclusive", "no_better", "quarantined"):
            self.gate_decisions.labels(result)
        self.ap_difference = Gauge(
            "perennial_learner_gate_ap_difference",
            "Candidate minus incumbent AP at the last gate, by evaluation set, with the bounds of its bootstrap interval (bound: low, estimate, high).",
            ["set", "bound"], registry=r,
        )
        self.gate_frauds = Gauge(
            "perennial_learner_gate_frauds", "Frauds each evaluation set of the last gate held (what its interval rests on).", ["set"], registry=r,
        )
        self.quarantine_kept = Gauge(
            "perennial_learner_quarantine_kept_events",
            "Events of quarantined rounds kept for an operator to release (POST /v1/learner/release-quarantine).", registry=r,
        )
        self.quarantine_released = Counter(
            "perennial_learner_quarantine_released_events_total",
            "Quarantined events released for training, by trigger: automatic (their labels proved learnable), operator, concept_change.",
            ["trigger"], registry=r,
        )
        for trigger in ("automatic", "operator", "concept_change"):
            self.quarantine_released.labels(trigger)
        for name in ("recent", "retention"):  # NaN until a gate measures them: the series exist for the dashboards
            self.gate_frauds.labels(name).set(float("nan"))
            for bound in ("low", "estimate", "high"):
                self.ap_difference.labels(name, bound).set(float("nan"))
        self.evidence_events = Gauge(
            "perennial_learner_candidate_evidence_events",
            "Labeled events gathered since the candidate being judged was cut (neither it nor the served version trained on them).", registry=r,
        )
        self.evidence_frauds = Gauge(
            "perennial_learner_candidate_evidence_frauds", "Frauds among the candidate's evidence events.", registry=r,
        )
        for check in CHECKS:
            self.gate_failures.labels(check)
        self.ap = Gauge(
            "perennial_learner_average_precision", "Average precision at the last gate, by model and evaluation set.",
            ["model", "set"], registry=r,
        )
        self.auc = Gauge("perennial_learner_roc_auc", "ROC-AUC at the last gate, by model and evaluation set.", ["model", "set"], registry=r)
        # the operating point's figures are NaN until a gate measures them (0 would read as "no alerts")
        self.alert_rate = Gauge(
            "perennial_learner_alert_rate",
            "Share of held-out events (weighted to the real fraud rate) scored at or above the operating threshold at the last gate, by model.",
            ["model"], registry=r,
        )
        self.alerts = Gauge(
            "perennial_learner_alerts",
            "Held-out events scored at or above the operating threshold at the last gate, by model: the count behind the alert rate.",
            ["model"],
            registry=r,
        )
        for model in ("candidate", "incumbent"):
            self.alert_rate.labels(model).set(float("nan"))
            self.alerts.labels(model).set(float("nan"))
        self.operating_threshold = Gauge(
            "perennial_learner_operating_threshold", "The served score (a fraud probability) from which events are alerted on, at the last gate.", registry=r,
        )
        self.negative_flip_rate = Gauge(
            "perennial_learner_negative_flip_rate",
            "Share of the held-out frauds the served version alerts on that the candidate would not, at the last gate.", registry=r,
        )
        self.negative_flip_frauds = Gauge(
            "perennial_learner_negative_flip_base_frauds",
            "Held-out frauds the served version alerts on at the last gate: the count the negative flip rate is a share of.", registry=r,
        )
        self.served_calibration_error = Gauge(
            "perennial_learner_served_expected_calibration_error",
            "Expected calibration error of the served version's scores on held-out events (weighted, 10 bins of equal weight): "
            "how far, on average, a served score is from the fraud rate of the events so scored.", registry=r,
        )
        for gauge in (self.operating_threshold, self.negative_flip_rate, self.negative_flip_frauds, self.served_calibration_error):
            gauge.set(float("nan"))
        self.retention_baseline = Gauge(
            "perennial_learner_retention_baseline_average_precision",
            "Average precision of the first (pretrained) version on the retention set: what forgetting is measured against.", registry=r,
        )
        self.lag = Gauge(
            "perennial_learner_consumer_lag", "Events on the topic not yet read, by assigned partition (0 when caught up).", ["partition"], registry=r,
        )
        self.broker_up = Gauge(
            "perennial_learner_broker_up",
            "1 while the learner's last request to the Kafka broker succeeded (connecting at start-up, then looking up its partitions' end every few seconds).",
            registry=r,
        )
        self.broker_errors = Counter(
            "perennial_learner_broker_errors_total", "Failed requests to the Kafka broker, retried (start-up attempts, end-offset look-ups).", registry=r,
        )
        self.offset_resets = Counter(
            "perennial_learner_offset_resets_total",
            "Read positions moved because they were past the end (broker data lost, topic recreated) or before the start of their partition.",
            ["partition"], registry=r,
        )
        self.last_round = Gauge("perennial_learner_last_round_timestamp_seconds", "When the last round finished (Unix time).", registry=r)
        self.last_publish = Gauge(
            "perennial_learner_last_publish_timestamp_seconds", "When the served version was created (Unix time).", registry=r,
        )
        self.version_number = Gauge(
            "perennial_learner_published_version_number", "Number of the newest version the learner published or started from.", registry=r
        )
        self.drift_detected = Counter("perennial_learner_drift_detected_total", "Drifts found by ADWIN in the served model's loss on new events.", registry=r)
        self.drift_estimation = Gauge("perennial_learner_drift_loss_estimation", "ADWIN's mean of the served model's log-loss on new events.", registry=r)
        self.concept_change = Gauge(
            "perennial_learner_concept_change_rounds",
            "Rounds left of a concept change an operator confirmed (0: none): nothing quarantined, retention not binding.", registry=r,
        )
        self.drift_reacting = Gauge(
            "perennial_learner_drift_reacting", "1 while the learner reacts to a drift (shorter rounds, higher learning rate).", registry=r,
        )
        self.drift_width = Gauge("perennial_learner_drift_window_events", "Events in ADWIN's window (it shrinks at a drift).", registry=r)
        self.published = Counter("perennial_learner_versions_published_total", "Versions published to the registry.", registry=r)
        self.resets = Counter("perennial_learner_resets_total", "Restarts of training from the served weights after repeated gate failures.", registry=r)
        self.checkpoint_duration = Histogram(
            "perennial_learner_checkpoint_duration_seconds", "Time to write a checkpoint durably.", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.paused = Gauge("perennial_learner_paused", "1 while an operator has paused learning.", registry=r)
        self.rollbacks = Counter("perennial_learner_rollbacks_total", "Rollbacks of the served version, by trigger.", ["trigger"], registry=r)
        for trigger in ("manual", "automatic"):
            self.rollbacks.labels(trigger)
        self.pending = Gauge("perennial_learner_pending_events", "Events waiting for the next round.", registry=r)
        self.round_running = Gauge(
            "perennial_learner_round_running", "1 while a round trains, gates and publishes (its events have left pending_events).", registry=r,
        )
        self.pending_holdout = Gauge(
            "perennial_learner_pending_holdout_events", "Events held out from the next round, to join the held-out set when it is accepted.", registry=r,
        )

    def observe_operating_point(self, threshold: float, incumbent: AlertRate, candidate: AlertRate, flips: FlipRate) -> None:
        """Export one gate's operating-point figures (a flip rate without alerted frauds is NaN)."""
        self.operating_threshold.set(threshold)
        for model, figures in (("incumbent", incumbent), ("candidate", candidate)):
            self.alert_rate.labels(model).set(figures.rate)
            self.alerts.labels(model).set(figures.alerts)
        self.negative_flip_rate.set(float("nan") if flips.rate is None else flips.rate)
        self.negative_flip_frauds.set(flips.alerted_frauds)
