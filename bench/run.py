"""`make bench`: run the benchmarks and write docs/benchmarks.md (machine and date included).

Serving against the bare FastAPI ceiling, peers (LitServe, MLServer, BentoML), swaps under load,
learning throughput against its bounds, freshness, learner and server memory. The continual-learning quality
harness (`perennial evaluate`, docs/evaluation.md) runs after these from the Makefile.
"""

from __future__ import annotations

import sys

import join
import learning
import own_data
import peers
import prediction_log
import server_memory
import serving
import swaps
from common import ROOT, report

SECTIONS = {
    "serving": (
        "Serving", serving.main,
        [f"wrk -t1 -c32 -d{serving.SECONDS}s (batches of 1,024: -c4); one uvicorn worker each; ours and the ceiling measured alternately in this run",
         f"under CPU contention: two of our servers, serve.numeric_threads 1 (the default) and 0 (each library's own pool, "
         f"a thread per core), batches of 64, wrk -t1 -c32 -d{serving.SECONDS // 2}s each, alternately, twice, while a busy "
         "Python loop per CPU of the machine runs; p99: the worse of the two runs"],
        ROOT / "docs" / "benchmarks" / "serving.md",
    ),
    "prediction-log": (
        "Prediction log", prediction_log.main,
        [f"wrk -t1 -c32 -d{prediction_log.SECONDS}s of single events with ids, alternately against three servers: ours with the "
         "prediction log off, ours with it on to the local broker (Tansu) on the same 2 cores, and the bare FastAPI ceiling; "
         "then batches of 64 off and on; sent: records Kafka confirmed by the end of the run",
         "the serving targets (ratio to the ceiling, predictions/s in batches of 64) are held with the log on"],
        ROOT / "docs" / "benchmarks" / "prediction-log.md",
    ),
    "join": (
        "Join of late labels", join.main,
        [f"the state alone (learners/join.py, SQLite, {len(join.FEATURES)} float32 features a prediction): "
         f"{join.PENDING:,} predictions logged in steps of {join.STEP:,}, then {join.LABELS:,} labels for random ones; "
         "resident set read from /proc in a process of its own (which has torch loaded, as the learner has)",
         f"end to end: a Joiner thread (as in `perennial learn`) on the local broker (Tansu), {join.E2E_PREDICTIONS:,} predictions "
         f"in batches of 1,000 and {join.E2E_LABELS:,} labels already on their topics; until the broker has every joined event"],
        ROOT / "docs" / "benchmarks" / "join.md",
    ),
    "peers": (
        "Peers", peers.main,
        [f"wrk -t1 -c32 -d{peers.SECONDS}s per figure, one worker each, every peer in its own virtual environment under {peers.VENVS}",
         "ours is measured again before each peer, and each ratio divides by that measurement (the machine's load may change "
         "in the minutes a run takes)",
         "each peer's first answer is checked against ours (same score to 1e-5) before it is measured",
         "LitServe gets the same JSON bodies as /v1/predict, BentoML the same events under {\"events\": [...]}, "
         "MLServer a V2-protocol FP32 tensor of the same rows (cheaper to parse than JSON objects)",
         f"each peer twice: adaptive batching off (its default) and on, at most {peers.MAX_BATCH} requests a pass and a wait of at most "
         f"{peers.MAX_WAIT_MS:g} ms to fill it: LitServe max_batch_size / batch_timeout (batch and unbatch join and split the events), "
         "MLServer max_batch_size / max_batch_time in model-settings.json, BentoML @bentoml.api(batchable=True, "
         f"max_batch_size={peers.MAX_BATCH * peers.BATCH:,} events) with its own wait (max_latency_ms, a deadline past which it "
         "answers 503, left at its default)",
         "ours has no such settings (ServeSettings has none): a forward pass takes every request parsed in the same turn of the "
         "event loop, with no timer and no cap; under wrk's 32 connections no cap above is reached",
         "requests a pass: each server's forward passes counted while wrk ran (ours from /metrics, each peer's model counts its own); "
         "a peer whose batching did not do what it was set to (a shared pass when off, none when on) is reported as not measured"],
        ROOT / "docs" / "benchmarks" / "peers.md",
    ),
    "own-data": (
        "Your own data and model", own_data.main,
        [f"wrk -t1 -c32 -d{own_data.SECONDS}s per figure, single events and batches of 64 through /v1/predict, alternately "
         "against four servers in this run, twice each; one uvicorn worker each; freshly initialised networks",
         "numbers: the built-in network on the simulator's numeric features (numpy forward pass), the baseline of every ratio",
         "missing: two optional numbers besides, a quarter of events leave each out and a quarter send null",
         "categories: three categorical features besides (vocabularies of 4, 20 and 50; one value in ten unseen), embedded by "
         "the built-in network (numpy: one gather each, folded into the first layer)",
         "custom torch: the baseline's features through a user's module of the built-in shape (bench/nets.py, by import name), "
         "scored by torch under inference_mode"],
        ROOT / "docs" / "benchmarks" / "own-data.md",
    ),
    "swaps": (
        "Swaps under load", swaps.main,
        [f"wrk -t1 -c32 -d{swaps.SECONDS}s of single events twice: without swaps, then with a version published every second "
         "(the server follows the registry every 0.2 s, verifies, loads and warms each version, then swaps one reference)"],
        ROOT / "docs" / "benchmarks" / "swaps.md",
    ),
    "learning": (
        "Learning, freshness and memory", learning.main,
        [f"{learning.EVENTS:,} simulated labeled events on the local broker (Tansu); (a), (b), (c) and ours on the same events in this run",
         "ours: the rate at which `perennial learn` accounts for events (trained or held out) between 10% and 90% of the topic, "
         "rounds, gates, publishing, checkpoints and offset commits included; the topic is a backlog, so rounds grow to "
         "`round_max_events`, except the 4 short rounds of each drift reaction (the simulated stream drifts)",
         "(c) is stock Avalanche (its own data loaders); our trainer keeps Avalanche's sampler, ReplayPlugin storage and EWCPlugin "
         "and fetches each batch with one tensor index: the same batches and weights (tests/unit/test_avalanche_adapter.py)",
         "the serial bound: a learner that reads and decodes (a) and trains like (b) on one thread cannot beat 1/(1/a + 1/b); "
         "0.8 of (a) and 0.5 of (b) both lie at or above it on this machine (training on a second thread while the first "
         "decodes was measured slower than one thread: the GIL)",
         "freshness: a producer at 2,000 events/s for 30 s, a server polled every 50 ms for its version; an event counts as served "
         "once a served version's manifest records offsets past it",
         "memory: resident set of the learner process, read from /proc"],
        ROOT / "docs" / "benchmarks" / "learning.md",
    ),
    "server-memory": (
        "Server memory", server_memory.main,
        ["batches of 1,024 events posted to /v1/predict one after another; resident set of the server process, read from /proc"],
        ROOT / "docs" / "benchmarks" / "server-memory.md",
    ),
}


if __name__ == "__main__":
    # `python run.py learning serving` reruns those sections only; docs/benchmarks.md is rebuilt from
    # every section's file, so each section keeps the date of the run that measured it.
    chosen = sys.argv[1:] or list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    for name in chosen:
        title, measure, notes, path = SECTIONS[name]
        report(title, measure(), notes, path)
    parts = [path.read_text() for _, _, _, path in SECTIONS.values() if path.exists()]
    (ROOT / "docs" / "benchmarks.md").write_text(
        "# Benchmarks\n\nWritten by `make bench` (`python bench/run.py SECTION...` reruns some).\n\n" + "\n".join(parts)
    )
