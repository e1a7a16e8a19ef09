"""Learning benchmark: `perennial learn` end to end (Kafka -> replay + online EWC -> gates -> publish)
against what bounds it, on the same events in the same run:

(a) kafka-python consuming and decoding the same topic, nothing else;
(b) a raw PyTorch loop on the same network, same epochs, same replay ratio (one replayed event per new);
(c) Avalanche driven naively: one 256-event experience per call with Naive + ReplayPlugin + EWCPlugin,
    stock (its own data loaders), same storage policy, memory size, epochs and learning rate.

Our trainer alone (the learner's ContinualLearner on the same rows, no Kafka) is measured too, to
show how much of the end-to-end time is training and how much is the stream.

Also freshness (a labeled event's production to the first served version trained on it) with a
producer at a steady rate, and the learner's memory after 100,000 and 1,000,000 events.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import orjson
import torch
from common import SIM, registry, rss_mib, start, stop, wait_http

from learners.avalanche_adapter import ContinualLearner
from learners.model import TabularNet
from learners.registry import Registry
from perennial.settings import Settings
from streams import kafka as kio
from streams.broker import LocalBroker, free_port
from streams.simulate import encode_rows
from streams.simulator import Transactions

EVENTS = 200_000


def events(n: int, start_day: int = 30) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for chunk in SIM.labeled_stream(start_day):
        out += encode_rows(chunk)
        if len(out) >= n:
            return out[:n]
    return out


def produce(bootstrap: str, topic: str, rows: list[tuple[bytes, bytes]], rate: float | None = None) -> list[float]:
    """Send rows (at ``rate`` per second, or as fast as possible); returns each row's send time."""
    config = kio.client_config(bootstrap)
    kio.ensure_topics(config, [topic])
    producer = kio.producer(config, linger_ms=5)
    sent_at = []
    started = time.time()
    for i, (key, value) in enumerate(rows):
        if rate and i % 50 == 0:
            ahead = i / rate - (time.time() - started)
            if ahead > 0:
                time.sleep(ahead)
        sent_at.append(time.time())
        producer.send(topic, value=value, key=key)
    producer.flush(60)
    producer.close()
    return sent_at


def consume_only(bootstrap: str, topic: str, n: int) -> float:
    """(a) events/s of kafka-python consuming and JSON-decoding the topic from the start."""
    consumer = kio.consumer(kio.client_config(bootstrap), group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    consumer.subscribe([topic])
    got, started = 0, None
    deadline = time.monotonic() + 300
    while got < n and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500, max_records=5000).values():
            if started is None:
                started = time.perf_counter()
            for r in records:
                orjson.loads(r.value)
                got += 1
    consumer.close()
    return got / (time.perf_counter() - started)


def learner_env(tmp: Path, reg: Path, bootstrap: str, topic: str, metrics_port: int, name: str = "") -> dict[str, str]:
    return {
        "PERENNIAL_REGISTRY__PATH": str(reg), "PERENNIAL_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "PERENNIAL_KAFKA__TOPIC": topic,
        "PERENNIAL_KAFKA__GROUP_ID": f"bench-{topic}{name}", "PERENNIAL_LEARN__CHECKPOINT_PATH": str(tmp / f"{topic}{name}.ckpt"),
        "PERENNIAL_LEARN__METRICS_PORT": str(metrics_port), "PERENNIAL_KAFKA__ANNOUNCE_TOPIC": f"{topic}.announce",
        "PERENNIAL_KAFKA__CONTROL_TOPIC": f"{topic}.control",
    }


