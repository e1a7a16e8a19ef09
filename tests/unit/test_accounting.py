"""Event intake of the learner, in process (real parser, buffers, checkpoint files; dead letters to a
recording stand-in): no record stops it, every consumed event is in exactly one place, on the
metrics too, and a dead letter acknowledged before a crash is not sent again when the learner
reads its events again from the checkpoint."""

from __future__ import annotations

import shutil
import zlib

import orjson
import pytest
from kafka.errors import UnknownError, UnknownTopicOrPartitionError

import learners.learner as learner_module
from learners.accounting import EventBuffer
from learners.learner import Learner
from learners.metrics import LearnerMetrics
from learners.pretrain import pretrain
from learners.registry import Registry
from perennial.settings import Settings
from streams.events import LabeledEvent
from streams.simulate import encode_rows
from streams.simulator import FEATURES, Simulator

SIM = Simulator(seed=5, customers=800, terminals=300)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("reg") / "registry"
    tx = SIM.generate(0, 10)
    pretrain(FEATURES, tx.features, tx.label, Registry(path), epochs=2, retention_size=500)
    return path


@pytest.fixture
def settings(tmp_path, base) -> Settings:
    shutil.copytree(base, tmp_path / "registry")
    return Settings(registry={"path": tmp_path / "registry"}, learn={"checkpoint_path": tmp_path / "ckpt" / "learner.safetensors"})


@pytest.fixture
def learner(settings) -> Learner:
    return Learner(settings, LearnerMetrics(), lambda *a, **f: None)


class DeadLetters:
    """Records what would be sent; the broker acknowledges each (or refuses it, with ``refuse``)."""

    def __init__(self, refuse: Exception | None = None):
        self.sent: list[tuple[tuple[str, int, int], str]] = []
        self.refuse = refuse

    def send(self, raw, key, reason, message, source, on_delivery) -> None:
        self.sent.append((source, reason))
        on_delivery(self.refuse)


VALID = [value for _, value in encode_rows(SIM.generate(10, 1))]


def misnamed(value: bytes) -> bytes:
    """The poison pill: the right number of features, one of them misnamed."""
    doc = orjson.loads(value)
    doc["features"]["zzz"] = doc["features"].pop(FEATURES[0])
    return orjson.dumps(doc)


def feed(learner: Learner, values: list[bytes | None], dead_letters: DeadLetters, first_offset: int = 0) -> None:
    for i, value in enumerate(values):
        learner.handle(value, None, ("t", 0, first_offset + i), dead_letters)
        learner.offsets["t:0"] = first_offset + i + 1


def balance(m: LearnerMetrics) -> tuple[float, float]:
    """consumed, and trained + held_out + quarantined + pending + pending_holdout + dead-lettered, from the metrics alone."""
    value = m.registry.get_sample_value
    accounted = value("perennial_learner_events_trained_total") + value("perennial_learner_events_held_out_total")
    accounted += value("perennial_learner_pending_events") + value("perennial_learner_pending_holdout_events")
    for by_reason in (m.quarantined, m.dead_lettered):
        accounted += sum(s.value for s in by_reason.collect()[0].samples if s.name.endswith("_total"))
    return value("perennial_learner_events_consumed_total"), accounted


def test_a_misnamed_feature_is_dead_lettered_and_rounds_and_checkpoints_go_on(learner):
    dead = DeadLetters()
    feed(learner, VALID[:300] + [misnamed(VALID[300])] + VALID[301:600], dead)
    assert dead.sent == [(("t", 0, 300), "missing_feature")]
    learner.checkpoint()
    assert learner.train_round(lambda manifest: None)["trained_events"] > 0


def test_an_unforeseen_failure_dead_letters_that_record_as_internal_error_and_learning_goes_on(learner, monkeypatch, caplog):
    real = learner_module.parse_event

    def parse(raw, names):
        if raw == VALID[5]:
            raise ZeroDivisionError("a fault of the learner")
        return real(raw, names)

    monkeypatch.setattr(learner_module, "parse_event", parse)
    dead = DeadLetters()
    feed(learner, VALID[:300], dead)
    assert dead.sent == [(("t", 0, 5), "internal_error")]
    assert learner.acct.dead_lettered == {"internal_error": 1}
    assert "ZeroDivisionError: a fault of the learner" in caplog.text  # with its traceback
    assert learner.train_round(lambda manifest: None)["trained_events"] + len(learner.holdout) == 299


def test_a_row_of_the_wrong_width_never_enters_a_buffer(learner, monkeypatch):
    with pytest.raises(ValueError, match="a row of 1 values cannot join a buffer of 2 features"):
        EventBuffer(2).add((1.0,), 0)
    monkeypatch.setattr(learner_module, "parse_event", lambda raw, names: LabeledEvent("x", 0.0, (1.0,), 0, {}))
    dead = DeadLetters()
    feed(learner, [VALID[0]], dead)
    assert dead.sent == [(("t", 0, 0), "internal_error")]
    assert len(learner.pending) == len(learner.pending_holdout) == 0 and "x" not in learner.seen
    learner.checkpoint()


