"""The join's Kafka edge: reads the prediction log and the label topic, keeps ``JoinState``, and sends
each joined (or matured) event, with the features as scored, to the labeled-event topic the learner
reads. Runs in `perennial learn` (``join.enabled``), on a thread of its own with clients of its own;
nothing it meets stops it or the learner.

Each cycle: poll both topics; malformed records to ``<topic>.dlq`` with a reason (flushed); the batch
applied to the state in one transaction with the offsets read to; then the outbox sent and, once the
broker has it, emptied. A restart seeks to the saved offsets (the consumer has no group: the state is
the only position) and sends what the outbox still holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from learners.join import JoinState, Step
from learners.loop import reachable_config
from perennial.settings import Settings
from streams import kafka as kio
from streams.events import EventError, Features
from streams.predictions import Label, Prediction, parse_label, parse_predictions

log = logging.getLogger("perennial.join")

POLL_RECORDS = 2000
STEP_EVENTS = 20_000
"""Most predictions and labels applied in one transaction (one poll may hold 2,000 batches of 1,024)."""
IDLE_STEP_S = 5.0
"""With nothing to read, the state still steps this often (maturity and expiry)."""
DELAY_BUCKETS = tuple(h * 3600.0 for h in (1, 6, 24, 72, 168, 336, 720, 1440, 2160))


class JoinMetrics:
    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.predictions = Counter("perennial_join_predictions_total",
                                   "Predictions read from the prediction log, by outcome: logged (kept until labeled or matured), "
                                   "duplicate (an id already logged: the first scoring is kept), future_time (logged, but its event time is more "
                                   "than join.max_clock_lead_s ahead of the wall clock: it does not move the join's clock).", ["outcome"], registry=r)
        self.labels = Counter("perennial_join_labels_total",
                              "Labels read, by source and outcome: joined (to a pending prediction), parked (prediction unknown), "
                              "correction (fraud after a legitimate label or maturity), duplicate, conflict (legitimate after fraud: not applied).",
                              ["source", "outcome"], registry=r)
        self.orphans = Counter("perennial_join_orphans_total", "Parked labels that left the park: joined (their prediction came) or expired.",
                               ["outcome"], registry=r)
        self.matured = Counter("perennial_join_matured_total", "Predictions taken as legitimate at maturity (join.maturity_s without a label).", registry=r)
        self.refused = Counter("perennial_join_records_refused_total", "Malformed records sent to the dead-letter topic, by topic and reason.",
                               ["topic", "reason"], registry=r)
        self.sent = Counter("perennial_join_events_sent_total", "Joined and matured events the broker took on the labeled-event topic.", registry=r)
        self.delay = Histogram("perennial_join_label_delay_seconds", "Time from a prediction's event time to its label (the label's time, "
                               "else the prediction log's clock when it arrived), by source.", ["source"], buckets=DELAY_BUCKETS, registry=r)
        self.pending = Gauge("perennial_join_pending_predictions", "Predictions waiting for a label or maturity.", registry=r)
        self.parked = Gauge("perennial_join_parked_labels", "Labels waiting for their prediction.", registry=r)
        self.oldest = Gauge("perennial_join_oldest_pending_age_seconds", "Age of the oldest pending prediction on the prediction log's clock.", registry=r)
        self.clock = Gauge("perennial_join_clock_seconds", "The prediction log's clock: the latest event time logged.", registry=r)
        self.last_label = Gauge("perennial_join_last_label_timestamp_seconds",
                                "Wall-clock time the last label was read (until the first, when the join started).", registry=r)
        self.last_label.set(time.time())
        self.outbox = Gauge("perennial_join_outbox_events", "Joined events written to the state, not yet taken by the broker.", registry=r)
        self.up = Gauge("perennial_join_broker_up", "1 while the join's clients are connected.", registry=r)
        for outcome in ("logged", "duplicate", "future_time"):
            self.predictions.labels(outcome)
        for outcome in ("joined", "expired"):
            self.orphans.labels(outcome)

    def record(self, step: Step, state: JoinState) -> None:
        for outcome, n in step.predictions.items():
            self.predictions.labels(outcome).inc(n)
        for (source, outcome), n in step.labels.items():
            self.labels.labels(source, outcome).inc(n)
        for outcome, n in step.orphans.items():
            self.orphans.labels(outcome).inc(n)
        self.matured.inc(step.matured)
        for source, delay in step.delays:
            self.delay.labels(source).observe(delay)
        if step.labels:
            self.last_label.set(time.time())
        self.pending.set(state.pending)
        self.parked.set(state.parked)
        self.oldest.set(state.oldest_pending_age())
        if state.clock > 0:
            self.clock.set(state.clock)


class Joiner:
    def __init__(self, settings: Settings, names: Sequence[str], registry: CollectorRegistry):
        self.settings = settings
        self.names = names if isinstance(names, Features) else tuple(names)  # a schema's features: with their declarations
        self.metrics = JoinMetrics(registry)
        self.state = JoinState(settings.join, self.names, settings.join.path or settings.learn.checkpoint_path.parent / "join.sqlite")
        self.metrics.record(Step(), self.state)
        self.thread: threading.Thread | None = None
        self.connected = False  # since the last failure

    def start(self, stop: threading.Event) -> None:
        self.thread = threading.Thread(target=self.run, args=(stop,), name="perennial-join", daemon=True)
        self.thread.start()

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: connect (with backoff), then cycle; any failure of the broker or of a cycle
        is logged, and the join starts again from its saved state."""
        s = self.settings.learn
        delays = kio.backoff_delays(s.broker_retry_initial_s, s.broker_retry_max_s)
        while not stop.is_set():
            try:
                self._run_connected(stop)
                return
            except Exception as exc:  # the join must not stop the learner: start again from the state
                if self.connected:  # it had connected: a new outage starts from the first, short wait
                    delays = kio.backoff_delays(s.broker_retry_initial_s, s.broker_retry_max_s)
                self.connected = False
                self.metrics.up.set(0)
                delay = next(delays)
                log.warning("the join stopped on %s: %s; starting again from its saved state in %.1f s", type(exc).__name__, exc, delay,
                            exc_info=not isinstance(exc, (KafkaError, OSError)))
                stop.wait(delay)

    def _run_connected(self, stop: threading.Event) -> None:
        k = self.settings.kafka
        config = reachable_config(self.settings)
        kio.ensure_topics(config, [k.predictions_topic, k.labels_topic, k.topic, k.dlq_topic])
        producer = kio.producer(config, enable_idempotence=False)
        consumer = kio.consumer(config, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")
        try:
            self._assign(consumer)
            self.connected = True
            self.metrics.up.set(1)
            dead_letters = kio.DeadLetters(producer, k.dlq_topic)
            self._send_outbox(producer)  # what a crash left unsent
            last_step = 0.0
            while not stop.is_set():
                batches = consumer.poll(timeout_ms=500, max_records=POLL_RECORDS)
                if not batches and time.monotonic() - last_step < IDLE_STEP_S:
                    continue
                for predictions, labels, offsets in self._read(batches, dead_letters):
                    dead_letters.flush()
                    step = self.state.step(predictions, labels, offsets)
                    self.metrics.record(step, self.state)
                    self._send_outbox(producer)
                last_step = time.monotonic()
        finally:
            self.metrics.up.set(0)
            consumer.close(autocommit=False)
            producer.close(timeout=10)

    def _assign(self, consumer: KafkaConsumer) -> None:
        k = self.settings.kafka
        partitions = []
        for topic in (k.predictions_topic, k.labels_topic):
            found = None
            for _ in range(50):
                found = consumer.partitions_for_topic(topic)
                if found:
                    break
                time.sleep(0.1)
            if not found:
                raise KafkaError(f"no partitions known for {topic}")
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        saved = self.state.offsets()
        for tp in partitions:
            if (tp.topic, tp.partition) in saved:
                consumer.seek(tp, saved[(tp.topic, tp.partition)])
            else:
                consumer.seek_to_beginning(tp)

    def _read(self, batches: dict, dead_letters: kio.DeadLetters) -> Iterator[tuple[list[Prediction], list[Label], dict[tuple[str, int], int]]]:
        """The records polled, parsed, in steps of at most about ``STEP_EVENTS`` predictions and labels
        (a poll of prediction batches may hold millions), each with the offsets read to; at least one
        step, so an idle join still matures and expires."""
        k = self.settings.kafka
        predictions: list[Prediction] = []
        labels: list[Label] = []
        offsets: dict[tuple[str, int], int] = {}
        for tp, records in batches.items():
            kind = "predictions" if tp.topic == k.predictions_topic else "labels"
            for rec in records:
                try:
                    if kind == "predictions":
                        predictions.extend(parse_predictions(rec.value, self.names))
                    else:
                        labels.append(parse_label(rec.value))
                except Exception as exc:  # noqa: BLE001 - one record never stops the join
                    reason, message = (exc.reason, exc.message) if isinstance(exc, EventError) else \
                        ("internal_error", f"{type(exc).__name__}: {exc}")
                    self.metrics.refused.labels(kind, reason).inc()
                    dead_letters.send(rec.value, rec.key, reason, message, (tp.topic, tp.partition, rec.offset), self._delivered)
                offsets[(tp.topic, tp.partition)] = rec.offset + 1
                if len(predictions) + len(labels) >= STEP_EVENTS:
                    yield predictions, labels, dict(offsets)
                    predictions, labels = [], []
        yield predictions, labels, offsets

    @staticmethod
    def _delivered(exc: Exception | None) -> None:
        if exc is not None:
            log.error("a dead letter of the join was not delivered (%s: %s)", type(exc).__name__, exc)

    def _send_outbox(self, producer: KafkaProducer) -> None:
        topic = self.settings.kafka.topic
        while rows := self.state.outbox():
            self.metrics.outbox.set(len(rows))
            futures = [producer.send(topic, value=value) for _, value in rows]
            producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=0)  # raises if the broker refused one: the outbox keeps them all for the next try
            self.state.sent(rows[-1][0])
            self.metrics.sent.inc(len(rows))
        self.metrics.outbox.set(0)

