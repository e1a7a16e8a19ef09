"""The learner's Kafka edge without a broker: the group-membership watchdog, announcements that fail,
and the reachability check that names why a broker cannot be reached. On the real broker:
tests/integration/test_faults.py."""

from __future__ import annotations

import logging
import math
import socket

import pytest
from kafka.errors import KafkaTimeoutError

from learners import loop
from perennial.settings import KafkaSettings
from streams import kafka as kio


class Consumer:
    def __init__(self):
        self.silent_s = 0.0
        self.unsubscribed = 0

    def metrics(self):
        return {"consumer-coordinator-metrics": {"last-heartbeat-seconds-ago": self.silent_s}}

    def unsubscribe(self):
        self.unsubscribed += 1


def watch(consumer: Consumer) -> tuple[loop._Membership, list[int]]:
    subscribed: list[int] = []
    membership = loop._Membership(consumer, lambda: subscribed.append(1), KafkaSettings(max_poll_interval_ms=20000, session_timeout_ms=10000))
    membership.checked = -math.inf
    membership.rejoined = -math.inf
    return membership, subscribed


def test_a_consumer_silent_longer_than_any_rebalance_rejoins_once(caplog):
    consumer = Consumer()
    membership, subscribed = watch(consumer)
    consumer.silent_s = 29.0  # within max_poll_interval + session: a rebalance may take this long
    membership.check()
    assert consumer.unsubscribed == 0
    consumer.silent_s = 31.0
    membership.checked = -math.inf
    with caplog.at_level(logging.WARNING, "learners.loop"):
        membership.check()
    assert consumer.unsubscribed == 1 and subscribed == [1]
    assert "no heartbeat to the consumer group for 31 s" in caplog.text
    membership.checked = -math.inf
    membership.check()  # the new join gets its time
    assert consumer.unsubscribed == 1


def test_a_consumer_that_never_heartbeated_yet_is_left_alone():
    consumer = Consumer()
    membership, _ = watch(consumer)
    consumer.silent_s = math.inf
    membership.check()
    assert consumer.unsubscribed == 0


def test_an_announcement_the_broker_refuses_is_logged_not_raised(caplog):
    class Producer:
        def send(self, *args, **kwargs):
            raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")

    with caplog.at_level(logging.WARNING, "learners.loop"):
        loop._announcer(Producer(), "announce")({"version": "v000007"})
    assert "could not announce version v000007 (KafkaTimeoutError" in caplog.text


def test_an_unreachable_broker_is_named_with_the_cause():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=rf"^127.0.0.1:{port}: Connection refused$"):
        kio.check_reachable(kio.client_config(f"127.0.0.1:{port}"), 1.0)


def test_one_reachable_bootstrap_server_is_enough():
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))
        servers = f"127.0.0.1:{closed.getsockname()[1]},127.0.0.1:{listening.getsockname()[1]}"
        kio.check_reachable(kio.client_config(servers), 1.0)
