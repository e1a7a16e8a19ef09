"""The learner's Kafka edge (after quix-streams): poll → account for each event → train a round when
one is due → make it durable (dead letters flushed, checkpoint written, then offsets committed).

A restarted learner seeks to its checkpoint's offsets when partitions are assigned, so a crash
anywhere loses no event and counts none twice. Operator commands arrive on the control topic. A
broker that is not there at start-up is retried with backoff until it is (or SIGTERM); positions the
broker no longer has are reset by ``learners/partitions.py``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from learners.control import ControlChannel
from learners.learner import Learner
from learners.partitions import Partitions, offset_key
from perennial.settings import KafkaSettings, Settings
from streams import kafka as kio

log = logging.getLogger("perennial.learn")


@dataclass
class Clients:
    """The learner's Kafka clients, opened together and closed together (``closing``)."""

    config: dict[str, Any]
    producer: KafkaProducer
    consumer: KafkaConsumer
    control: ControlChannel
    closing: ExitStack


def run(learner: Learner, stop: threading.Event) -> None:
    """Consume until ``stop`` is set; a final checkpoint and commit on the way out."""
    clients = connect(learner, stop)
    if clients is not None:
        with clients.closing:
            _consume(learner, clients, stop)


def connect(learner: Learner, stop: threading.Event) -> Clients | None:
    """Open the clients, retrying with backoff while the broker cannot be reached; None if ``stop``
    is set first. /metrics is served meanwhile, with ``perennial_learner_broker_up`` 0."""
    s = learner.settings.learn
    delays = kio.backoff_delays(s.broker_retry_initial_s, s.broker_retry_max_s)
    attempt = 0
    while True:
        attempt += 1
        try:
            clients = _open(learner)
        except (KafkaError, OSError) as exc:
            delay = next(delays)
            learner.metrics.broker_errors.inc()
            log.warning(
                "cannot reach the Kafka broker at %s (%s: %s); attempt %d failed, retrying in %.1f s",
                learner.settings.kafka.bootstrap_servers, type(exc).__name__, exc, attempt, delay,
            )
            if stop.wait(delay):
                return None
        else:
            learner.metrics.broker_up.set(1)
            if attempt > 1:
                log.warning("connected to the Kafka broker after %d attempts", attempt)
            return clients


def reachable_config(settings: Settings) -> dict[str, Any]:
    """The client settings of the learner's Kafka clients (the learner's and the join's), once the
    broker accepts a TCP connection (``ConnectionError`` naming each server otherwise)."""
    k, s = settings.kafka, settings.learn
    config = {**kio.client_config(k.bootstrap_servers, k.security), "bootstrap_timeout_ms": int(s.broker_connect_timeout_s * 1000)}
    kio.check_reachable(config, s.broker_connect_timeout_s)
    return config


def _open(learner: Learner) -> Clients:
    k = learner.settings.kafka
    config = reachable_config(learner.settings)
    kio.ensure_topics(config, _topics(learner.settings))
    with ExitStack() as opened:
        # Not idempotent: a broker that lost its data no longer knows the producer id, and the local
        # Tansu broker then refuses the producer for good (every later dead letter and announcement
        # would fail). The price: a send retried after a network error may be written twice.
        producer = kio.producer(config, enable_idempotence=False)
        opened.callback(producer.close, timeout=10)
        consumer = kio.consumer(
            config, group_id=k.group_id, enable_auto_commit=False, auto_offset_reset="none",  # positions: learners/partitions.py
            session_timeout_ms=k.session_timeout_ms, heartbeat_interval_ms=k.heartbeat_interval_ms,
            max_poll_interval_ms=k.max_poll_interval_ms,
        )
        opened.callback(consumer.close, autocommit=False)
        control = ControlChannel(config, k.control_topic, learner.control_offsets)
        opened.callback(control.close)
        return Clients(config, producer, consumer, control, opened.pop_all())


def _topics(settings: Settings) -> list[str]:
    k = settings.kafka
    return [k.topic, k.dlq_topic, k.announce_topic, k.control_topic]