def test_every_event_is_in_exactly_one_place_on_the_metrics_alone(learner):
    dead = DeadLetters()
    stream = VALID[:500] + VALID[:20] + [b"{oops", None, b"[]", misnamed(VALID[600])] + VALID[500:1000]
    feed(learner, stream, dead)
    m = learner.metrics
    assert m.registry.get_sample_value("perennial_learner_pending_holdout_events") == len(learner.pending_holdout) > 0
    assert balance(m) == (len(stream), len(stream))
    learner.train_round(lambda manifest: None)
    feed(learner, VALID[1000:1100], dead, first_offset=len(stream))
    assert balance(m) == (len(stream) + 100, len(stream) + 100)
    assert learner.acct.dead_lettered == {"duplicate_id": 20, "not_json": 2, "not_object": 1, "missing_feature": 1}
    assert m.registry.get_sample_value("perennial_learner_events_dead_lettered_total", {"reason": "duplicate_id"}) == 20
    assert "perennial_learner_events_deduplicated_total" not in {s.name for metric in m.registry.collect() for s in metric.samples}


def test_after_a_restart_the_metrics_balance_with_the_restored_events(learner, settings):
    feed(learner, VALID[:700] + [b"{oops"], DeadLetters())
    learner.checkpoint()
    again = Learner(settings, LearnerMetrics(), lambda *a, **f: None)
    restored = len(again.pending) + len(again.pending_holdout)
    assert restored == 700 and balance(again.metrics) == (700, 700)
    feed(again, VALID[700:800] + [b"[]"], DeadLetters(), first_offset=701)
    assert balance(again.metrics) == (801, 801)


def test_dead_letters_acknowledged_before_a_crash_are_not_sent_again_on_replay(learner, settings):
    before = VALID[:100] + [b"{a", b"{b"]
    after = VALID[100:200] + [b"{c", None, VALID[0]]  # offsets 102.., read again after the crash
    feed(learner, before, DeadLetters())
    learner.checkpoint()
    first = DeadLetters()
    feed(learner, after, first, first_offset=len(before))
    assert [reason for _, reason in first.sent] == ["not_json", "not_json", "duplicate_id"]
    # SIGKILL here, with a line being written: no checkpoint; the restarted learner reads `after` again
    with open(learner.journal.path, "a") as journal:
        journal.write("t/0/")
    again = Learner(settings, LearnerMetrics(), lambda *a, **f: None)
    replay = DeadLetters()
    feed(again, after, replay, first_offset=len(before))
    assert replay.sent == []
    assert again.acct.dead_lettered == {"not_json": 4, "duplicate_id": 1} == {**learner.acct.dead_lettered}
    changed = DeadLetters()  # the same offset with other bytes (a recreated topic) is sent
    again.handle(b"{d", None, ("t", 0, len(before) + 100), changed)
    assert changed.sent == [(("t", 0, len(before) + 100), "not_json")]
    again.checkpoint()
    assert not again.journal.path.exists() and not again.journal.delivered


def test_a_dead_letter_the_broker_refuses_for_good_is_counted_and_learning_goes_on(learner, caplog):
    refused = DeadLetters(refuse=RuntimeError("broker says no"))
    feed(learner, [b"{oops"] + VALID[:10], refused)
    assert learner.metrics.registry.get_sample_value("perennial_learner_dead_letter_failures_total") == 1
    assert learner.acct.dead_lettered == {"not_json": 1} and len(learner.pending) + len(learner.pending_holdout) == 10
    assert "t/0/0 was refused (RuntimeError: broker says no) and will not be sent again" in caplog.text
    assert not learner.journal.path.exists() and len(learner.undelivered) == 0


def test_a_dead_letter_refused_for_now_is_sent_again_even_after_a_restart(learner, settings, caplog):
    lost = DeadLetters(refuse=UnknownTopicOrPartitionError("the broker lost the topic"))
    feed(learner, VALID[:10] + [b"{oops", None], lost)
    assert len(learner.undelivered) == 2 and "t/0/10 could not be sent yet" in caplog.text
    learner.resend_dead_letters(lost)  # still refused: kept
    assert len(learner.undelivered) == 2 and len(lost.sent) == 4
    learner.checkpoint()  # offsets now lie past both records: the letters are kept beside the checkpoint
    again = Learner(settings, LearnerMetrics(), lambda *a, **f: None)
    assert len(again.undelivered) == 2
    back = DeadLetters()
    again.resend_dead_letters(back)
    assert back.sent == [(("t", 0, 10), "not_json"), (("t", 0, 11), "not_json")]
    assert len(again.undelivered) == 0 and again.journal.path.read_text().split() == ["t/0/10@" + str(zlib.crc32(b"{oops")), "t/0/11@null"]
    again.checkpoint()
    assert not again.undelivered.path.exists()


def test_the_brokers_own_unexpected_error_keeps_a_dead_letter_to_send_again(learner, caplog):
    """Kafka's UnknownError (code -1) is no verdict on the record: the embedded broker answered it for
    a dead letter while a lost topic was made again, and the letter was dropped for good."""
    unsure = DeadLetters(refuse=UnknownError("the broker had an unexpected error"))
    feed(learner, [b"{oops"] + VALID[:10], unsure)
    assert len(learner.undelivered) == 1 and "t/0/0 could not be sent yet" in caplog.text
    back = DeadLetters()
    learner.resend_dead_letters(back)
    assert back.sent == [(("t", 0, 0), "not_json")] and len(learner.undelivered) == 0
