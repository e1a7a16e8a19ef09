"""Where the learner reads each assigned partition, where that partition ends, and the lag between
them: exported for every assigned partition on every poll cycle, 0 included.

A position past the end of its partition means the broker lost its data or the topic was recreated.
Kafka answers a fetch there with OFFSET_OUT_OF_RANGE; the local Tansu broker answers with no records
and a highwater below the position. Either way the position is moved per
``learn.offset_reset_past_end``, logged with both offsets and counted, instead of the learner waiting
for offsets that will not come back. The consumer has no reset policy of its own (``"none"``), so no
position moves without this module knowing.
"""

from __future__ import annotations

import logging
import math
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

from learners.learner import Learner

log = logging.getLogger("perennial.learn")

END_LOOKUP_EVERY_S = 5.0
LOOKUP_TIMEOUT_MS = 1000


def offset_key(tp: TopicPartition) -> str:
    """How the checkpoint names a partition."""
    return f"{tp.topic}:{tp.partition}"


class Partitions:
    """Kept by the loop: told of each assignment, asked to poll and to observe once per cycle."""

    def __init__(self, learner: Learner, consumer: KafkaConsumer):
        self.learner, self.consumer = learner, consumer
        self.metrics = learner.metrics
        self.listed_ends: dict[TopicPartition, int] = {}  # from the broker, at most every END_LOOKUP_EVERY_S
        self.looked_up = -math.inf
        self.resets = 0  # since the last observe()
        self.broker_answers = True  # the learner has just connected
        self.exported: set[int] = set()  # partitions whose lag is exported
        self.reset_asked: dict[TopicPartition, float] = {}  # when the broker was last asked where a partition starts and ends

    # -- rebalance: on kafka-python's IO thread, so nothing here waits for the broker ------------

    def assigned(self, assigned: set[TopicPartition]) -> None:
        """Seek to the checkpoint's offsets; export a lag and a reset count for each partition at once,
        and no lag for partitions no longer assigned (removed here rather than at revocation, so that
        the lag stays exported while the group rebalances)."""
        for tp in assigned:
            offset = self.learner.offsets.get(offset_key(tp))
            if offset is not None:
                self.consumer.seek(tp, offset)
            if tp.partition not in self.exported:  # until the next cycle knows better
                self.metrics.lag.labels(str(tp.partition)).set(0)
            self.metrics.offset_resets.labels(str(tp.partition))
        for partition in self.exported - {tp.partition for tp in assigned}:
            self.metrics.lag.remove(str(partition))
        self.exported = {tp.partition for tp in assigned}
        self.listed_ends = {}
        self.looked_up = -math.inf  # the new partitions' ends at the next cycle

    # -- the poll cycle ------------------------------------------------------------------------

    def poll(self, max_records: int) -> dict:
        """The consumer's poll, with the positions it refuses to choose itself decided here."""
        try:
            return self.consumer.poll(timeout_ms=200, max_records=max_records)
        except OffsetOutOfRangeError as exc:
            for tp, offset in exc.args[0].items():
                self.reset(tp, offset)
        except NoOffsetForPartitionError as exc:
            self.consumer.seek_to_beginning(*exc.args[0])  # neither a checkpoint nor a committed offset: a new learner reads all
        return {}

    def observe(self) -> int:
        """Reset positions past their partition's end and export every assigned partition's lag;
        sets the learner's backlog. Returns the resets since the last call."""
        assignment = self.consumer.assignment()
        self._look_up_ends(assignment)
        paused = self.consumer.paused()
        backlog = 0
        for tp in assignment:
            position = self._position(tp)
            highwater = self.consumer.highwater(tp)  # from the last fetch: no request
            if position is not None and highwater is not None and position > highwater and self.reset(tp, position):
                position = self.learner.offsets[offset_key(tp)]
            end = highwater if highwater is not None and tp not in paused else self.listed_ends.get(tp)
            if position is not None and end is not None:
                lag = max(0, end - position)
                self.metrics.lag.labels(str(tp.partition)).set(lag)
                backlog += lag
        self.learner.backlog = backlog
        resets, self.resets = self.resets, 0
        return resets

    def reset(self, tp: TopicPartition, position: int) -> bool:
        """Move a position outside its partition back inside it; False when it is inside after all
        (a stale highwater), the broker could not say, or it was asked about this partition less
        than END_LOOKUP_EVERY_S ago."""
        if time.monotonic() - self.reset_asked.get(tp, -math.inf) < END_LOOKUP_EVERY_S:
            return False
        self.reset_asked[tp] = time.monotonic()
        try:
            start = self.consumer.beginning_offsets([tp], timeout_ms=LOOKUP_TIMEOUT_MS)[tp]
            end = self.consumer.end_offsets([tp], timeout_ms=LOOKUP_TIMEOUT_MS)[tp]
        except KafkaError as exc:
            self._broker_failed(exc)
            return False
        policy = self.learner.settings.learn.offset_reset_past_end
        if position < start:
            target, why = start, "its events were deleted (retention) before the learner read them"
        elif position > end:
            target = start if policy == "earliest" else end
            why = f"the broker lost its data or the topic was recreated; learn.offset_reset_past_end={policy}"
        else:
            return False
        self.consumer.seek(tp, target)
        self.learner.offsets[offset_key(tp)] = target
        self.metrics.offset_resets.labels(str(tp.partition)).inc()
        self.resets += 1
        log.warning(
            "partition %d of %s: offset %d is outside the partition (offsets %d to %d): %s; reading on from offset %d",
            tp.partition, tp.topic, position, start, end, why, target,
        )
        return True

    def _position(self, tp: TopicPartition) -> int | None:
        known = self.learner.offsets.get(offset_key(tp))
        if known is not None:
            return known
        try:  # nothing read yet: the consumer's starting position, if it has resolved it
            return self.consumer.position(tp, timeout_ms=0)
        except KafkaError:
            return None

    def _look_up_ends(self, assignment: set[TopicPartition]) -> None:
        """The broker's end of each partition, for those not being fetched (paused, or no fetch yet);
        doubles as the learner's check that the broker answers."""
        if not assignment or time.monotonic() - self.looked_up < END_LOOKUP_EVERY_S:
            return
        self.looked_up = time.monotonic()
        try:
            self.listed_ends = self.consumer.end_offsets(list(assignment), timeout_ms=LOOKUP_TIMEOUT_MS)
        except KafkaError as exc:
            self.listed_ends = {}
            self._broker_failed(exc)
            return
        if not self.broker_answers:
            log.warning("the Kafka broker answers again")
        self.broker_answers = True
        self.metrics.broker_up.set(1)

    def _broker_failed(self, exc: Exception) -> None:
        """Counted each time, logged once until the broker answers again."""
        self.metrics.broker_errors.inc()
        self.metrics.broker_up.set(0)
        if self.broker_answers:
            log.warning("the Kafka broker does not answer (%s: %s); the learner keeps polling", type(exc).__name__, exc)
        self.broker_answers = False
