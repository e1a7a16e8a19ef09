"""Positions and lag of the learner's partitions against a stand-in consumer: the answers a real Kafka
gives that the local Tansu broker never does (OFFSET_OUT_OF_RANGE, a log start above the position),
the reset policy, and the lag exported for every assigned partition. The same code on the real broker:
tests/integration/test_faults.py."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError, NoOffsetForPartitionError, OffsetOutOfRangeError

from learners.metrics import LearnerMetrics
from learners.partitions import Partitions
from perennial.settings import Settings

TP = TopicPartition("tx", 0)


class Consumer:
    """What Partitions uses of a KafkaConsumer, with the broker's answers set by the test."""

    def __init__(self, start: int = 0, end: int = 0, highwater: int | None = None):
        self.start, self.end, self.hw = start, end, highwater
        self.assigned = {TP}
        self.paused_partitions: set = set()
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.to_beginning: list[TopicPartition] = []
        self.poll_error: Exception | None = None
        self.broker_down = False
        self.asked = 0  # ListOffsets requests

    def assignment(self):
        return set(self.assigned)

    def paused(self):
        return set(self.paused_partitions)

    def highwater(self, tp):
        return self.hw

    def position(self, tp, timeout_ms=None):
        return None

    def seek(self, tp, offset):
        self.seeks.append((tp, offset))

    def seek_to_beginning(self, *tps):
        self.to_beginning.extend(tps)

    def beginning_offsets(self, tps, timeout_ms=None):
        return self._offsets(tps, self.start)

    def end_offsets(self, tps, timeout_ms=None):
        return self._offsets(tps, self.end)

    def _offsets(self, tps, value):
        self.asked += 1
        if self.broker_down:
            raise KafkaTimeoutError("no answer")
        return {tp: value for tp in tps}

    def poll(self, timeout_ms, max_records):
        if self.poll_error:
            raise self.poll_error
        return {}


def partitions(consumer: Consumer, offset: int | None, policy: str = "earliest") -> Partitions:
    settings = Settings(learn={"offset_reset_past_end": policy})
    learner = SimpleNamespace(settings=settings, metrics=LearnerMetrics(), offsets={}, backlog=None)
    if offset is not None:
        learner.offsets["tx:0"] = offset
    p = Partitions(learner, consumer)
    p.assigned({TP})
    return p


def sample(p: Partitions, name: str, **labels: str) -> float | None:
    return p.metrics.registry.get_sample_value(name, labels or None)


@pytest.mark.parametrize("policy, target", [("earliest", 0), ("latest", 40)])
def test_a_position_past_the_highwater_is_reset_per_the_policy_logged_and_counted(policy, target, caplog):
    consumer = Consumer(start=0, end=40, highwater=40)
    p = partitions(consumer, offset=900, policy=policy)
    with caplog.at_level(logging.WARNING, "perennial.learn"):
        assert p.observe() == 1
    assert consumer.seeks[-1] == (TP, target) and p.learner.offsets["tx:0"] == target
    assert sample(p, "perennial_learner_offset_resets_total", partition="0") == 1
    assert "offset 900 is outside the partition (offsets 0 to 40): the broker lost its data" in caplog.text
    assert f"learn.offset_reset_past_end={policy}; reading on from offset {target}" in caplog.text
    assert sample(p, "perennial_learner_consumer_lag", partition="0") == 40 - target
    assert p.observe() == 0  # reported once


def test_kafkas_offset_out_of_range_past_the_end_is_reset_per_the_policy():
    consumer = Consumer(start=0, end=40)
    consumer.poll_error = OffsetOutOfRangeError({TP: 900})
    p = partitions(consumer, offset=900)
    assert p.poll(100) == {}
    assert consumer.seeks[-1] == (TP, 0) and p.learner.offsets["tx:0"] == 0
    assert p.observe() == 1


def test_a_position_before_the_log_start_reads_on_from_the_start(caplog):
    consumer = Consumer(start=500, end=900)
    consumer.poll_error = OffsetOutOfRangeError({TP: 120})
    p = partitions(consumer, offset=120, policy="latest")  # the policy is for positions past the end
    with caplog.at_level(logging.WARNING, "learners.partitions"):
        p.poll(100)
    assert consumer.seeks[-1] == (TP, 500)
    assert "offset 120 is outside the partition (offsets 500 to 900): its events were deleted (retention)" in caplog.text


def test_a_stale_highwater_below_a_position_inside_the_partition_moves_nothing():
    consumer = Consumer(start=0, end=1000, highwater=40)
    p = partitions(consumer, offset=900)
    assert p.observe() == 0
    asked = consumer.asked
    assert p.observe() == 0 and consumer.asked == asked, "the broker is not asked again at every poll"
    assert consumer.seeks == [(TP, 900)]  # only the seek to the checkpoint at assignment
    assert sample(p, "perennial_learner_offset_resets_total", partition="0") == 0


def test_a_broker_that_cannot_say_moves_nothing_and_is_counted():
    consumer = Consumer(highwater=40)
    consumer.broker_down = True
    p = partitions(consumer, offset=900)
    assert p.observe() == 0
    assert consumer.seeks == [(TP, 900)]
    assert sample(p, "perennial_learner_broker_up") == 0
    assert sample(p, "perennial_learner_broker_errors_total") >= 1


def test_a_new_learner_without_any_offset_reads_the_topic_from_its_start():
    consumer = Consumer()
    consumer.poll_error = NoOffsetForPartitionError({TP})
    p = partitions(consumer, offset=None)
    assert p.poll(100) == {}
    assert consumer.to_beginning == [TP]


def test_the_lag_is_exported_at_assignment_when_caught_up_and_while_paused():
    consumer = Consumer(end=700)
    p = partitions(consumer, offset=700)
    assert sample(p, "perennial_learner_consumer_lag", partition="0") == 0  # at assignment, before any cycle
    consumer.hw = 700
    p.observe()
    assert sample(p, "perennial_learner_consumer_lag", partition="0") == 0 and p.learner.backlog == 0
    consumer.paused_partitions = {TP}  # not fetched: the broker's listed end counts
    consumer.hw, consumer.end = 700, 1500
    p.looked_up = float("-inf")
    p.observe()
    assert sample(p, "perennial_learner_consumer_lag", partition="0") == 800 and p.learner.backlog == 800
    assert sample(p, "perennial_learner_broker_up") == 1


def test_a_partition_no_longer_assigned_exports_no_lag():
    consumer = Consumer(end=10, highwater=10)
    p = partitions(consumer, offset=10)
    other = TopicPartition("tx", 1)
    p.assigned({other})
    assert sample(p, "perennial_learner_consumer_lag", partition="0") is None
    assert sample(p, "perennial_learner_consumer_lag", partition="1") == 0