def _consume(learner: Learner, clients: Clients, stop: threading.Event) -> None:
    s = learner.settings
    consumer, control = clients.consumer, clients.control
    dead_letters = kio.DeadLetters(clients.producer, s.kafka.dlq_topic)
    partitions = Partitions(learner, consumer)
    rebalance = _Rebalance(learner, consumer, partitions, dead_letters)
    consumer.subscribe([s.kafka.topic], listener=rebalance)
    membership = _Membership(consumer, lambda: consumer.subscribe([s.kafka.topic], listener=rebalance), s.kafka)
    announce = _announcer(clients.producer, s.kafka.announce_topic)
    last_durable = time.monotonic()
    dirty = False
    while not stop.is_set():
        batches = partitions.poll(s.learn.round_events)
        for tp, records in batches.items():
            for rec in records:
                learner.handle(rec.value, rec.key, (tp.topic, tp.partition, rec.offset), dead_letters)
                learner.offsets[offset_key(tp)] = rec.offset + 1
                dirty = True
        if partitions.observe():
            _recreate_topics(clients.config, _topics(s))
            dirty = True
        membership.check()
        commands = control.poll()
        for cmd in commands:
            learner.apply(cmd, consumer, announce)
        if control.offsets != learner.control_offsets:
            learner.control_offsets = dict(control.offsets)
            dirty = True
        if commands:  # an applied command is made durable at once
            _durable(learner, consumer, dead_letters)
            last_durable, dirty = time.monotonic(), False
        elif learner.round_due():
            with learner.metrics.round_running.track_inprogress():
                dead_letters.flush()
                learner.train_round(announce)
                _durable(learner, consumer, dead_letters)
            last_durable, dirty = time.monotonic(), False
        elif (dirty or len(learner.undelivered)) and time.monotonic() - last_durable > 5.0:
            _durable(learner, consumer, dead_letters)
            last_durable, dirty = time.monotonic(), False
    _durable(learner, consumer, dead_letters)


class _Rebalance(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread, where a blocking commit is forbidden: on revocation the
    checkpoint is written (what a restart seeks to) and the main loop commits."""

    def __init__(self, learner: Learner, consumer: KafkaConsumer, partitions: Partitions, dead_letters: kio.DeadLetters):
        self.learner, self.consumer, self.partitions, self.dead_letters = learner, consumer, partitions, dead_letters

    def on_partitions_revoked(self, revoked):
        if revoked:
            self.dead_letters.flush()
            self.learner.checkpoint()

    def on_partitions_assigned(self, assigned):
        self.partitions.assigned(assigned)
        if self.learner.paused:
            self.consumer.pause(*assigned)
        self.learner.emit("assigned", partitions=[tp.partition for tp in assigned])


class _Membership:
    """Works around kafka-python (3.0.12) losing a finished rebalance, as the Java client did before
    KAFKA-9815: when the topic's metadata changes and changes back while the group rejoins (a broker
    that lost its data and got the topic recreated), the consumer keeps its old assignment, stops
    heartbeating and never fetches again. No heartbeat for longer than any rebalance may take (the
    rebalance timeout, max_poll_interval_ms, plus a session): leave the group and join it again."""

    CHECK_EVERY_S = 5.0

    def __init__(self, consumer: KafkaConsumer, subscribe: Callable[[], None], kafka: KafkaSettings):
        self.consumer, self.subscribe = consumer, subscribe
        self.limit_s = (kafka.max_poll_interval_ms + kafka.session_timeout_ms) / 1000
        self.checked = self.rejoined = time.monotonic()

    def check(self) -> None:
        now = time.monotonic()
        if now - self.checked < self.CHECK_EVERY_S:
            return
        self.checked = now
        coordinator = self.consumer.metrics().get("consumer-coordinator-metrics", {})
        silent_s = coordinator.get("last-heartbeat-seconds-ago", 0.0)  # inf before the first heartbeat
        if self.limit_s < silent_s < math.inf and now - self.rejoined > self.limit_s:
            log.warning("no heartbeat to the consumer group for %.0f s, longer than a rebalance may take: joining the group again", silent_s)
            self.rejoined = now
            self.consumer.unsubscribe()
            self.subscribe()


def _announcer(producer: KafkaProducer, topic: str) -> Callable[[dict[str, Any]], None]:
    """Announce published versions; a broker that does not take the announcement is no reason to
    stop learning: the servers find the version by polling the registry's CURRENT."""

    def announce(manifest: dict[str, Any]) -> None:
        try:
            kio.announce(producer, topic, manifest)
        except KafkaError as exc:
            log.warning(
                "could not announce version %s (%s: %s); servers pick it up from the registry within serve.registry_poll_s",
                manifest.get("version"), type(exc).__name__, exc,
            )

    return announce


def _recreate_topics(config: dict[str, Any], topics: list[str]) -> None:
    """After a reset past the end the broker has lost its data, and the learner's other topics with it."""
    try:
        kio.ensure_topics(config, topics)
    except KafkaError as exc:
        log.warning("could not recreate the topics %s (%s: %s); producing to them may fail", ", ".join(topics), type(exc).__name__, exc)


def _durable(learner: Learner, consumer: KafkaConsumer, dead_letters: kio.DeadLetters) -> None:
    """Dead letters flushed (those refused so far sent again), checkpoint written, then (and only
    then) offsets committed."""
    dead_letters.flush()
    learner.resend_dead_letters(dead_letters)
    dead_letters.flush()
    learner.checkpoint()
    commit = {}
    for tp in consumer.assignment():
        offset = learner.offsets.get(offset_key(tp))
        if offset is not None:
            commit[tp] = OffsetAndMetadata(offset, "", -1)
    if commit:
        try:
            consumer.commit(commit)
        except KafkaError as exc:
            # Harmless: the checkpoint holds the offsets and a restart seeks to them.
            log.warning("offset commit failed (%s); the checkpoint keeps the position", exc)
