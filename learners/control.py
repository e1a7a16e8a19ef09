"""Operator commands for the learner, read from the control topic.

The servers' admin endpoints write commands (``rollback``, ``pause``, ``resume``) to the control
topic; the learner, the only writer of the registry, applies them. The learner reads that topic
without a consumer group and keeps its position in its checkpoint, so a command sent while it was
down is applied when it starts, and none is applied twice.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
from kafka import TopicPartition

from streams import kafka as kio

log = logging.getLogger("perennial.learn")

ACTIONS = ("rollback", "pause", "resume", "release_quarantine", "concept_change")


def command(action: str, **fields: Any) -> dict[str, Any]:
    """A command document; ``id`` lets an operator find it in the learner's log and the registry history."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    return {"id": uuid.uuid4().hex, "action": action, **fields}


def send(producer, topic: str, cmd: dict[str, Any], timeout: float = 10.0) -> None:  # KafkaProducer
    producer.send(topic, value=orjson.dumps(cmd), key=cmd["action"].encode()).get(timeout=timeout)


class ControlChannel:
    def __init__(self, config: dict[str, Any], topic: str, offsets: dict[str, int]):
        self.topic = topic
        self.offsets = dict(offsets)
        self.consumer = kio.consumer(config, enable_auto_commit=False)
        parts = self.consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        for tp in tps:
            offset = self.offsets.get(str(tp.partition))
            if offset is None:
                self.consumer.seek_to_end(tp)  # first start: only commands from now on
            else:
                self.consumer.seek(tp, offset)

    def poll(self) -> list[dict[str, Any]]:
        """New commands; malformed ones are logged and skipped."""
        out = []
        for tp, records in self.consumer.poll(timeout_ms=0).items():
            for rec in records:
                self.offsets[str(tp.partition)] = rec.offset + 1
                try:
                    cmd = orjson.loads(rec.value)
                    if cmd.get("action") not in ACTIONS:
                        raise ValueError(f"unknown action {cmd.get('action')!r}")
                except (orjson.JSONDecodeError, ValueError, AttributeError) as exc:
                    log.error("skipping malformed control command at offset %d: %s", rec.offset, exc)
                    continue
                out.append(cmd)
        for tp in self.consumer.assignment():  # a position for the checkpoint even before any command
            if str(tp.partition) not in self.offsets:  # position() may ask the broker: only once
                self.offsets[str(tp.partition)] = self.consumer.position(tp)
        return out

    def close(self) -> None:
        self.consumer.close()
