"""A learner killed with SIGKILL at three random moments and restarted loses no labeled event and counts
none twice: every produced event ends up trained, held out, pending or dead-lettered, exactly once."""

from __future__ import annotations

import random
import signal
import threading
import time

import orjson
import pytest

from learners.checkpoint import load_checkpoint
from learners.registry import Registry
from streams.simulate import encode_rows

from .conftest import SIM, producer, read_to_end, wait_for

pytestmark = pytest.mark.integration


def test_sigkilled_learner_loses_no_event(stack):
    rng = random.Random(1)
    values = [v for chunk in SIM.labeled_stream(45, end_day=52) for _, v in encode_rows(chunk)][:15000]
    duplicates = [values[i] for i in rng.sample(range(len(values)), 200)]
    malformed = [b"{broken %d" % i for i in range(50)]
    stream = values + duplicates + malformed
    rng.shuffle(stream)

    kills = 3
    slices = [stream[i * len(stream) // (kills + 1) : (i + 1) * len(stream) // (kills + 1)] for i in range(kills + 1)]
    released = threading.Semaphore(0)

    def produce() -> None:
        # A slice before the first kill and one after each restart: every kill lands mid-stream,
        # however slow the machine is to restart the learner.
        p = producer(stack.bootstrap, stack.topic)
        for part in slices:
            released.acquire()
            for value in part:
                p.send(stack.topic, value=value)
            p.flush()
        p.close()

    stack.start("learn")
    feeder = threading.Thread(target=produce)
    feeder.start()
    released.release()
    for kill in range(kills):
        # consuming: the partition assigned to this incarnation (up is not enough on a busy machine)
        wait_for(lambda kill=kill: stack.log("learn").count('"event":"assigned"') > kill, 180, "learner to be assigned its partition")
        time.sleep(rng.uniform(0.3, 2.5))  # lands in consuming, training, gating, publishing or checkpointing
        stack.stop("learn", signal.SIGKILL)
        stack.start("learn")
        released.release()
    feeder.join()
    ids = {orjson.loads(v)["id"] for v in values}
    wait_for(lambda: _consumed_total(stack) == len(stream), 120, "learner to account for every event")
    assert stack.stop("learn") == 0  # graceful stop writes the final checkpoint

    _, meta = load_checkpoint(stack.checkpoint)
    a = meta["accounting"]
    pending = int(_pending(stack))
    assert a["consumed"] == len(stream), a
    assert a["trained"] + a["held_out"] + a["quarantined"] + pending == len(ids), a
    assert a["trained"] + a["held_out"] + a["quarantined"] + pending + sum(a["dead_lettered"].values()) == len(stream)
    assert a["dead_lettered"] == {"not_json": len(malformed), "duplicate_id": len(duplicates)}

    # The dead-letter topic holds every malformed event once: what was sent before a kill is not
    # sent again when the restarted learner reads those events again.
    dlq = read_to_end(stack.bootstrap, f"{stack.topic}.dlq")
    sources = [dict(r.headers)["perennial.source"] for r in dlq]
    assert len(sources) == len(set(sources)) == len(malformed) + len(duplicates), f"{len(sources) - len(set(sources))} repeated"
    assert {bytes(r.value) for r in dlq if dict(r.headers)["perennial.reason"] == b"not_json"} == set(malformed)
    assert {bytes(r.value) for r in dlq if dict(r.headers)["perennial.reason"] == b"duplicate_id"} == set(duplicates)
    # CURRENT always names a complete, checksum-valid version.
    reg = Registry(stack.registry)
    assert reg.load_current() is not None and not [p for p in (stack.registry / "versions").iterdir() if p.name.startswith(".")]


def _consumed_total(stack) -> int:
    loaded = load_checkpoint(stack.checkpoint)
    return loaded[1]["accounting"]["consumed"] if loaded else -1


def _pending(stack) -> int:
    tensors, _ = load_checkpoint(stack.checkpoint)
    return len(tensors["pending.y"]) + len(tensors["pending_holdout.y"])
