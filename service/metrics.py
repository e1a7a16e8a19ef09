"""Prometheus metrics of `perennial serve`, on their own CollectorRegistry (base units, _total counters)."""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from learners import control
from streams.events import OTHER, Features

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


PREDICTION_LOG_OUTCOMES = ("queued", "sent", "dropped", "failed", "no_id")


class PredictionLogMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.events = Counter(
            "perennial_prediction_log_events_total",
            "Scored events by what the prediction log did with them: queued, sent (Kafka confirmed), dropped (queue full), "
            "failed (Kafka refused), no_id (an event without an id cannot be joined to its label).",
            ["outcome"], registry=registry,
        )
        for outcome in PREDICTION_LOG_OUTCOMES:
            self.events.labels(outcome)
        self.queue = Gauge("perennial_prediction_log_queued_events", "Scored events waiting to be sent to the prediction log.", registry=registry)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "perennial_server_requests_total", "HTTP requests by route ('other': a path no route serves) and status code.",
            ["route", "code"], registry=r,
        )
        self.duration = Histogram(
            "perennial_server_request_duration_seconds", "Time to answer a request, by route.", ["route"], registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.admin = Counter("perennial_server_admin_commands_total", "Admin commands accepted and sent to the learner, by action.", ["action"], registry=r)
        for action in control.ACTIONS:
            self.admin.labels(action)
        self.in_flight = Gauge("perennial_server_requests_in_flight", "Predict requests being answered.", registry=r)
        self.predictions = Counter(
            "perennial_server_predictions_total",
            "Events scored or rejected, by outcome and served version (only the served version's series live).",
            ["outcome", "version"], registry=r,
        )
        self.scores = Histogram(
            "perennial_server_fraud_score", "Fraud probabilities served.", registry=r,
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99),
        )
        self.pass_rows = Histogram(
            "perennial_server_forward_pass_rows", "Events scored by one forward pass (requests parsed together share one).", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096),
        )
        self.model_info = Gauge("perennial_server_model_info", "The served version (value 1).", ["version", "sha256", "parent"], registry=r)
        self.version_number = Gauge("perennial_server_model_version_number", "Number of the served version (v000012 is 12).", registry=r)
        self.current_number = Gauge(
            "perennial_server_registry_current_version_number", "Number of the version the registry's CURRENT names.", registry=r,
        )
        self.swaps = Counter("perennial_server_swaps_total", "Attempts to change the served version, by result.", ["result"], registry=r)
        for result in ("swapped", "refused"):
            self.swaps.labels(result)
        self.swap_duration = Histogram(
            "perennial_server_swap_duration_seconds", "Time to verify, load and warm a version before swapping.", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.unseen_categories = Counter(
            "perennial_server_unseen_categories_total",
            "Categorical values outside the served version's vocabulary, scored as other, by feature.", ["feature"], registry=r,
        )
        self.prediction_log = PredictionLogMetrics(r)
        self._created = 0.0
        self.model_age = Gauge("perennial_server_model_age_seconds", "Seconds since the served version was created.", registry=r)
        self.model_age.set_function(lambda: time.time() - self._created if self._created else 0.0)

    def answered(self, route: str, code: int, started: float) -> None:
        """One request answered (or given up by its client, code 499), ``started`` at this perf_counter()."""
        self.requests.labels(route, str(code)).inc()
        self.duration.labels(route).observe(time.perf_counter() - started)

    def count_unseen(self, features: Features, rows: np.ndarray) -> None:
        """Count the categorical values of scored raw ``rows`` that were outside their vocabulary (code
        OTHER); call only for ``features`` with categories."""
        counts = np.count_nonzero(rows[:, features.positions] == OTHER, axis=0)
        for i, n in zip(features.positions, counts.tolist()):
            if n:
                self.unseen_categories.labels(features[i]).inc(n)

    def served(self, version: str, sha256: str, parent: str | None, created_ts: float, previous: str | None) -> None:
        self.model_info.clear()
        self.model_info.labels(version, sha256, parent or "").set(1)
        self.version_number.set(int(version[1:]))
        self._created = created_ts
        for outcome in ("scored", "rejected"):
            self.predictions.labels(outcome, version)
            if previous:
                try:
                    self.predictions.remove(outcome, previous)
                except KeyError:
                    pass
