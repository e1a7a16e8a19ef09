"""Scenarios: a pretraining history, a labeled stream in event-time order, probe sets and periods.

Every strategy is scored on the same stream and judged on the same probes. A hashed tenth of the
stream is held out from everything (training and prequential scoring) and split by period: the
probes of the period R matrix. A pattern's probe holds that pattern's frauds and the negatives of the
same situation, never another concept's: they come from the simulator's independent draws with every
pattern active, from fresh draws of a synthetic concept, or, for a table, from the held-out rows.

Three sources: ``simulator_scenario`` (the card simulator), ``concept_scenario`` (phases of synthetic
Gaussian concepts, ``streams.concepts``) and ``table_scenario`` (any CSV/Parquet file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from learners.schema import FeatureSchema
from streams import concepts
from streams.simulator import DAY, EPOCH, FEATURES, PATTERNS, Simulator
from streams.tables import epoch_seconds, read_labeled_table

PROBE_SHARE = 0.1

EVALUATION_SCHEDULE = "compromised_terminal:0-;card_compromise:0-50,66-;card_testing:45-"
"""The evaluation's default: history is days 0-45 and the stream days 45-90. card_compromise vanishes
on day 50 and recurs on day 66; card_testing, never seen in history, starts when the stream does
(docs/evaluation-midstream.md has it start on day 55 instead)."""


@dataclass
class Scenario:
    name: str
    names: tuple[str, ...]
    history_x: np.ndarray
    history_y: np.ndarray
    x: np.ndarray  # stream features, rows in event-time order
    y: np.ndarray
    time: np.ndarray  # event time, seconds
    label_time: np.ndarray  # when the label becomes known, seconds
    period_edges: np.ndarray  # P + 1 times; period i is [edges[i], edges[i+1])
    step_s: float  # how often the served model may change (and is probed)
    period_probes: list[tuple[np.ndarray, np.ndarray]]
    pattern: np.ndarray | None = None  # stream rows: 0 legitimate, k = 1 + index in pattern_names
    pattern_names: tuple[str, ...] = ()
    pattern_probes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Per pattern (or concept): features and labels of that pattern's frauds and the negatives of the
    same situation, drawn apart from the stream. Where a concept changes the decision boundary
    (``concept_spans``), a concept's probe is a fresh draw of that concept: its positives and its own
    negatives only."""
    history_patterns: frozenset[str] = frozenset()
    entity: np.ndarray | None = None  # card (or account) per stream row, for card precision@k
    day_s: float = DAY  # span of one "day" for card precision@k
    drift_points: list[tuple[float, str]] = field(default_factory=list)  # known changes, for the plots
    time_unit: tuple[float, str] = (DAY, "day")
    origin: float = 0.0
    concept_spans: list[tuple[float, float, str]] = field(default_factory=list)
    """(start, end, concept) of the stream, in time order: which concept generated the events when;
    empty where the scenario has no concepts (the simulator, tables)."""
    feed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    """The labels as they reach the learner, when they are not one per event at its ``label_time``
    (``label_join``): stream row, label and arrival time of each, in any order."""
    schema: FeatureSchema | None = None
    """How a table's cells became the raw vectors of ``history_x`` and ``x`` (fitted on the history as
    ``perennial pretrain`` fits it: categories coded, NaN for a missing number), which pretraining
    must use; None where the features are numbers already (the simulator, concepts)."""
    maturity_s: float | None = None  # set by ``label_join``

    def labels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(stream row, label, arrival time) of every label the learner receives."""
        if self.feed is not None:
            return self.feed
        return np.arange(len(self.y)), self.y, self.label_time

    def period_labels(self) -> list[str]:
        scale, unit = self.time_unit
        return [
            f"{unit} {(a - self.origin) / scale:g}-{(b - self.origin) / scale:g}"
            for a, b in zip(self.period_edges[:-1], self.period_edges[1:])
        ]

    def presence(self) -> dict[str, list[int]]:
        """Frauds of each pattern per period of the stream (probe rows excluded)."""
        if self.pattern is None:
            return {}
        idx = np.searchsorted(self.period_edges, self.time, side="right") - 1
        return {
            name: np.bincount(idx[self.pattern == code], minlength=len(self.period_edges) - 1)[: len(self.period_edges) - 1].tolist()
            for code, name in enumerate(self.pattern_names, start=1)
        }


def label_join(scn: Scenario, maturity_s: float) -> Scenario:
    """The scenario's labels as Perennial's join of late labels delivers them (``learners.join``):
    only frauds are labeled explicitly (a chargeback feed), at their ``label_time``; every other
    event matures into a negative ``maturity_s`` after its event time; a fraud whose label comes
    after its maturity is first a negative, then a correction (a fraud, the same features) at its
    label time. Labels due after the stream's end never arrive, as in the product."""
    if maturity_s <= 0:
        raise ValueError(f"label maturity must be positive, not {maturity_s:g} s")
    rows = np.arange(len(scn.y))
    fraud = scn.y == 1
    mature = scn.time + maturity_s
    early = fraud & (scn.label_time <= mature)
    negative = ~early  # legitimate events and frauds labeled only after their maturity
    late = fraud & ~early
    feed_rows = np.concatenate([rows[early], rows[negative], rows[late]])
    feed_y = np.concatenate([np.ones(early.sum(), np.int64), np.zeros(negative.sum(), np.int64), np.ones(late.sum(), np.int64)])
    feed_t = np.concatenate([scn.label_time[early], mature[negative], scn.label_time[late]])
    days = maturity_s / DAY
    return replace(scn, feed=(feed_rows, feed_y, feed_t), maturity_s=maturity_s,
                   name=f"{scn.name}; labels joined: frauds only, the rest maturing into negatives after {days:g} days")


