"""The admin command sender: Kafka work on a thread of its own, a bounded wait, nothing sent late.
(Over HTTP with a real dead broker address: tests/integration/test_server_robustness.py.)"""

import asyncio
import threading

import orjson
import pytest

from learners import control
from service import admin
from service.errors import ApiError


class Recorded:
    def get(self, timeout):
        return None


class RecordingProducer:
    def __init__(self):
        self.sent = []

    def send(self, topic, value, key):
        self.sent.append(orjson.loads(value)["action"])
        return Recorded()

    def close(self, timeout):
        pass


@pytest.fixture
def kafka(monkeypatch):
    """Kafka that hangs (as an unreachable broker does) until ``up`` is set."""
    up, producer = threading.Event(), RecordingProducer()
    monkeypatch.setattr(admin.kio, "ensure_topics", lambda config, topics: up.wait(30))
    monkeypatch.setattr(admin.kio, "producer", lambda config, **overrides: producer)
    return up, producer


def test_a_hanging_kafka_gets_503_within_the_timeout_and_never_blocks_the_loop(kafka):
    sender = admin.CommandSender({}, "control", timeout_s=0.3)

    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        with pytest.raises(ApiError) as refused:
            await sender.send(control.command("pause"))
        ticker.cancel()
        return refused.value, ticks

    error, ticks = asyncio.run(main())
    assert error.status == 503 and "within 0.3 s" in error.message
    assert ticks > 5  # the event loop ran while the command waited for Kafka
    kafka[0].set()
    sender.close()


def test_a_command_its_caller_gave_up_on_is_never_sent_late(kafka):
    up, producer = kafka
    sender = admin.CommandSender({}, "control", timeout_s=1.0)

    async def send(action):
        try:
            await sender.send(control.command(action))
            return 202
        except ApiError as exc:
            return exc.status

    assert asyncio.run(send("pause")) == 503  # the sender's thread is stuck connecting
    assert asyncio.run(send("resume")) == 503  # queued behind it
    up.set()  # Kafka is back
    assert asyncio.run(send("rollback")) == 202
    assert producer.sent == ["rollback"]  # the two refused commands were not delivered after their 503
    sender.close()
