"""Kafka clients built from the settings: the same bootstrap and security settings (SASL/SSL pass
through unchanged) for every producer, consumer and admin client of the product."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownError

log = logging.getLogger("perennial.kafka")


def _coerce(value: Any) -> Any:
    """Environment variables arrive as strings; kafka-python wants booleans and numbers."""
    if isinstance(value, str):
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        if value.isdigit():
            return int(value)
    return value


def client_config(bootstrap_servers: str, security: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings of every Kafka client: the bootstrap servers plus the security settings unchanged
    (``PERENNIAL_KAFKA__SECURITY__SASL_PLAIN_PASSWORD=...`` sets ``sasl_plain_password``).

    >>> client_config("a:9092,b:9092", {"security_protocol": "SASL_SSL", "ssl_check_hostname": "false"})
    {'bootstrap_servers': ['a:9092', 'b:9092'], 'security_protocol': 'SASL_SSL', 'ssl_check_hostname': False}
    """
    return {"bootstrap_servers": bootstrap_servers.split(","), **{k: _coerce(v) for k, v in (security or {}).items()}}


def producer(config: dict[str, Any], **overrides: Any) -> KafkaProducer:
    return KafkaProducer(**config, **{"acks": "all", "linger_ms": 5, "retries": 5, **overrides})


def consumer(config: dict[str, Any], **overrides: Any) -> KafkaConsumer:
    # Topics are created explicitly (ensure_topics); a metadata request must never create one with
    # broker defaults (and the local Tansu broker loses records on auto-created topics).
    return KafkaConsumer(**config, **{"allow_auto_create_topics": False, **overrides})


def ensure_topics(config: dict[str, Any], topics: Iterable[str], partitions: int = 1) -> None:
    """Create the topics that do not exist yet. Every component calls this for the topics it uses
    rather than relying on auto-creation (often disabled, and lossy on the local Tansu broker)."""
    admin = KafkaAdminClient(**config)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(t, partitions, 1) for t in topics if t not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


DEAD_LETTER_HEADROOM_BYTES = 8 * 1024
"""Room kept in a dead letter, beside its value, for its key, headers (each bounded) and framing."""
_KEPT_KEY_BYTES = 1024
_KEPT_ERROR_BYTES = 1000


def record_source(topic: str, partition: int, offset: int) -> str:
    """Where a record came from, as dead letters name it: ``topic/partition/offset``."""
    return f"{topic}/{partition}/{offset}"


def dead_letter(
    raw: bytes | None, key: bytes | None, reason: str, message: str, source: tuple[str, int, int], max_value_bytes: int,
) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
    """The key, value and headers of the dead letter of one record.

    The key is the record's source, the same each time the record is dead-lettered, so a consumer
    (or a compacted topic) can drop a repeat. The value is the record's bytes, null stays null, and
    a value over ``max_value_bytes`` keeps its first ``max_value_bytes`` (the producer refuses a
    larger record) with its original size in ``perennial.truncated``.

    >>> key, value, headers = dead_letter(b"x" * 10, b"k", "too_large", "too big", ("t", 0, 7), 4)
    >>> key, value, headers[3:]
    (b't/0/7', b'xxxx', [('perennial.key', b'k'), ('perennial.truncated', b'10')])
    """
    origin = record_source(*source).encode()
    headers = [
        ("perennial.reason", reason.encode()),
        ("perennial.error", message.encode()[:_KEPT_ERROR_BYTES].decode(errors="ignore").encode()),
        ("perennial.source", origin),
    ]
    if key is not None:
        headers.append(("perennial.key", key[:_KEPT_KEY_BYTES]))
    if raw is None:
        headers.append(("perennial.null_value", b"true"))
    elif len(raw) > max_value_bytes:
        headers.append(("perennial.truncated", str(len(raw)).encode()))
        raw = raw[:max_value_bytes]
    return origin, raw, headers


