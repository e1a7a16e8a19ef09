"""`perennial demo`: the whole loop on this machine for a bounded time.

Starts the local broker, pretrains a first version on simulated history (days 0-45: no card
testing), starts `perennial serve` and `perennial learn` as separate processes and `perennial
simulate` from day 45 (card testing appears; card compromise vanishes at day 50 and recurs at 66),
keeps posting predictions over HTTP, and prints live what happens. With ``demo.labels: join``
(``--labels join``) the simulator posts each transaction to the server when it happens and sends only
fraud labels, later, to ``<topic>.labels``: the server logs its predictions and the learner joins the
labels to them, the rest maturing into negatives. Every 15 s it measures, over
HTTP on the served model, average precision per fraud pattern on an independent sample. At the end
it stops every process it started and prints (and optionally writes) a summary.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from learners.quality import average_precision
from perennial import logs
from perennial.client import Client, PerennialError
from perennial.settings import Settings
from streams.broker import LocalBroker, free_port
from streams.simulator import FEATURES, Simulator

NEW_PATTERN = "card_testing"
OLD_PATTERNS = ("compromised_terminal", "card_compromise")
STREAM_START_DAY = 45


class _Process:
    """A process the demo stops at the end, like a Child but with nothing to read."""

    def __init__(self, name: str, proc: subprocess.Popen):
        self.name, self.proc = name, proc

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Child(_Process):
    """A `perennial` subcommand in its own process; its JSON lines go to a queue."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], events: queue.Queue, log_dir: Path):
        self.name = name
        self.log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child writes to it until close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perennial.cli", *args], env=env, stdout=subprocess.PIPE, stderr=self.log,
        )
        threading.Thread(target=self._read, args=(events,), daemon=True).start()

    def _read(self, events: queue.Queue) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.log.write(line)
            try:
                events.put((self.name, orjson.loads(line)))
            except orjson.JSONDecodeError:
                pass

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
        self.log.close()


def pattern_ap(client: Client, sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[str | None, dict[str, float | None]]:
    """Average precision of the served model per pattern, scored over HTTP in batches."""
    out, version = {}, None
    for name, (x, y) in sets.items():
        scores: list[float] = []
        for i in range(0, len(y), 1024):
            predictions = client.predict_many(dict(zip(FEATURES, row)) for row in x[i : i + 1024].tolist())
            version = predictions[-1].version
            scores.extend(p.score for p in predictions)
        out[name] = average_precision(y, np.asarray(scores))
    return version, out


def evaluation_sets(sim: Simulator, legit: int = 8000) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per pattern: a sample of legitimate transactions and every fraud of that pattern."""
    rng = np.random.default_rng(0)
    sets = {}
    for name, (x, y) in sim.pattern_sets(STREAM_START_DAY + 5, 6).items():
        neg = np.flatnonzero(y == 0)
        keep = np.sort(np.concatenate([np.flatnonzero(y == 1), rng.choice(neg, min(legit, len(neg)), replace=False)]))
        sets[name] = (x[keep], y[keep])
    return sets


def scrape(url: str) -> dict[str, float]:
    """Every sample of a /metrics page, summed over labels, by sample name (empty if unreachable)."""
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


class Traffic(threading.Thread):
    """A client that keeps posting single-event predictions, as a payment system would."""

    def __init__(self, base_url: str, rows: np.ndarray, stop: threading.Event, ids: bool = True):
        super().__init__(daemon=True)
        self.base_url, self.rows, self.stop_event, self.ids = base_url, rows, stop, ids
        self.ok = self.failed = 0

    def run(self) -> None:
        with Client(self.base_url, timeout=5) as client:
            i = 0
            while not self.stop_event.wait(0.02):
                row = self.rows[i % len(self.rows)]
                i += 1
                try:
                    # no id in join mode: not logged, so no wall-clock time enters the join's clock
                    client.predict(dict(zip(FEATURES, row.tolist())), id=f"live-{i}" if self.ids else None)
                    self.ok += 1
                except (PerennialError, httpx.HTTPError):
                    self.failed += 1


def _say(t0: float, text: str) -> None:
    """One line of the demo's story: readable at a terminal, a ``demo`` JSON event elsewhere."""
    if logs.use_json("auto", sys.stdout):
        logs.emit("demo", {"elapsed_s": round(time.monotonic() - t0, 1), "message": text})
    else:
        print(f"[{time.monotonic() - t0:6.1f}s] {text}", flush=True)


def _fmt_ap(aps: dict[str, float | None]) -> str:
    return "  ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in aps.items())


RULES = Path(__file__).resolve().parent.parent / "helm" / "perennial" / "rules" / "perennial-rules.yaml"
# The labels the dashboards and alert rules tell releases apart by: the demo is one release.
DEMO_RELEASE = {"namespace": "demo", "release": "perennial"}


def start_prometheus(work: Path, targets: dict[str, str], port: int) -> subprocess.Popen | None:
    """A local Prometheus scraping the demo's processes with the repo's alert rules, if installed."""
    binary = shutil.which("prometheus")
    if binary is None:
        return None
    config = {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target], "labels": DEMO_RELEASE}]}
            for job, target in targets.items()
        ],
    }
    (work / "prometheus.yml").write_bytes(orjson.dumps(config))  # JSON is YAML
    return subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'prometheus'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=open(work / "prometheus.log", "ab"), stderr=subprocess.STDOUT,
    )