def accounted(metrics_url: str) -> float:
    """Events trained + held out + quarantined + dead-lettered, from the learner's /metrics."""
    total = 0.0
    for line in httpx.get(metrics_url, timeout=5).text.splitlines():
        name = line.split(" ")[0].split("{")[0]
        if name in ("perennial_learner_events_trained_total", "perennial_learner_events_held_out_total",
                    "perennial_learner_events_quarantined_total", "perennial_learner_events_dead_lettered_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def ours(tmp: Path, reg: Path, bootstrap: str, topic: str, n: int, name: str = "", env: dict[str, str] | None = None) -> float:
    """(ours) sustained accounted events/s of `perennial learn` on a topic that already holds n events."""
    port = free_port()
    env = {**learner_env(tmp, reg, bootstrap, topic, port, name), **(env or {})}
    proc = start([sys.executable, "-m", "perennial.cli", "learn"], env, tmp / f"learn-{topic}{name}.log")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_http(url, 120)
        marks: dict[str, tuple[float, float]] = {}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = accounted(url)
            now = time.perf_counter()
            if done >= 0.1 * n and "lo" not in marks:
                marks["lo"] = (now, done)
            if done >= 0.9 * n:
                marks["hi"] = (now, done)
                break
            time.sleep(0.1)
    finally:
        stop(proc)
    (t1, a1), (t2, a2) = marks["lo"], marks["hi"]
    return (a2 - a1) / (t2 - t1)


def raw_torch(x: np.ndarray, y: np.ndarray, settings: Settings, net: TabularNet) -> float:
    """(b) new events/s of a plain loop: Adam, the learner's epochs and batch size, one replayed
    event (from a class-balanced tensor memory) per new event in every batch."""
    cfg = settings.learn
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()
    mem_x, mem_y = xt[: cfg.replay_size].clone(), yt[: cfg.replay_size].clone()
    gen = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for lo in range(0, len(yt), cfg.round_events):
        rx, ry = xt[lo : lo + cfg.round_events], yt[lo : lo + cfg.round_events]
        for _ in range(cfg.epochs):
            perm = torch.randperm(len(ry), generator=gen)
            for i in range(0, len(perm), cfg.batch_size):
                idx = perm[i : i + cfg.batch_size]
                mem = torch.randint(0, len(mem_y), (len(idx),), generator=gen)
                bx, by = torch.cat([rx[idx], mem_x[mem]]), torch.cat([ry[idx], mem_y[mem]])
                opt.zero_grad()
                loss_fn(net(bx), by).backward()
                opt.step()
        keep = torch.randint(0, len(mem_y), (len(ry),), generator=gen)  # reservoir-like refresh
        mem_x[keep], mem_y[keep] = rx, ry
    return len(yt) / (time.perf_counter() - started)


def naive_avalanche(x: np.ndarray, y: np.ndarray, settings: Settings, net: TabularNet, size: int = 256) -> float:
    """(c) new events/s of stock Avalanche fed one ``size``-event experience per call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as tensor_dataset
        from avalanche.training.plugins import EWCPlugin, ReplayPlugin
        from avalanche.training.plugins.evaluation import EvaluationPlugin
        from avalanche.training.storage_policy import ClassBalancedBuffer
        from avalanche.training.supervised import Naive

        cfg = settings.learn
        strategy = Naive(
            model=net, optimizer=torch.optim.Adam(net.parameters(), lr=cfg.learning_rate), criterion=torch.nn.CrossEntropyLoss(),
            train_mb_size=cfg.batch_size, train_epochs=cfg.epochs, device="cpu", evaluator=EvaluationPlugin(loggers=[]), eval_every=-1,
            plugins=[
                ReplayPlugin(mem_size=cfg.replay_size, storage_policy=ClassBalancedBuffer(cfg.replay_size, adaptive_size=True)),
                EWCPlugin(ewc_lambda=cfg.ewc_lambda, mode="online", decay_factor=cfg.ewc_decay),
            ],
        )
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        started = time.perf_counter()
        for i in range(0, len(y), size):
            data = tensor_dataset(xt[i : i + size], yt[i : i + size])
            strategy.train(benchmark_from_datasets(train=[data]).train_stream[0])
    return len(y) / (time.perf_counter() - started)


def trainer_alone(x: np.ndarray, y: np.ndarray, settings: Settings, net: TabularNet, round_events: int) -> float:
    """New events/s of our ContinualLearner (replay + online EWC, batched data path) in rounds of
    ``round_events``, memory seeded as after pretraining; no Kafka, no gates."""
    learner = ContinualLearner(net, settings.learn)
    learner.seed_replay(x[: settings.learn.replay_size], y[: settings.learn.replay_size])
    started = time.perf_counter()
    for i in range(0, len(y), round_events):
        learner.learn(x[i : i + round_events], y[i : i + round_events])
    return len(y) / (time.perf_counter() - started)


def freshness(tmp: Path, reg: Path, bootstrap: str, topic: str, rate: float, seconds: float) -> tuple[float, float, int]:
    """p50/p95 seconds from an event's production to the first version trained past it being served
    by a running server (polled every 50 ms), with a producer at ``rate`` for ``seconds``."""
    sport, lport = free_port(), free_port()
    env = learner_env(tmp, reg, bootstrap, topic, lport)
    server = start([sys.executable, "-m", "perennial.cli", "serve"], {**env, "PERENNIAL_SERVE__PORT": str(sport)}, tmp / "fresh-serve.log")
    learner = start([sys.executable, "-m", "perennial.cli", "learn"], env, tmp / "fresh-learn.log")
    served_at: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        with httpx.Client() as client:
            while not done.is_set():
                try:
                    v = client.get(f"http://127.0.0.1:{sport}/v1/model", timeout=2).json()["version"]
                    served_at.setdefault(v, time.time())
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
                time.sleep(0.05)

    try:
        wait_http(f"http://127.0.0.1:{sport}/readyz", 120)
        wait_http(f"http://127.0.0.1:{lport}/metrics", 120)
        kio.ensure_topics(kio.client_config(bootstrap), [topic])
        time.sleep(8)  # the learner's consumer group joins
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        rows = events(int(rate * seconds), start_day=50)
        sent_at = produce(bootstrap, topic, rows, rate)
        time.sleep(15)
    finally:
        done.set()
        stop(learner)
        stop(server)
    registry_ = Registry(reg)
    key = f"{topic}:0"
    versions = sorted((registry_.manifest(v).get("offsets", {}).get(key, 0), served_at[v]) for v in served_at if v in registry_.versions())
    versions = [(off, t) for off, t in versions if off > 0]
    delays = []
    for off_i, t_sent in enumerate(sent_at):
        first = next((t for off, t in versions if off > off_i), None)
        if first is not None:
            delays.append(first - t_sent)
    covered = len(delays)
    return float(np.percentile(delays, 50)), float(np.percentile(delays, 95)), covered


def memory(tmp: Path, reg: Path, bootstrap: str, topic: str, marks: tuple[int, ...]) -> dict[int, float]:
    """Learner RSS (MiB) once it has accounted for each number of events in ``marks``."""
    port = free_port()
    rows_needed = max(marks)
    proc = start([sys.executable, "-m", "perennial.cli", "learn"], learner_env(tmp, reg, bootstrap, topic, port), tmp / "mem-learn.log")
    out: dict[int, float] = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", 120)
        config = kio.client_config(bootstrap)
        kio.ensure_topics(config, [topic])
        producer = kio.producer(config, linger_ms=20)
        sent = 0
        day = 30
        deadline = time.monotonic() + 1800
        while len(out) < len(marks) and time.monotonic() < deadline:
            if sent < rows_needed:
                chunk: Transactions = SIM.generate(day, 1)
                day += 1
                for key, value in encode_rows(chunk):
                    producer.send(topic, value=value.replace(b'"id":"', f'"id":"m{day}-'.encode(), 1), key=key)
                sent += len(chunk)
                producer.flush(60)
            done = accounted(f"http://127.0.0.1:{port}/metrics")
            for m in marks:
                if m not in out and done >= m:
                    out[m] = rss_mib(proc.pid)
            if sent >= rows_needed:
                time.sleep(1)
        producer.close()
    finally:
        stop(proc)
    return out


def main(memory_marks: tuple[int, ...] = (100_000, 500_000, 1_000_000)) -> list[tuple[str, str, str, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="perennial-bench-learn-"))
    base = registry(tmp / "base")
    settings = Settings()
    torch.set_num_threads(1)
    rows = events(EVENTS)
    model = Registry(base).load_current()
    parsed = [orjson.loads(v) for _, v in rows]
    x = model.schema.transform(np.array([[e["features"][n] for n in model.schema.names] for e in parsed], np.float64))
    y = np.array([e["label"] for e in parsed], np.int64)

    def fresh_net() -> TabularNet:
        return TabularNet.from_state({k: torch.from_numpy(np.array(v)) for k, v in model.weights.items()})

    with LocalBroker(log_path=tmp / "broker.log") as broker:
        produce(broker.bootstrap, "bench.learn", rows)
        rate_a = consume_only(broker.bootstrap, "bench.learn", EVENTS)
        print(f"(a) {rate_a:,.0f}/s", file=sys.stderr)
        reg = tmp / "reg-ours"
        shutil.copytree(base, reg)
        rate_ours = ours(tmp, reg, broker.bootstrap, "bench.learn", EVENTS)
        print(f"ours {rate_ours:,.0f}/s", file=sys.stderr)
        reg = tmp / "reg-calm"
        shutil.copytree(base, reg)
        rate_calm = ours(tmp, reg, broker.bootstrap, "bench.learn", EVENTS, "-calm", {"PERENNIAL_LEARN__DRIFT_REACTION": "false"})
        print(f"ours without drift reaction {rate_calm:,.0f}/s", file=sys.stderr)
        rate_b = raw_torch(x, y, settings, fresh_net())
        rate_c = naive_avalanche(x[:10_240], y[:10_240], settings, fresh_net())
        cfg = settings.learn
        alone = {n: trainer_alone(x, y, settings, fresh_net(), n) for n in (cfg.round_events, cfg.round_max_events)}
        reg = tmp / "reg-fresh"
        shutil.copytree(base, reg)
        print(f"(b) {rate_b:,.0f}/s (c) {rate_c:,.0f}/s", file=sys.stderr)
        p50, p95, covered = freshness(tmp, reg, broker.bootstrap, "bench.fresh", rate=2000, seconds=30)
        print(f"freshness p50 {p50:.1f} s p95 {p95:.1f} s over {covered} events", file=sys.stderr)
        reg = tmp / "reg-mem"
        shutil.copytree(base, reg)
        mem = memory(tmp, reg, broker.bootstrap, "bench.memory", memory_marks)
    shutil.rmtree(tmp, ignore_errors=True)
    r_a, r_b, r_c = rate_ours / rate_a, rate_ours / rate_b, rate_ours / rate_c
    serial = 1 / (1 / rate_a + 1 / rate_b)  # consuming (a) then training (b) on one thread, nothing else
    # the dedup window (200,000 ids) and the held-out set fill early: flat means no growth after that
    lo, hi = sorted(mem)[-2:] if len(mem) > 1 else (min(mem), max(mem))
    growth = mem.get(hi, float("nan")) / mem.get(lo, float("nan"))
    return [
        ("learning: `perennial learn` end to end, events/s", f"{rate_ours:,.0f}", "", ""),
        ("learning: the same with the drift reaction off (no short rounds after a drift), events/s", f"{rate_calm:,.0f}", "", ""),
        ("(a) kafka-python consume + decode alone, events/s", f"{rate_a:,.0f}", "", ""),
        ("(b) raw PyTorch loop, same model, epochs and replay ratio, new events/s", f"{rate_b:,.0f}", "", ""),
        ("(c) stock Avalanche, one 256-event experience per call, new events/s", f"{rate_c:,.0f}", "", ""),
        *[(f"our trainer alone, {n:,}-event rounds (no Kafka, no gates), new events/s; ratio to (b)", f"{v:,.0f}; {v / rate_b:.2f}", "", "")
          for n, v in alone.items()],
        ("learning: ratio to (a)", f"{r_a:.2f}", ">= 0.80", "yes" if r_a >= 0.8 else "no"),
        ("learning: ratio to (b)", f"{r_b:.2f}", ">= 0.50", "yes" if r_b >= 0.5 else "no"),
        ("learning: ratio to (c)", f"{r_c:.1f}", ">= 10", "yes" if r_c >= 10 else "no"),
        ("serial bound: (a) and (b) one after the other, 1/(1/a + 1/b), events/s; ours / bound", f"{serial:,.0f}; {rate_ours / serial:.2f}", "", ""),
        (f"freshness at 2,000 events/s, p50 / p95 ({covered:,} events)", f"{p50:.1f} s / {p95:.1f} s", "p50 < 10 s", "yes" if p50 < 10 else "no"),
        *[(f"learner RSS after {m:,} events", f"{v:,.0f} MiB", "", "") for m, v in sorted(mem.items())],
        (f"learner RSS growth from {lo:,} to {hi:,} events", f"{growth:.2f}", "flat (<= 1.10)", "yes" if growth <= 1.10 else "no"),
    ]


if __name__ == "__main__":
    marks = tuple(int(v) for v in sys.argv[1].split(",")) if len(sys.argv) > 1 else (100_000, 500_000, 1_000_000)
    for row in main(marks):
        print(" | ".join(row))
