"""Prequential replay of a scenario through one strategy.

Time advances in steps of ``scenario.step_s``. At the start of each step the strategy receives every
label that has become known by then (in arrival order), and then scores the step's events: every
event is scored by the model that would have been served at that moment, and no label is seen
before its label time. At the end of each period the served model is judged on the probes (the R
matrices), and every few steps on the per-pattern probes (the adaptation curves). Every time the
served version changes, its alerts at a fixed threshold are counted on a fixed sample of held-out
events (the alert volume per version). A served model whose scores do not spread on a probe stops
the run (``scores.CollapsedModel``): it ranks nothing.

``evaluate`` runs several scenarios and, per scenario, computes the served figures of every run and
the paired bootstrap intervals of the product against each other strategy, on the same events.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from learners.quality import average_precision
from learners.registry import Registry, RegistryError
from perennial.evaluation import data, scenarios
from perennial.evaluation.scores import (
    ALERT_BUDGET,
    ALERT_SAMPLE_SIZE,
    RESAMPLES,
    alert_threshold,
    alerts,
    ap_interval,
    ap_replicates,
    assert_spread,
    card_precision_at_k,
    paired_difference,
    quality,
    served_quality,
)
from perennial.evaluation.strategies import Strategy, build
from perennial.settings import Settings
from streams.simulator import DAY

PROBE_EVERY_STEPS = 6
HEADLINE_STRATEGY = "product"
"""The strategy every other one is compared with, paired on the same events."""
OPERATED_STRATEGY = "operated"
"""The product with an operator confirming concept changes: its targets are reported beside the product's."""


@dataclass(frozen=True)
class Spec:
    """How to rebuild a scenario in a worker process: ``kind`` is "builtin" (``options["name"]``, a
    scenario of ``scenarios.CATALOGUE``), "simulator" (``data.simulator_scenario``'s options) or
    "table" (``data.table_scenario``'s)."""

    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    card_k: int = 20
    retrain_every_periods: float = 1.0  # the retraining baselines refit once a period (early stopping, up to 50 epochs)
    window_periods: float = 3.0
    alert_budget: float = ALERT_BUDGET
    resamples: int = RESAMPLES
    maturity_s: float | None = None
    """Replay the labels as the join of late labels delivers them (``data.label_join``): frauds at
    their label time, every other event a negative after this maturity. None: every label at its
    label time (a producer sending full labeled events)."""
    network: dict[str, Any] | None = None
    """The network every strategy starts from (``learners.network.NetworkSpec.to_dict``; None: the
    built-in one)."""

    def scenario(self, seed: int) -> data.Scenario:
        if self.kind == "builtin":
            scn = scenarios.build(self.options["name"], seed)
        elif self.kind == "simulator":
            scn = data.simulator_scenario(seed, **self.options)
        else:
            scn = data.table_scenario(seed=seed, **self.options)
        return scn if self.maturity_s is None else data.label_join(scn, self.maturity_s)

    @property
    def base_name(self) -> str:
        """The scenario's name whatever the labels' mode."""
        if self.kind == "builtin":
            return self.options["name"]
        return re.sub(r"[^\w.-]+", "-", Path(self.options["path"]).stem) if self.kind == "table" else "simulator"

    @property
    def name(self) -> str:
        return self.base_name if self.maturity_s is None else f"{self.base_name}-joined-{_span(self.maturity_s)}"

    @property
    def description(self) -> str:
        if self.kind == "builtin":
            text = scenarios.CATALOGUE[self.options["name"]]
        elif self.kind == "table":
            text = f"the labeled events of {Path(self.options['path']).name}"
        else:
            text = "the simulator, with the options given on the command line"
        if self.maturity_s is not None:
            text += (f"; labels joined as `perennial learn` joins late labels: only frauds labeled (at their label time), every "
                     f"other event a negative {_span(self.maturity_s)} after it, a fraud labeled after that a correction")
        return text


def _span(seconds: float) -> str:
    """30d, 12h or 500s: the largest unit that divides it."""
    for unit, size in (("d", DAY), ("h", 3600.0)):
        if seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def pretrained(scenario: data.Scenario, settings: Settings, path: Path, seed: int, network: dict[str, Any] | None = None) -> Registry:
    """The registry all strategies of a seed start from (pretrained once, reused)."""
    from learners.network import NetworkSpec
    from learners.pretrain import pretrain

    registry = Registry(path)
    if registry.current_version() is None:
        p = settings.pretrain
        pretrain(scenario.names, scenario.history_x, scenario.history_y, registry, schema=scenario.schema,
                 encoded=scenario.schema is not None, network=NetworkSpec.from_dict(network) if network else None,
                 epochs=p.epochs, hidden=p.hidden,
                 retention_size=p.retention_size, retention_frauds=p.retention_frauds, seed=seed)
    return registry


