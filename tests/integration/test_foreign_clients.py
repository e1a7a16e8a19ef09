"""A client we did not write: confluent-kafka (librdkafka, C) produces the documented event format to the
local broker, and consumes the dead-letter topic; the learner learns from what it produced."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from tests.integration.conftest import SIM, wait_for

confluent_kafka = pytest.importorskip("confluent_kafka")  # in the dev extra: present under `make test`

pytestmark = pytest.mark.integration


def test_a_librdkafka_producer_feeds_the_learner_and_reads_the_dead_letter_topic(stack):
    from streams.kafka import client_config, ensure_topics
    from streams.simulator import FEATURES

    ensure_topics(client_config(stack.bootstrap), [stack.topic])
    stack.start("learn")
    tx = SIM.generate(45, 46)
    n = 400
    producer = confluent_kafka.Producer({"bootstrap.servers": stack.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(n):
        event = {
            "id": f"c-{i}",
            "time": datetime.fromtimestamp(float(tx.time[i]), UTC).isoformat().replace("+00:00", "Z"),
            "features": dict(zip(FEATURES, tx.features[i].tolist())),
            "label": int(tx.label[i]),
        }
        producer.produce(stack.topic, key=event["id"].encode(), value=orjson.dumps(event))
    producer.produce(stack.topic, key=b"bad", value=b'{"id": "bad", "features": {"amount": 1}}')
    assert producer.flush(30) == 0, "librdkafka could not deliver every event"

    consumed = "perennial_learner_events_consumed_total"
    wait_for(lambda: stack.learner_metric(consumed) == n + 1, 90, f"the learner to consume {n + 1} events")

    consumer = confluent_kafka.Consumer({"bootstrap.servers": stack.bootstrap, "group.id": f"{stack.topic}-reader",
                                         "enable.auto.commit": False})
    consumer.assign([confluent_kafka.TopicPartition(f"{stack.topic}.dlq", 0, confluent_kafka.OFFSET_BEGINNING)])  # no group join
    record = wait_for(lambda: _valid(consumer.poll(1.0)), 60, "the dead letter through librdkafka")
    consumer.close()
    headers = dict(record.headers())
    assert record.value() == b'{"id": "bad", "features": {"amount": 1}}' and headers["perennial.reason"] == b"bad_time"
    assert stack.procs["learn"].poll() is None


def _valid(message):  # a confluent_kafka.Message, or None
    return message if message is not None and message.error() is None else None