def run_demo(settings: Settings, summary_json: Path | None = None, keep: bool = False, prometheus: bool = False) -> int:
    work = settings.demo.workdir.resolve()
    registry = work / "registry"
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    # The local broker is memory-only: offsets from an earlier run mean nothing to it.
    shutil.rmtree(work / "checkpoint", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    broker = LocalBroker(log_path=work / "broker.log").start()
    _say(t0, f"broker (Tansu, memory-only) on {broker.bootstrap}")
    children: list[Child] = []
    stop = threading.Event()
    try:
        return _run(settings, work, registry, broker, children, stop, t0, summary_json, prometheus)
    finally:
        stop.set()
        for child in reversed(children):
            child.stop()
        broker.stop()
        _say(t0, "stopped every process the demo started")


def _run(settings, work, registry, broker, children, stop, t0, summary_json, prometheus) -> int:
    from learners.registry import Registry

    sim = Simulator.from_settings(settings.simulate)
    serve_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "PERENNIAL_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "PERENNIAL_REGISTRY__PATH": str(registry),
        "PERENNIAL_LEARN__CHECKPOINT_PATH": str(work / "checkpoint" / "learner.safetensors"),
        "PERENNIAL_LEARN__METRICS_PORT": str(metrics_port),
        "PERENNIAL_SERVE__PORT": str(serve_port),
        "PERENNIAL_SIMULATE__RATE": str(settings.simulate.rate),
        "PERENNIAL_SIMULATE__FRAUD_KEEP": str(settings.simulate.fraud_keep),
        "PYTHONUNBUFFERED": "1",
    }
    if "numeric_threads" not in settings.learn.model_fields_set:  # broker, server, learner and simulator share this machine
        env["PERENNIAL_LEARN__NUMERIC_THREADS"] = "1"
    joined = settings.demo.labels == "join"
    if joined:
        maturity = settings.join.maturity_s if "maturity_s" in settings.join.model_fields_set else settings.demo.join_maturity_s
        env.update({"PERENNIAL_SERVE__PREDICTION_LOG": "true", "PERENNIAL_JOIN__ENABLED": "true", "PERENNIAL_JOIN__MATURITY_S": str(maturity)})
    events: queue.Queue = queue.Queue()
    if Registry(registry).current_version() is None:
        _say(t0, f"pretraining the first version on {settings.pretrain.history_days} days of simulated history ...")
        pre = Child("pretrain", ["pretrain"], env, events, work)
        pre.proc.wait()
        if pre.proc.returncode:
            _say(t0, f"pretraining failed; see {work / 'pretrain.log'}")
            return 1
        done: dict[str, Any] = {}
        while done.get("event") != "pretrained":  # after the lines that print the data it used
            _, done = events.get(timeout=5)
        split = done["split"]
        _say(t0, f"pretrained {done['version']} on {split['train']['events']:,} events ({split['train']['frauds']:,} frauds), "
                 f"validated on the next {split['validation']['events']:,} ({split['validation']['frauds']:,} frauds): "
                 f"validation AP {done['metrics']['validation_ap']:.3f}")
    children.append(Child("serve", ["serve"], env, events, work))
    children.append(Child("learn", ["learn"], env, events, work))
    base = f"http://127.0.0.1:{serve_port}"
    client = Client(base, timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if client.ready():
            break
        time.sleep(0.3)
    else:
        _say(t0, f"server did not become ready; see {work / 'serve.log'}")
        return 1
    sets = evaluation_sets(sim)
    version_start, ap_start = pattern_ap(client, sets)
    _say(t0, f"serving {version_start} at {base}")
    _say(t0, f"metrics: server {base}/metrics, learner http://127.0.0.1:{metrics_port}/metrics")
    if prometheus:
        prom_port = free_port()
        prom = start_prometheus(work, {"perennial-serve": f"127.0.0.1:{serve_port}", "perennial-learn": f"127.0.0.1:{metrics_port}"}, prom_port)
        if prom is None:
            _say(t0, "--prometheus: no prometheus binary found (Debian: apt-get install prometheus); going on without it")
        else:
            children.append(_Process("prometheus", prom))
            _say(t0, f"Prometheus on http://127.0.0.1:{prom_port} with the alert rules; it stops with the demo")
    _say(t0, f"served model AP at start: {_fmt_ap(ap_start)}   (new pattern: {NEW_PATTERN})")
    preview = sim.generate(STREAM_START_DAY, 3).label
    _say(t0, f"the stream's fraud rate: {preview.mean():.3%} ({int(preview.sum())} frauds in its first {len(preview):,} events)")
    simulate = ["simulate", "--start-day", str(STREAM_START_DAY)]
    if joined:
        simulate += ["--server", base]
        _say(t0, f"labels joined: transactions posted to the server at {settings.simulate.rate:.0f}/s for {settings.demo.duration_s:.0f} s "
                 f"and logged; fraud labels alone on {settings.kafka.labels_topic} when they come; the rest legitimate once "
                 f"{maturity / 86400:g} simulated days old")
    else:
        _say(t0, f"streaming labeled events at {settings.simulate.rate:.0f}/s for {settings.demo.duration_s:.0f} s; posting predictions meanwhile")
    children.append(Child("simulate", simulate, env, events, work))
    traffic = Traffic(base, sets[OLD_PATTERNS[0]][0][:2000], stop, ids=not joined)
    traffic.start()

    gate_decisions: list[dict[str, Any]] = []
    learner_url = f"http://127.0.0.1:{metrics_port}/metrics"
    stream_start = time.monotonic()
    last_status, last_eval, last_consumed = stream_start, stream_start, 0.0
    ap_now = ap_start
    while time.monotonic() - stream_start < settings.demo.duration_s:
        try:
            name, ev = events.get(timeout=0.5)
            if name == "learn" and ev["event"] == "gate":
                gate_decisions.append({k: ev.get(k) for k in ("round", "version", "passed", "outcome", "reasons", "metrics", "candidate")})
                _say(t0, gate_line(ev, settings.learn.gates.min_recent_positives, settings.learn.gates.confidence))
                if ev["outcome"] in ("failed", "no_better"):
                    _say(t0, "    why: " + "; ".join(ev["reasons"]))
            elif name == "learn" and ev["event"] == "release":
                _say(t0, f"    a round with an implausible fraud rate ({ev['frauds']} frauds in {ev['events']} events) proved learnable "
                         f"(cross-fitted AP {ev['cross_fitted_ap']:.3f} vs {ev['served_ap']:.3f} served): a burst, trained")
            elif name == "learn" and ev["event"] == "quarantine":
                _say(t0, f"    round {ev['round']}: {ev['events']} events quarantined ({ev['reason']}); kept for an operator")
            elif name == "learn" and ev["event"] == "drift":
                _say(t0, f"    drift detected (river ADWIN) before round {ev['round']}: served model's loss now {ev['loss_estimation']:.4f}")
            elif name == "learn" and ev["event"] == "reset":
                _say(t0, f"    {ev['round']} rounds in: training restarts from served {ev['to_version']} after repeated gate failures")
        except queue.Empty:
            pass
        now = time.monotonic()
        if now - last_status >= 5:
            learner = scrape(learner_url)
            consumed = learner.get("perennial_learner_events_consumed_total", last_consumed)
            served = client.model()["version"]
            _say(
                t0,
                f"consumed {(consumed - last_consumed) / (now - last_status):,.0f} events/s (total {consumed:,.0f}); "
                f"serving {served}; requests ok {traffic.ok}, failed {traffic.failed}",
            )
            if joined:
                _say(t0, "    join: " + _join_line(learner))
            last_status, last_consumed = now, consumed
        if now - last_eval >= 15:
            _, ap_now = pattern_ap(client, sets)
            _say(t0, f"served model AP now: {_fmt_ap(ap_now)}")
            last_eval = now

    stop.set()
    for child in children:
        if child.name == "simulate":
            child.stop()
    final_metrics = scrape(learner_url)
    version_end, ap_end = pattern_ap(client, sets)
    traffic.join(5)
    summary = {
        "duration_s": settings.demo.duration_s,
        "stream_fraud_rate": float(preview.mean()),
        "versions_promoted": sum(1 for g in gate_decisions if g["passed"]),
        "gate_decisions": gate_decisions,
        "served_version_start": version_start,
        "served_version_end": version_end,
        "events_consumed": int(final_metrics.get("perennial_learner_events_consumed_total", 0)),
        "events_trained": int(final_metrics.get("perennial_learner_events_trained_total", 0)),
        "events_dead_lettered": int(final_metrics.get("perennial_learner_events_dead_lettered_total", 0)),
        "new_pattern": NEW_PATTERN,
        "new_pattern_ap_start": ap_start[NEW_PATTERN],
        "new_pattern_ap_end": ap_end[NEW_PATTERN],
        "old_patterns_ap_start": _mean([ap_start[p] for p in OLD_PATTERNS]),
        "old_patterns_ap_end": _mean([ap_end[p] for p in OLD_PATTERNS]),
        "pattern_ap_start": ap_start,
        "pattern_ap_end": ap_end,
        "prediction_requests_ok": traffic.ok,
        "prediction_requests_failed": traffic.failed,
        "labels": settings.demo.labels,
    }
    if joined:
        summary["join"] = {key: int(final_metrics.get(f"perennial_join_{key}", 0)) for key in JOIN_FIGURES}
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    if logs.use_json("auto", sys.stdout):
        logs.emit("summary", {**summary, "summary_json": str(summary_json) if summary_json else None})
        return 0
    print()
    print("Summary")
    print(f"  events consumed {summary['events_consumed']:,}, trained {summary['events_trained']:,}, dead-lettered {summary['events_dead_lettered']}")
    print(f"  gate decisions {len(gate_decisions)}, versions promoted {summary['versions_promoted']}; served {version_start} -> {version_end}")
    print(f"  new pattern ({NEW_PATTERN}) AP: {_f(summary['new_pattern_ap_start'])} -> {_f(summary['new_pattern_ap_end'])}")
    print(f"  old patterns ({', '.join(OLD_PATTERNS)}) mean AP: {_f(summary['old_patterns_ap_start'])} -> {_f(summary['old_patterns_ap_end'])}")
    print(f"  per pattern at end: {_fmt_ap(ap_end)}")
    print(f"  prediction requests while learning and swapping: {traffic.ok} ok, {traffic.failed} failed")
    if joined:
        print("  join: " + _join_line(final_metrics))
    if summary_json:
        print(f"  summary written to {summary_json}")
    return 0


JOIN_FIGURES = ("predictions_total", "labels_total", "matured_total", "events_sent_total", "pending_predictions", "parked_labels")


def _join_line(metrics: dict[str, float]) -> str:
    m = {key: int(metrics.get(f"perennial_join_{key}", 0)) for key in JOIN_FIGURES}
    return (f"{m['predictions_total']:,} predictions logged, {m['labels_total']:,} labels read, {m['matured_total']:,} matured into "
            f"negatives, {m['events_sent_total']:,} labeled events sent to the learner; {m['pending_predictions']:,} pending, "
            f"{m['parked_labels']:,} labels parked")


def gate_line(ev: dict[str, Any], need: int, confidence: float) -> str:
    """One line per gate decision: the outcome and the paired comparison it rests on."""
    m, outcome = ev.get("metrics") or {}, ev["outcome"]
    if outcome == "pending":
        return f"round {ev['round']}: candidate cut; it is judged on the events labeled from now on"
    head = {"passed": f"gate PASSED -> published {ev['version']}", "failed": "gate failed", "inconclusive": "candidate inconclusive so far",
            "no_better": "candidate dropped: no better after all its evidence", "quarantined": "round quarantined"}.get(outcome, outcome)
    if "recent_ap_difference" not in m:
        gathered = (ev.get("candidate") or {}).get("evidence_frauds", m.get("recent_positives", 0))
        return f"round {ev['round']}: {head}; {gathered} frauds gathered since the oldest candidate was cut (judged from {need})"
    return (
        f"round {ev['round']}: {head}; recent AP {_f(m['candidate_recent_ap'])} vs {_f(m['incumbent_recent_ap'])} "
        f"(difference {m['recent_ap_difference']:+.3f}, "
        f"{confidence:.0%} interval [{m['recent_ap_difference_low']:+.3f}, {m['recent_ap_difference_high']:+.3f}], "
        f"{m['recent_frauds']} frauds), retention {m['retention_ap_difference']:+.3f} on {m['retention_frauds']} frauds"
    )


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