def join_counts(scn: Scenario, end: float) -> dict[str, int]:
    """What the learner received by ``end``: explicit frauds, matured negatives, corrections."""
    rows, y, t = scn.labels()
    due = t <= end
    corrected = np.zeros(len(scn.y), bool)
    corrected[rows[due & (y == 0)]] = True
    positive = due & (y == 1)
    return {"frauds": int((positive & ~corrected[rows]).sum()), "negatives": int((due & (y == 0)).sum()),
            "corrections": int((positive & corrected[rows]).sum()), "never_arrived_frauds": int(scn.y.sum() - positive.sum())}


def _probe_mask(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 0x9E0BE]).random(n) < PROBE_SHARE


def _split(
    scn_rows: dict[str, np.ndarray], edges: np.ndarray, seed: int
) -> tuple[dict[str, np.ndarray], list[tuple[np.ndarray, np.ndarray]], dict[str, np.ndarray]]:
    probe = _probe_mask(len(scn_rows["y"]), seed)
    held = {k: v[probe] for k, v in scn_rows.items()}
    kept = {k: v[~probe] for k, v in scn_rows.items()}
    per = np.searchsorted(edges, held["time"], side="right") - 1
    periods = [(held["x"][per == i], held["y"][per == i]) for i in range(len(edges) - 1)]
    return kept, periods, held


def simulator_scenario(
    seed: int,
    *,
    customers: int = 2000,
    terminals: int = 1000,
    history_days: int = 45,
    stream_days: int = 45,
    period_days: int = 5,
    label_delay_days: float = 1.0,
    schedule: str = EVALUATION_SCHEDULE,
    step_hours: float = 1.0,
) -> Scenario:
    sim = Simulator(seed=seed, customers=customers, terminals=terminals, label_delay_days=label_delay_days, schedule=schedule)
    hist = sim.generate(0, history_days)
    tx = sim.generate(history_days, stream_days)
    start = EPOCH + history_days * DAY
    edges = start + np.arange(0, stream_days + 1, period_days, dtype=np.float64) * DAY
    if edges[-1] < start + stream_days * DAY:
        edges = np.append(edges, start + stream_days * DAY)
    rows = {"x": tx.features, "y": tx.label, "time": tx.time.astype(np.float64), "label_time": tx.label_time.astype(np.float64),
            "pattern": tx.pattern.astype(np.int64), "entity": tx.card}
    kept, periods, _ = _split(rows, edges, seed)
    drift_points = []
    for name, spans in sim.schedule.items():
        for lo, hi in spans:
            for t, what in ((lo, "appears"), (hi, "vanishes")):
                if history_days <= t < history_days + stream_days:
                    drift_points.append((EPOCH + t * DAY, f"{name} {what}"))
    in_history = frozenset(p for code, p in enumerate(PATTERNS, start=1) if (hist.pattern == code).any())
    return Scenario(
        name=f"simulator seed {seed}: {customers} cards, {terminals} terminals, history days 0-{history_days}, "
        f"stream days {history_days}-{history_days + stream_days}, label delay {label_delay_days:g} days (mean), schedule {schedule!r}",
        names=FEATURES, history_x=hist.features, history_y=hist.label,
        x=kept["x"], y=kept["y"], time=kept["time"], label_time=kept["label_time"],
        period_edges=edges, step_s=step_hours * 3600, period_probes=periods,
        pattern=kept["pattern"], pattern_names=PATTERNS, pattern_probes=sim.pattern_sets(history_days, 10),
        history_patterns=in_history, entity=kept["entity"], drift_points=sorted(drift_points), origin=EPOCH,
    )


