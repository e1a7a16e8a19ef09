"""No single record stops the learner. A real `perennial learn` reads, from a real broker, a stream of
valid labeled events seeded with hostile records from a plain kafka-python producer: it stays up,
keeps training and publishing, sends every hostile record to the dead-letter topic once with its
reason, and its /metrics alone account for every event."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest
from kafka import KafkaProducer

from streams import kafka as kio
from streams.simulate import encode_rows
from streams.simulator import FEATURES

from .conftest import SIM, read_topic, wait_for

pytestmark = pytest.mark.integration

BIG = 1536 * 1024  # over the 1 MiB a default producer accepts


def hostile_records(good: dict) -> list[tuple[str, bytes | None, bytes | None]]:
    """(expected reason, key, value) of records no learner may choke on."""
    features = good["features"]
    misnamed = dict(features)
    misnamed["zzz"] = misnamed.pop(FEATURES[0])  # the right count of features, one misnamed
    unicode_named = {("ämount" if k == FEATURES[0] else k): v for k, v in features.items()}
    event = lambda **over: orjson.dumps({**good, **over})
    bare = lambda token: event(id="h-token")[:-1] + b', "features": {"%s": %s}}' % (FEATURES[0].encode(), token)
    return [
        ("missing_feature", None, event(id="h-misnamed", features=misnamed)),
        ("missing_feature", None, event(id="h-unicode", features=unicode_named)),
        ("unknown_feature", None, event(id="h-extra", features={**features, "€uro 💳": 1})),
        ("too_large", b"big", event(id="h-big", pad="x" * BIG)),
        ("not_json", b"null-value", None),
        ("not_json", None, b""),
        ("not_json", None, b"\xff\xfe not json"),
        ("not_json", b"k" * 5000, b"{oops"),
        ("not_json", None, bare(b"NaN")),
        ("not_json", None, bare(b"-Infinity")),
        ("not_json", None, bare(b"1" + b"0" * 400)),  # an integer beyond the range of a double
        ("not_json", None, b"[" * 5000 + b"]" * 5000),
        ("not_json", None, b'{"id": "\\ud800", "time": 0}'),
        ("not_object", None, orjson.dumps([good, good])),
        ("not_object", None, b'"just a string"'),
        ("bad_id", None, b"{}"),
        ("bad_id", None, event(id="x" * 300)),
        ("bad_id", None, event(id="h-dupkey")[:-1] + b', "id": {"nested": true}}'),
        ("bad_time", None, event(id="h-future", time=good["time"] * 1000)),  # epoch milliseconds
        ("bad_time", None, event(id="h-future-iso", time="+275760-09-13T00:00:00Z")),
        ("bad_features", None, event(id="h-array", features=list(features.values()))),
        ("bad_value", None, event(id="h-nested", features={**features, FEATURES[0]: {"v": [1, {"w": 2}]}})),
        ("bad_value", None, event(id="h-bool", features={**features, FEATURES[0]: True})),
        ("bad_value", None, event(id="h-nan-string", features={**features, FEATURES[0]: "NaN"})),
        ("bad_value", None, event(id="h-null", features={**features, FEATURES[0]: None})),
        ("bad_label", None, event(id="h-label", label=2)),
        ("bad_entities", None, event(id="h-entities", entities={"card": ["c-1"]})),
    ]


def test_a_dead_letter_is_never_larger_than_the_producer_accepts(broker):
    topic = f"dlq-{time.monotonic_ns()}"
    cfg = kio.client_config(broker.bootstrap)
    kio.ensure_topics(cfg, [topic])
    producer = kio.producer(cfg)  # max_request_size: kafka-python's default, 1 MiB
    dead_letters = kio.DeadLetters(producer, topic)
    outcomes: list[Exception | None] = []
    raw = b"{" + b"x" * (2 * 1024 * 1024)
    dead_letters.send(raw, b"card-1", "too_large", "event is 2 MiB", ("tx", 0, 41), outcomes.append)
    dead_letters.send(None, None, "not_json", "the record has no value", ("tx", 0, 42), outcomes.append)
    dead_letters.flush()
    assert outcomes == [None, None]
    big, null = sorted(read_topic(broker.bootstrap, topic, 2), key=lambda r: r.key)
    headers = dict(big.headers)
    assert headers["perennial.truncated"] == str(len(raw)).encode() and headers["perennial.key"] == b"card-1"
    assert raw.startswith(big.value) and len(big.value) == dead_letters.max_value_bytes
    assert big.key == b"tx/0/41" and headers["perennial.source"] == b"tx/0/41"
    assert null.value is None and dict(null.headers)["perennial.null_value"] == b"true" and null.key == b"tx/0/42"

    producer.close()  # a record the producer cannot send is reported, never raised
    dead_letters.send(b"{", None, "not_json", "x", ("tx", 0, 43), outcomes.append)
    assert len(outcomes) == 3 and isinstance(outcomes[2], Exception)


def test_the_learner_keeps_learning_through_a_stream_seeded_with_hostile_records(stack):
    valid = [value for chunk in SIM.labeled_stream(45, end_day=48) for _, value in encode_rows(chunk)]
    hostile = hostile_records(orjson.loads(valid[0]))
    hostile.append(("duplicate_id", None, valid[10]))
    stack.env["PERENNIAL_LEARN__ROUND_MAX_EVENTS"] = stack.env["PERENNIAL_LEARN__ROUND_EVENTS"]  # rounds all along the stream
    learner = stack.start("learn")
    wait_for(lambda: stack.learner_metric("perennial_learner_events_consumed_total") >= 0, 180, "learner up")

    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=5, max_request_size=4 * 1024 * 1024)
    sent: dict[tuple[int, int], tuple[str, bytes | None, bytes | None]] = {}  # source partition, offset -> hostile record
    every = len(valid) // (len(hostile) + 1)
    for i, (reason, key, value) in enumerate(hostile):
        for v in valid[i * every : (i + 1) * every]:
            producer.send(stack.topic, value=v)
        meta = producer.send(stack.topic, key=key, value=value).get(30)  # the topic may have any number of partitions
        sent[meta.partition, meta.offset] = (reason, key, value)
    for v in valid[len(hostile) * every :]:
        producer.send(stack.topic, value=v)
    producer.flush(30)
    producer.close()
    total = len(valid) + len(hostile)

    wait_for(lambda: stack.learner_metric("perennial_learner_events_consumed_total") == total, 240, "learner to read everything")
    consumed, _ = wait_for(lambda: _balance(stack), 60, "accounting from /metrics to balance")
    assert consumed == total

    dlq = read_topic(stack.bootstrap, f"{stack.topic}.dlq", len(hostile), timeout=60)
    sources = [tuple(int(n) for n in dict(r.headers)["perennial.source"].decode().rsplit("/", 2)[1:]) for r in dlq]
    assert sorted(sources) == sorted(sent), "each hostile record in the dead-letter topic exactly once"
    for (partition, offset), record in zip(sources, dlq):
        reason, key, value = sent[partition, offset]
        headers = dict(record.headers)
        assert headers["perennial.reason"].decode() == reason, (value[:200] if value else value, headers)
        assert record.key == f"{stack.topic}/{partition}/{offset}".encode() and headers.get("perennial.key") == (key[:1024] if key else None)
        if value is None:
            assert record.value is None and headers["perennial.null_value"] == b"true"
        elif len(value) > BIG:
            assert headers["perennial.truncated"] == str(len(value)).encode() and value.startswith(record.value)
            assert len(record.value) < 1024 * 1024
        else:
            assert record.value == value and "perennial.truncated" not in headers

    assert learner.poll() is None and stack.log("learn").count('"event":"learning"') == 1, stack.log("learn")[-3000:]
    wait_for(lambda: stack.learner_idle(below=64), 60, "the last round (round_min_events)")
    assert stack.learner_metric("perennial_learner_rounds_total") >= 5
    assert stack.learner_metric("perennial_learner_events_trained_total") >= 0.8 * len(valid)
    assert stack.learner_metric("perennial_learner_versions_published_total") >= 1, stack.log("learn")[-3000:]
    assert stack.learner_metric("perennial_learner_dead_letter_failures_total") == 0
    assert stack.learner_metric('perennial_learner_events_dead_lettered_total{reason="internal_error"}') == 0


def _balance(stack) -> tuple[float, float] | None:
    """consumed and trained + held_out + quarantined + pending + pending_holdout + dead-lettered,
    from one scrape; None until they are equal (a round in progress has taken its events out of the
    buffers and not yet counted them)."""
    text = httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5).text
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    value = lambda name: float(samples[f"perennial_learner_{name}"])
    by_reason = ("perennial_learner_events_quarantined_total{", "perennial_learner_events_dead_lettered_total{")
    accounted = value("events_trained_total") + value("events_held_out_total")
    accounted += value("pending_events") + value("pending_holdout_events")
    accounted += sum(float(v) for k, v in samples.items() if k.startswith(by_reason))
    consumed = value("events_consumed_total")
    return (consumed, accounted) if consumed == accounted else None