def run(spec: Spec, strategy_name: str, seed: int, settings: Settings, workdir: Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    scn = spec.scenario(seed)
    registry = pretrained(scn, settings, workdir / f"seed-{seed}" / "registry", seed, spec.network)
    model = registry.load_current()
    if model is None:
        raise RegistryError(f"the registry at {registry.root} has no current version after pretraining")
    period_s = float(np.diff(scn.period_edges).mean())
    history_t = np.full(len(scn.history_y), scn.period_edges[0] - 1.0)
    strategy = build(
        strategy_name, model=model, registry=registry.root, settings=settings, history=(scn.history_x, scn.history_y, history_t),
        retrain_every_s=spec.retrain_every_periods * period_s, window_s=spec.window_periods * period_s, seed=seed,
    )
    sample, sample_y = alert_sample(scn)
    # the learner's default operating point: as many alerts as frauds, at least the budget (learners.gates)
    alert_rate = max(spec.alert_budget, float(np.mean(sample_y)))
    threshold = alert_threshold(model.score(sample), alert_rate)
    versions = [_version_row(strategy, sample, sample_y, threshold, float(scn.period_edges[0]), 0)]
    n = len(scn.y)
    feed_rows, feed_y, feed_t = scn.labels()
    arrival = np.argsort(feed_t, kind="stable")
    arrival_t = feed_t[arrival]
    scores = np.full(n, np.nan)
    start, end = float(scn.period_edges[0]), float(scn.period_edges[-1])
    steps = np.arange(start, end, scn.step_s)
    fed = 0
    learn_s = score_s = 0.0
    probed: dict[str, tuple[object, float | None]] = {}
    r_pattern, r_period = [_probe_row(scn, strategy, start, probed)], [_period_row(scn, strategy, start, probed)]
    curves: dict[str, list[tuple[float, int, float | None]]] = {p: [] for p in scn.pattern_probes}
    next_period = 1
    passes = [*steps.tolist(), end]
    for k, t in enumerate(passes):  # the last pass only delivers the labels due by the end
        upto = int(np.searchsorted(arrival_t, t, side="right"))
        if upto > fed:
            idx = arrival[fed:upto]
            t0 = time.perf_counter()
            strategy.learn(scn.x[feed_rows[idx]], feed_y[idx], feed_t[idx], float(t))
            learn_s += time.perf_counter() - t0
            fed = upto
            if strategy.version != versions[-1]["version"]:
                versions.append(_version_row(strategy, sample, sample_y, threshold, float(t), fed))
        while next_period < len(scn.period_edges) and t >= scn.period_edges[next_period]:
            r_pattern.append(_probe_row(scn, strategy, t, probed))
            r_period.append(_period_row(scn, strategy, t, probed))
            next_period += 1
        if t >= end:
            break
        if k % PROBE_EVERY_STEPS == 0:
            for name, (px, py) in scn.pattern_probes.items():
                curves[name].append((float(t), fed, _probe_ap(strategy, px, py, f"pattern probe {name}", scn, t, probed)))
        # up to the next pass, not t + step_s: summed steps fall short of the end by a rounding error
        lo, hi = np.searchsorted(scn.time, [t, passes[k + 1]], side="left")
        if hi > lo:
            t0 = time.perf_counter()
            scores[lo:hi] = strategy.score(scn.x[lo:hi])
            score_s += time.perf_counter() - t0
    if missed := int(np.isnan(scores).sum()):
        raise RuntimeError(f"{missed} of {n} stream events of {scn.name} were never scored: a defect of the harness's steps")
    return {
        "strategy": strategy_name, "seed": seed, "scenario": scn.name,
        "learn_s": learn_s, "score_s": score_s, "labels": fed, "events": n,
        "periods": _periods(scn, scores, spec.card_k),
        "daily": _daily(scn, scores),
        "curves": curves,
        "R_pattern": r_pattern, "R_period": r_period,
        "alert_threshold": threshold, "alert_rate": alert_rate, "alert_sample_events": len(sample),
        "versions": [{k: v for k, v in row.items() if k != "version"} for row in versions],
        "summary": strategy.summary(),
        "scores": scores,
        "ap_replicates": ap_replicates(scn.y, scores, spec.resamples),  # in the worker: the bootstraps run side by side
    }


def alert_sample(scn: data.Scenario) -> tuple[np.ndarray, np.ndarray]:
    """The fixed events every served version's alerts are counted on, with their labels: the held-out
    period probes (never trained on, never scored prequentially), at most ``ALERT_SAMPLE_SIZE`` of them."""
    x, y = np.concatenate([px for px, _ in scn.period_probes]), np.concatenate([py for _, py in scn.period_probes])
    if len(x) > ALERT_SAMPLE_SIZE:
        keep = np.sort(np.random.default_rng(0xA1E27).choice(len(x), ALERT_SAMPLE_SIZE, replace=False))
        x, y = x[keep], y[keep]
    return x, y


def _version_row(strategy: Strategy, sample: np.ndarray, sample_y: np.ndarray, threshold: float, t: float, labels: int) -> dict[str, Any]:
    """A served version's alerts on the fixed sample, and how many of them are on legitimate events."""
    scores = strategy.score(sample)
    return {"version": strategy.version, "time": t, "labels": labels, "alerts": alerts(scores, threshold),
            "false_alerts": alerts(scores[sample_y == 0], threshold)}


def _probe_row(scn: data.Scenario, strategy: Strategy, t: float, probed: dict) -> list[float]:
    return [_nan(_probe_ap(strategy, px, py, f"pattern probe {name}", scn, t, probed)) for name, (px, py) in scn.pattern_probes.items()]


def _period_row(scn: data.Scenario, strategy: Strategy, t: float, probed: dict) -> list[float]:
    return [_nan(_probe_ap(strategy, px, py, f"probe of period {i}", scn, t, probed)) if len(py) else float("nan")
            for i, (px, py) in enumerate(scn.period_probes)]


def _probe_ap(strategy: Strategy, x: np.ndarray, y: np.ndarray, probe: str, scn: data.Scenario, t: float,
              probed: dict[str, tuple[object, float | None]]) -> float | None:
    """AP of the model served at ``t`` on a probe; a collapsed model stops the run. ``probed`` keeps
    each probe's last (version, AP): a version already judged on it is not scored again (a frozen
    model would otherwise score the pattern probes 180 times over)."""
    version = strategy.version
    if probe in probed and probed[probe][0] == version:
        return probed[probe][1]
    scores = strategy.score(x)
    scale, unit = scn.time_unit
    assert_spread(scores, f"strategy {strategy.name!r} at {unit} {(t - scn.origin) / scale:.2f} of {scn.name}, on the {probe}")
    probed[probe] = (version, average_precision(y, scores))
    return probed[probe][1]


def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def _periods(scn: data.Scenario, scores: np.ndarray, card_k: int) -> list[dict[str, Any]]:
    out = []
    for a, b in zip(scn.period_edges[:-1], scn.period_edges[1:]):
        m = (scn.time >= a) & (scn.time < b) & np.isfinite(scores)
        row: dict[str, Any] = {"overall": quality(scn.y[m], scores[m]), "patterns": {}}
        if scn.pattern is not None:
            for code, name in enumerate(scn.pattern_names, start=1):
                pm = m & ((scn.pattern == 0) | (scn.pattern == code))
                row["patterns"][name] = quality((scn.pattern[pm] == code).astype(int), scores[pm])
        if scn.entity is not None and m.any():
            day = ((scn.time[m] - scn.origin) // scn.day_s).astype(np.int64)
            row["card_precision"] = float(np.mean(card_precision_at_k(day, scn.entity[m], scn.y[m], scores[m], card_k)))
        out.append(row)
    return out


def _daily(scn: data.Scenario, scores: np.ndarray) -> list[tuple[float, float | None]]:
    """Prequential AP per day (or per quarter period for short tables): the curve of the plots."""
    width = scn.day_s
    out = []
    t = float(scn.period_edges[0])
    while t < scn.period_edges[-1]:
        m = (scn.time >= t) & (scn.time < t + width) & np.isfinite(scores)
        out.append((t + width / 2, average_precision(scn.y[m], scores[m])))
        t += width
    return out


def run_all(spec: Spec, strategies: list[str], seeds: list[int], settings: Settings, workdir: Path, workers: int = 2,
            progress=print, built: dict[int, data.Scenario] | None = None) -> list[dict[str, Any]]:
    """Every (seed, strategy), on ``workers`` processes; pretraining first, once per seed (on the
    scenarios ``built`` already, when given)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        pretrained(built[seed] if built else spec.scenario(seed), settings, workdir / f"seed-{seed}" / "registry", seed, spec.network)
        progress(f"seed {seed}: pretrained")
    jobs = [(s, name) for s in seeds for name in strategies]
    # the longest first, so two workers finish together
    order = {"cumulative": 0, "product": 1, "product_no_drift_reaction": 1}
    jobs.sort(key=lambda j: order.get(j[1], 2))
    results = []
    if workers <= 1:
        for seed, name in jobs:
            results.append(run(spec, name, seed, settings, workdir))
            progress(f"seed {seed} {name}: done in {results[-1]['learn_s']:.1f} s of learning")
        return results
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    os.environ.update(env)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run, spec, name, seed, settings, workdir): (seed, name) for seed, name in jobs}
        for fut in as_completed(futures):
            seed, name = futures[fut]
            results.append(fut.result())
            progress(f"seed {seed} {name}: done in {results[-1]['learn_s']:.1f} s of learning")
    # in job order, whichever finished first: the report's sums then add up in the same order
    return sorted(results, key=lambda r: jobs.index((r["seed"], r["strategy"])))


def served(spec: Spec, built: dict[int, data.Scenario], results: list[dict[str, Any]], confidence: float) -> dict[str, Any]:
    """Adds each run's served figures (``result["served"]``) and drops its per-event scores and AP
    replicates; returns the served AP of every strategy with its interval, and the product's paired
    difference from every other strategy, over seeds, each with the frauds and events it rests on:
    {"ap": {strategy: ...}, "difference": {strategy: ...}, "replicates": {strategy: [per seed]}} (the
    replicates, for comparisons across sections on the same events: ``label_delay``)."""
    replicates: dict[str, dict[int, tuple[float, np.ndarray]]] = {}
    for r in results:
        scn, s = built[r["seed"]], r.pop("scores")
        day = ((scn.time - scn.origin) // scn.day_s).astype(np.int64)
        r["served"] = served_quality(day, scn.y, s, spec.alert_budget)
        r["served"]["patterns"] = {name: quality(y, s[m]) for name, (m, y) in _pattern_events(scn).items()}
        replicates.setdefault(r["strategy"], {})[r["seed"]] = r.pop("ap_replicates")
    seeds = sorted(built)
    sample = {"frauds": min(int(built[seed].y.sum()) for seed in seeds), "events": min(len(built[seed].y) for seed in seeds)}
    runs = {name: [by[seed] for seed in seeds] for name, by in replicates.items()}
    differences = {  # of one strategy from every other, paired
        head: {name: {**paired_difference(runs[head], r, confidence), **sample} for name, r in runs.items() if name != head}
        for head in (HEADLINE_STRATEGY, OPERATED_STRATEGY) if head in runs
    }
    return {
        "replicates": runs,
        "ap": {name: {**ap_interval(r, confidence), **sample} for name, r in runs.items()},
        "difference": differences.get(HEADLINE_STRATEGY, {}),
        "operated_difference": differences.get(OPERATED_STRATEGY, {}),
    }


def _pattern_events(scn: data.Scenario) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per pattern: the stream's legitimate events plus that pattern's frauds (mask, labels)."""
    if scn.pattern is None:
        return {}
    return {name: (m := (scn.pattern == 0) | (scn.pattern == code), (scn.pattern[m] == code).astype(np.int64))
            for code, name in enumerate(scn.pattern_names, start=1)}


def data_used(spec: Spec, scn: data.Scenario, registry: Registry) -> dict[str, Any]:
    """What a scenario's figures were computed from: the columns, the features and every split with
    its class counts (printed and recorded, so that nothing is inferred silently)."""
    split = registry.manifest(registry.versions()[0])["metrics"]
    opts = spec.options if spec.kind == "table" else {}
    return {
        "features": list(scn.names),
        "label_column": opts.get("label_column", "the simulated label"),
        "time_column": opts.get("time_column") or ("row order (asked for with --time-column '')" if opts else "the simulated event time"),
        **{key: opts[key] for key in ("label_time_column", "pattern_column", "entity_column") if opts.get(key)},
        "history": _counts(scn.history_y),
        "pretraining_train": {"events": split["train_events"], "frauds": split.get("train_frauds")},
        "pretraining_validation": {"events": split["validation_events"], "frauds": split.get("validation_frauds")},
        "stream": _counts(scn.y),
        "held_out_probes": _counts(np.concatenate([py for _, py in scn.period_probes])),
    }


def label_delay(sections: list[dict[str, Any]], confidence: float) -> None:
    """Sets ``section["label_delay"]`` on every section replayed with joined labels whose scenario
    also ran with every label at its label time: per strategy, the served AP with joined labels minus
    the AP with explicit labels, paired on the same events (same seeds, same pretrained start), so
    the cost of waiting for maturity is a difference with an interval. Drops the replicates."""
    explicit = {sec["base"]: sec for sec in sections if sec["maturity_s"] is None}
    for sec in sections:
        ref = explicit.get(sec["base"])
        if sec["maturity_s"] is None or ref is None:
            continue
        mine, theirs = sec["intervals"]["replicates"], ref["intervals"]["replicates"]
        frauds = sec["intervals"]["ap"][next(iter(mine))]["frauds"]
        sec["label_delay"] = {
            "reference": ref["name"],
            "difference": {name: {**paired_difference(mine[name], theirs[name], confidence), "frauds": frauds}
                           for name in mine if name in theirs},
        }
    for sec in sections:
        sec["intervals"].pop("replicates", None)


def _counts(y: np.ndarray) -> dict[str, int]:
    return {"events": len(y), "frauds": int(np.sum(y))}


def evaluate(specs: list[Spec], strategies: list[str], seeds: list[int], settings: Settings, workdir: Path, out_md: Path,
             workers: int, command: str, emit, confidence: float, notes: str = "") -> dict[str, Any]:
    """Run every scenario, keep the raw results next to the report (``workdir/results.json``), write
    the report (``notes``, markdown, at its end); return its summary. ``emit(kind, **fields)`` reports progress and the data used."""
    import orjson

    from perennial.evaluation.report import scenario_meta, write

    started = time.perf_counter()
    sections, walls, warnings = [], [], []
    for spec in specs:
        begun = time.perf_counter()
        built = {seed: spec.scenario(seed) for seed in seeds}
        # one pretrained registry per scenario, whatever the labels' mode: label_delay compares from the same start
        first = pretrained(built[seeds[0]], settings, workdir / spec.base_name / f"seed-{seeds[0]}" / "registry", seeds[0], spec.network)
        used = data_used(spec, built[seeds[0]], first)
        emit("evaluate_data", scenario=spec.name, **used)  # before the runs: what they are computed from
        results = run_all(spec, strategies, seeds, settings, workdir / spec.base_name, workers,
                          lambda msg, name=spec.name: emit("evaluate", scenario=name, message=msg), built)
        for r in results:  # a stream shorter than a round: the strategy never learned, and its figures must say so
            if r["summary"].get("rounds") == 0 and r["labels"] > 0:
                message = (f"{spec.name}, seed {r['seed']}: {r['strategy']} ran no round: its {r['labels']:,} labels are fewer than "
                           f"learn.round_events ({settings.learn.round_events:,}), so its figures are the pretrained version's; "
                           "for a stream this short set PERENNIAL_LEARN__ROUND_EVENTS lower")
                emit("evaluate_warning", scenario=spec.name, strategy=r["strategy"], message=message)
                warnings.append(f"**Warning**: {message}.")
        meta = {**scenario_meta([built[seed] for seed in seeds], spec.card_k), "data": used, "alert_budget": spec.alert_budget,
                "resamples": spec.resamples, "confidence": confidence}
        if len(seeds) > 1:
            meta["scenario"] = meta["scenario"].replace(f"seed {seeds[0]}", "seeds " + ", ".join(map(str, seeds)))
        intervals = served(spec, built, results, confidence)
        sections.append({"name": spec.name, "description": spec.description, "meta": meta, "intervals": intervals, "results": results,
                         "base": spec.base_name, "maturity_s": spec.maturity_s,
                         "feed": [{"seed": seed, **data.join_counts(scn, float(scn.period_edges[-1]))} for seed, scn in built.items()]})
        walls.append(f"{spec.name} {time.perf_counter() - begun:.0f} s")
    label_delay(sections, confidence)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "results.json").write_bytes(orjson.dumps({"scenarios": sections}, option=orjson.OPT_SERIALIZE_NUMPY))
    out_md.parent.mkdir(parents=True, exist_ok=True)
    wall = (f"Wall time of the whole evaluation: {time.perf_counter() - started:.0f} s on {workers} worker process(es) "
            f"({', '.join(walls)}).")
    return write(sections, out_md, command, notes="\n\n".join(n for n in (*warnings, wall, notes.strip()) if n))