@dataclass(frozen=True)
class Phase:
    """``events`` events of ``concept``, spread evenly at random over ``days``."""

    concept: concepts.Concept
    days: float
    events: int


LabelTimes = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""Label times of events from their (sorted) event times."""


def concept_scenario(
    seed: int,
    *,
    title: str,
    history: Sequence[Phase],
    stream: Sequence[Phase],
    label_times: LabelTimes,
    period_days: float,
    probes: Callable[[np.random.Generator], dict[str, tuple[np.ndarray, np.ndarray]]],
    step_hours: float = 1.0,
) -> Scenario:
    """A scenario of synthetic concepts: ``history`` pretrains, ``stream`` follows it from
    ``EPOCH``; ``probes`` draws the per-pattern (or per-concept) probes from its own generator.
    Every part has its own generator of ``seed``: changing the label times leaves the events alone."""
    names = tuple(dict.fromkeys(p for phase in (*history, *stream) for p in phase.concept.patterns))
    hx, hcode, _ = _phases(history, EPOCH - sum(p.days for p in history) * DAY, np.random.default_rng([seed, 1]), names)
    x, code, time = _phases(stream, EPOCH, np.random.default_rng([seed, 2]), names)
    label_time = label_times(time, np.random.default_rng([seed, 3]))
    if (label_time < time).any():
        raise ValueError(f"scenario {title!r}: label times before event times")
    end = EPOCH + sum(p.days for p in stream) * DAY
    edges = np.append(np.arange(EPOCH, end - 1e-6, period_days * DAY), end)
    rows = {"x": x, "y": (code > 0).astype(np.int64), "time": time, "label_time": label_time, "pattern": code}
    kept, periods, _ = _split(rows, edges, seed)
    spans = _spans(stream)
    return Scenario(
        name=f"{title} (seed {seed}; history {len(hcode)} events, {int((hcode > 0).sum())} frauds; stream {len(code)} events, "
        f"{int((code > 0).sum())} frauds, {sum(p.days for p in stream):g} days, a tenth of it held out as probes)",
        names=concepts.FEATURES, history_x=hx, history_y=(hcode > 0).astype(np.int64),
        x=kept["x"], y=kept["y"], time=kept["time"], label_time=kept["label_time"],
        period_edges=edges, step_s=step_hours * 3600, period_probes=periods,
        pattern=kept["pattern"], pattern_names=names, pattern_probes=probes(np.random.default_rng([seed, 4])),
        history_patterns=frozenset(names[c - 1] for c in np.unique(hcode[hcode > 0])),
        drift_points=[(t0, f"{concept} from here") for t0, _, concept in spans[1:]], origin=EPOCH, concept_spans=spans,
    )


def _phases(phases: Sequence[Phase], start: float, rng: np.random.Generator, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, pattern codes and event times of consecutive phases from ``start``, in time order."""
    xs, codes, times = [], [], []
    for phase in phases:
        x, code = phase.concept.sample(phase.events, rng, names)
        xs.append(x)
        codes.append(code)
        times.append(start + np.sort(rng.uniform(0, phase.days * DAY, phase.events)))
        start += phase.days * DAY
    return np.concatenate(xs), np.concatenate(codes), np.concatenate(times)


def _spans(phases: Sequence[Phase]) -> list[tuple[float, float, str]]:
    """(start, end, concept) of consecutive phases, a concept's adjacent phases merged."""
    spans: list[tuple[float, float, str]] = []
    t = float(EPOCH)
    for phase in phases:
        end = t + phase.days * DAY
        if spans and spans[-1][2] == phase.concept.name:
            spans[-1] = (spans[-1][0], end, phase.concept.name)
        else:
            spans.append((t, end, phase.concept.name))
        t = end
    return spans


