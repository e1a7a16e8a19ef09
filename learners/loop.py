"""The learner's Kafka edge (after quix-streams): poll → account for each event → train a round when
one is due → make it durable (dead letters flushed, checkpoint written, then offsets committed).

A restarted learner seeks to its checkpoint's offsets when partitions are assigned, so a crash
anywhere loses no event and counts none twice. Operator commands arrive on the control topic.
"""

from __future__ import annotations

import logging
import threading
import time

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from learners.control import ControlChannel
from learners.learner import Learner
from streams import kafka as kio

log = logging.getLogger(__name__)


def run(learner: Learner, stop: threading.Event) -> None:
    """Consume until ``stop`` is set; a final checkpoint and commit on the way out."""
    s = learner.settings
    cfg = kio.client_config(s.kafka.bootstrap_servers, s.kafka.security)
    kio.ensure_topics(cfg, [s.kafka.topic, s.kafka.dlq_topic, s.kafka.announce_topic, s.kafka.control_topic])
    producer = kio.producer(cfg)
    dead_letters = kio.DeadLetters(producer, s.kafka.dlq_topic)
    consumer = kio.consumer(
        cfg, group_id=s.kafka.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=s.kafka.session_timeout_ms, heartbeat_interval_ms=s.kafka.heartbeat_interval_ms,
        max_poll_interval_ms=s.kafka.max_poll_interval_ms,
    )

    class Seek(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):  # noqa: ANN001
            # Runs on kafka-python's IO thread, where a blocking commit is forbidden: write the
            # checkpoint (what a restart seeks to); the main loop commits.
            if revoked:
                dead_letters.flush()
                learner.checkpoint()

        def on_partitions_assigned(self, assigned):  # noqa: ANN001
            for tp in assigned:
                offset = learner.offsets.get(f"{tp.topic}:{tp.partition}")
                if offset is not None:
                    consumer.seek(tp, offset)
            if learner.paused:
                consumer.pause(*assigned)
            learner.emit("assigned", partitions=[tp.partition for tp in assigned])

    consumer.subscribe([s.kafka.topic], listener=Seek())
    control = ControlChannel(cfg, s.kafka.control_topic, learner.control_offsets)
    announce = lambda manifest: kio.announce(producer, s.kafka.announce_topic, manifest)  # noqa: E731
    last_durable = time.monotonic()
    dirty = False
    try:
        while not stop.is_set():
            batches = consumer.poll(timeout_ms=200, max_records=s.learn.round_events)
            for tp, records in batches.items():
                for rec in records:
                    learner.handle(rec.value, rec.key, (tp.topic, tp.partition, rec.offset), dead_letters)
                    learner.offsets[f"{tp.topic}:{tp.partition}"] = rec.offset + 1
                    dirty = True
            if batches:
                _observe_lag(learner, consumer)
            else:
                learner.backlog = 0  # nothing came within the poll: caught up
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
                dead_letters.flush()
                learner.train_round(announce)
                _durable(learner, consumer, dead_letters)
                last_durable, dirty = time.monotonic(), False
            elif dirty and time.monotonic() - last_durable > 5.0:
                _durable(learner, consumer, dead_letters)
                last_durable, dirty = time.monotonic(), False
        _durable(learner, consumer, dead_letters)
    finally:
        control.close()
        consumer.close(autocommit=False)
        producer.close(timeout=10)

def _durable(learner: Learner, consumer, dead_letters: kio.DeadLetters) -> None:  # noqa: ANN001
    """Dead letters flushed, checkpoint written, then (and only then) offsets committed."""
    dead_letters.flush()
    learner.checkpoint()
    commit = {}
    for key, offset in learner.offsets.items():
        topic, _, partition = key.rpartition(":")
        tp = TopicPartition(topic, int(partition))
        if tp in consumer.assignment():
            commit[tp] = OffsetAndMetadata(offset, "", -1)
    if commit:
        try:
            consumer.commit(commit)
        except KafkaError as exc:
            # Harmless: the checkpoint holds the offsets and a restart seeks to them.
            log.warning("offset commit failed (%s); the checkpoint keeps the position", exc)


def _observe_lag(learner: Learner, consumer) -> None:  # noqa: ANN001
    backlog = 0
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        position = learner.offsets.get(f"{tp.topic}:{tp.partition}")
        if high is not None and position is not None:
            lag = max(0, high - position)
            backlog += lag
            learner.metrics.lag.labels(str(tp.partition)).set(lag)
    learner.backlog = backlog