def backoff_delays(initial_s: float, max_s: float, draw: Callable[[], float] = random.random) -> Iterator[float]:
    """Waits between attempts: doubling from ``initial_s`` up to ``max_s``, each drawn between half
    and all of that, so that clients failing together do not retry in step.

    >>> [round(d, 2) for d, _ in zip(backoff_delays(0.5, 5.0, draw=lambda: 1.0), range(6))]
    [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    >>> [round(d, 2) for d, _ in zip(backoff_delays(0.5, 5.0, draw=lambda: 0.0), range(3))]
    [0.25, 0.5, 1.0]
    >>> [round(d, 2) for d, _ in zip(backoff_delays(60.0, 5.0, draw=lambda: 1.0), range(2))]
    [5.0, 5.0]
    """
    ceiling = min(initial_s, max_s)
    while True:
        yield ceiling * (0.5 + draw() / 2)
        ceiling = min(max_s, ceiling * 2)


def check_reachable(config: dict[str, Any], timeout_s: float) -> None:
    """Raise ``ConnectionError`` naming each bootstrap server and why it refused a TCP connection,
    unless one accepts. kafka-python only says "Unable to bootstrap", after its own retries."""
    causes = []
    for server in config["bootstrap_servers"]:
        try:
            socket.create_connection(_host_port(server), timeout=timeout_s).close()
            return
        except OSError as exc:
            causes.append(f"{server}: {exc.strerror or exc}")
    raise ConnectionError("; ".join(causes))


def _host_port(server: str) -> tuple[str, int]:
    """``host:port``, ``[v6 address]:port``, or a host alone on Kafka's default port.

    >>> _host_port("kafka-0.kafka:9093"), _host_port("[::1]:9092"), _host_port("kafka")
    (('kafka-0.kafka', 9093), ('::1', 9092), ('kafka', 9092))
    """
    host, sep, port = server.rpartition(":")
    if not sep or server.endswith("]"):
        return server.strip("[]"), 9092
    return host.strip("[]"), int(port)


class DeadLetterSink(Protocol):
    """Where the learner sends the records it cannot use: ``DeadLetters``, or a stand-in off Kafka."""

    def send(
        self, raw: bytes | None, key: bytes | None, reason: str, message: str, source: tuple[str, int, int],
        on_delivery: Callable[[Exception | None], None],
    ) -> None: ...


class DeadLetters:
    """Sends events that cannot be used to ``<topic>.dlq``: see ``dead_letter`` for the record.
    Never raises for a record: whether it was delivered is told to the sender's callback."""

    def __init__(self, kafka_producer: KafkaProducer, topic: str):
        self.producer = kafka_producer
        self.topic = topic
        self.max_value_bytes = kafka_producer.config["max_request_size"] - DEAD_LETTER_HEADROOM_BYTES

    def send(
        self, raw: bytes | None, key: bytes | None, reason: str, message: str, source: tuple[str, int, int],
        on_delivery: Callable[[Exception | None], None],
    ) -> None:
        """Send one dead letter. ``on_delivery`` is called once: with None when the broker has it,
        or with the exception that stopped it (at once, or later on the producer's thread)."""
        try:
            dlq_key, value, headers = dead_letter(raw, key, reason, message, source, self.max_value_bytes)
            future = self.producer.send(self.topic, value=value, key=dlq_key, headers=headers)
        except Exception as exc:  # noqa: BLE001 - one record the producer refuses must not stop the learner
            on_delivery(exc)
            return
        future.add_callback(lambda _metadata: on_delivery(None))
        future.add_errback(on_delivery)

    def flush(self, timeout: float = 30.0) -> None:
        self.producer.flush(timeout=timeout)


def announce(kafka_producer: KafkaProducer, topic: str, manifest: dict[str, Any]) -> None:
    """Tell the servers that a version is published (they verify and load it from the registry)."""
    doc = {k: manifest.get(k) for k in ("version", "parent", "sha256", "created")}
    kafka_producer.send(topic, value=orjson.dumps(doc), key=b"announcement").get(timeout=30)


def worth_sending_again(error: Exception) -> bool:
    """Whether a refused send may succeed later: a retriable Kafka error (a lost topic, a leader
    moving), or the broker's own unexpected error (``UnknownError``, code -1: no verdict on the
    record; the embedded broker answers it while a lost topic is made again). A refusal of the record
    itself (too large, invalid) is not."""
    return bool(getattr(error, "retriable", False)) or isinstance(error, UnknownError)