def table_scenario(
    path: Path | str,
    *,
    seed: int = 0,
    label_column: str = "label",
    time_column: str | None = "time",
    features: Sequence[str] | None = None,
    label_delay_s: float = 0.0,
    label_time_column: str | None = None,
    pattern_column: str | None = None,
    entity_column: str | None = None,
    history_fraction: float = 0.3,
    periods: int = 8,
    steps_per_period: int = 24,
    declaration: list[dict[str, Any]] | None = None,
) -> Scenario:
    """A scenario from any CSV/Parquet file of labeled events: the earliest ``history_fraction``
    pretrains, the rest streams. With ``time_column=None`` (asked for explicitly) row order is time,
    counted in rows; a named time column the file lacks is an error. ``declaration``: the features'
    declaration (learners/schema.parse_declaration), as ``perennial pretrain --schema`` takes it."""
    import pandas as pd

    from learners.pretrain import fit_schema

    extra = [c for c in (label_time_column, pattern_column, entity_column) if c]
    table = read_labeled_table(path, label_column, time_column, features, extra_columns=extra)
    n = len(table.y)
    time = table.time if table.time is not None else np.arange(n, dtype=np.float64)
    if label_time_column:
        lt = table.extra[label_time_column]
        label_time = lt.to_numpy(np.float64) if pd.api.types.is_numeric_dtype(lt) else epoch_seconds(pd.to_datetime(lt, utc=True)).to_numpy(np.float64)
        if (label_time < time).any():
            raise ValueError(f"column {label_time_column!r} has label times before their event times")
    else:
        label_time = time + float(label_delay_s)
    cut = int(n * history_fraction)
    if cut < 100 or n - cut < 100:
        raise ValueError(f"{path} has {n} rows: too few to keep {history_fraction:.0%} as history and stream the rest")
    # raw vectors, as the stream would carry them; float32 numbers stay exactly what they were
    schema = fit_schema(table.features, table.x[:cut], declaration)
    x = schema.encode_rows(table.x).astype(np.float32)
    pattern: np.ndarray | None = None
    names: tuple[str, ...] = ()
    owner: np.ndarray | None = None
    if pattern_column:
        raw = table.extra[pattern_column].astype(str).to_numpy()
        names = tuple(sorted(set(raw[table.y == 1])))
        # every row's pattern or concept (0: none): a concept column also names its negatives
        owner = np.where(np.isin(raw, names), np.searchsorted(np.array(names), raw) + 1, 0).astype(np.int64)
        pattern = np.where(table.y == 1, owner, 0)
    entity = table.extra[entity_column].astype(str).to_numpy() if entity_column else None
    t0, t1 = time[cut], time[-1] + 1e-6
    edges = np.linspace(t0, t1, periods + 1)
    rows = {"x": x[cut:], "y": table.y[cut:], "time": time[cut:], "label_time": label_time[cut:]}
    for key, column in (("pattern", pattern), ("entity", entity), ("owner", owner)):
        if column is not None:  # an absent column is left out of both halves
            rows[key] = column[cut:]
    kept, period_probes, held = _split(rows, edges, seed)
    pattern_probes = {}
    if owner is not None:
        for code, name in enumerate(names, start=1):
            # its own rows and the negatives of no pattern, never another concept's negatives
            m = (held["owner"] == code) | ((held["owner"] == 0) & (held["y"] == 0))
            pattern_probes[name] = (held["x"][m], held["y"][m])
    span = t1 - t0
    unit = (1.0, "row") if table.time is None else \
        next(((s, u) for s, u in ((DAY, "day"), (3600, "hour"), (60, "minute")) if span / s >= 2), (1.0, "second"))
    return Scenario(
        name=f"{Path(path).name}: {n} rows, {len(table.features)} features, history {cut} rows, stream {n - cut} rows, "
        f"label delay {'from ' + label_time_column if label_time_column else f'{label_delay_s:g} s'}",
        names=table.features, history_x=x[:cut], history_y=table.y[:cut], schema=schema,
        x=kept["x"], y=kept["y"], time=kept["time"], label_time=kept["label_time"],
        period_edges=edges, step_s=span / (periods * steps_per_period), period_probes=period_probes,
        pattern=kept.get("pattern"), pattern_names=names, pattern_probes=pattern_probes,
        history_patterns=frozenset(n_ for c, n_ in enumerate(names, start=1) if pattern is not None and (pattern[:cut] == c).any()),
        entity=kept.get("entity"), day_s=DAY if unit[1] == "day" else span / (periods * 4), time_unit=unit, origin=t0,
    )

