"""The built-in scenarios of `perennial evaluate --scenario NAME`.

Each is a small, seeded generator of a pretraining history and a labeled stream that looks like one
situation of production. ``CATALOGUE`` names them with the sentence the report prints; ``build``
makes one for a seed.

``default`` is the card simulator (``streams.simulator``). The others are synthetic Gaussian
concepts over eight features (``streams.concepts``), where one situation can be shown without the
simulator's own dynamics: legitimate events are standard normal, frauds come from patterns (clusters)
the network separates with some overlap. Labels arrive after an exponential delay of mean one hour
unless the scenario is about label timing. A hashed tenth of the stream is held out as the period probes.

- ``rare``: 0.15% fraud, 45,000 history events (about 70 frauds), 160,000 stream events (about 240
  frauds, three per 2,048-event round) over 5 days, a third of them from a pattern history never had.
- ``bursts``: 0.3% fraud, 30,000 history and 80,000 stream events over 4 days; for 6 hours (5,000
  events) a card-testing pattern adds 4.5% (15x the base rate), then stops.
- ``recurrence``: concept A (2 days) -> B (3 days) -> A (3 days), 10,000 events a day at 5% fraud,
  30,000 of history from A. In B, A's fraud region is an honest customer segment and fraud sits where
  A had its honest segment: the decision boundary flips and flips back. Probes ``concept_A`` and
  ``concept_B`` are fresh draws of one concept each, its frauds and its own negatives
  (``Scenario.concept_spans`` says when each is live).
- ``threshold``: 5% fraud, 10,000 events a day, 30,000 of history; after 2 of 8 stream days every
  event moves one unit along the fraud direction: the same ranking and fraud rate, but a given
  feature vector (so a given score) now means less fraud. Probes ``before_shift`` and
  ``after_shift`` are fresh draws of each.
- ``backlog`` and ``paced``: one day of history (30,000 events, 0.2% fraud), then the same 4 days of
  25,000 events (0.2%, a third of the frauds from a new pattern); in ``backlog`` a day's labels all
  arrive at the end of that day, in ``paced`` each after an exponential delay of mean one hour.
- ``delays``: 0.5% fraud, 2,000 events a day, 2 weeks of history, 6 weeks of stream with a new
  pattern; 80% of labels arrive within a day or two (lognormal, median 12 hours), 20% weeks later
  like chargebacks (lognormal, median 21 days), many after the stream ends.

Pattern probes hold 20,000 fresh legitimate events and 200 frauds of the pattern (1%); concept probes
10,000 fresh events of the concept at its own rate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from perennial.evaluation import data
from perennial.evaluation.data import Phase
from streams.concepts import Cluster, Concept
from streams.simulator import DAY, EPOCH, HOUR

CATALOGUE: dict[str, str] = {
    "default": "the simulator's evaluation schedule: a new pattern when the stream starts, one that vanishes and recurs",
    "rare": "rare fraud: 0.15%, about three frauds per 2,048-event round, 160,000 stream events over 5 days (about 240 "
    "frauds) after 45,000 of history; a third of the stream's frauds come from a pattern history never had",
    "bursts": "a card-testing burst: 0.3% base fraud, 80,000 stream events over 4 days; for 6 hours (5,000 events) a new "
    "pattern adds 4.5% fraud (15x the base rate), then stops",
    "recurrence": "concepts A -> B -> A (2, 3 and 3 days of 10,000 events, 5% fraud): in B the decision boundary flips "
    "(A's fraud region is honest, fraud sits in A's honest segment), then A returns; probes are fresh draws of each concept",
    "threshold": "a threshold-only change (80,000 events, 5% fraud): after 2 of 8 days every event moves along the fraud "
    "direction, so the ranking and the fraud rate stay while a given score means less fraud",
    "backlog": "a day of labels at once: 1 day of history (30,000 events), 4 streamed days of 25,000 events at 0.2% fraud, "
    "a third from a new pattern; every label of a day arrives at the end of that day",
    "paced": "the backlog scenario's events with labels arriving steadily, each after an exponential delay of mean one hour",
    "delays": "long-tailed label delays: 6 weeks of 2,000 events a day at 0.5% fraud with a new pattern; 80% of labels "
    "arrive within a day or two, 20% weeks later like chargebacks (median 21 days), many after the stream ends",
}

KNOWN_1 = Cluster((2.75, 2.75), 0.8)
KNOWN_2 = Cluster((0.0, 0.0, -2.75, 2.75), 0.8)
NEW = Cluster((0.0, 0.0, 0.0, 0.0, 2.75, -2.75), 0.8)
CARD_TESTING = Cluster((0.0,) * 6 + (-2.75, -2.75), 0.8)
PATTERN_PROBE = (20_000, 200)
"""Legitimate events and frauds of a pattern probe: a 1% probe, so that its AP rests on 200 frauds."""
CONCEPT_PROBE = 10_000
"""Events of a concept probe, at the concept's own fraud rate."""


def build(name: str, seed: int) -> data.Scenario:
    """Scenario ``name`` of ``CATALOGUE`` for ``seed``; ValueError naming the known ones otherwise."""
    if name not in CATALOGUE:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(CATALOGUE)}")
    return _BUILDERS[name](seed)


def patterns(rate: float, *clusters: tuple[str, Cluster]) -> dict[str, tuple[Cluster, float]]:
    """The named clusters sharing ``rate`` of all events equally."""
    return {name: (cluster, rate / len(clusters)) for name, cluster in clusters}


def exponential_delay(mean_s: float) -> data.LabelTimes:
    return lambda time, rng: time + rng.exponential(mean_s, len(time))


def end_of_day(time: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every label of a day arrives at once, when the day ends."""
    return EPOCH + (np.floor((time - EPOCH) / DAY) + 1) * DAY


def chargebacks(time: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """80% of labels a lognormal delay of median 12 hours, 20% of median 21 days."""
    late = rng.random(len(time)) < 0.2
    median = np.where(late, 21 * DAY, 12 * HOUR)
    sigma = np.where(late, 0.35, 0.7)
    return time + median * np.exp(sigma * rng.standard_normal(len(time)))


def pattern_probes(concept: Concept) -> Callable[[np.random.Generator], dict]:
    """Per pattern of ``concept``: fresh legitimate events of it and that pattern's frauds."""
    legit, frauds = PATTERN_PROBE

    def draw(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {p: (np.concatenate([concept.legitimate(legit, rng), concept.fraud(p, frauds, rng)]),
                    np.repeat(np.array([0, 1], np.int64), [legit, frauds]))
                for p in concept.patterns}
    return draw


def concept_probes(*cs: Concept) -> Callable[[np.random.Generator], dict]:
    """Per concept (named by its one fraud pattern): a fresh draw of that concept at its own rate."""
    def draw(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for c in cs:
            (name,) = c.patterns
            x, code = c.sample(CONCEPT_PROBE, rng, (name,))
            out[name] = (x, (code > 0).astype(np.int64))
        return out
    return draw


def new_pattern(rate: float) -> tuple[Concept, Concept]:
    """History's concept (two known patterns) and the stream's (the same and a new one), at ``rate``."""
    known = (("known_1", KNOWN_1), ("known_2", KNOWN_2))
    return Concept("known patterns", patterns(rate, *known)), Concept("with a new pattern", patterns(rate, *known, ("new", NEW)))


def _rare(seed: int) -> data.Scenario:
    history, stream = new_pattern(0.0015)
    return data.concept_scenario(
        seed, title="rare: 0.15% fraud, a new pattern in the stream", history=[Phase(history, 1.5, 45_000)],
        stream=[Phase(stream, 5, 160_000)], label_times=exponential_delay(HOUR), period_days=1,
        probes=pattern_probes(stream),
    )


def _bursts(seed: int) -> data.Scenario:
    known = patterns(0.003, ("known_1", KNOWN_1), ("known_2", KNOWN_2))
    base = Concept("base", known)
    burst = Concept("card-testing burst", {**known, "card_testing": (CARD_TESTING, 0.045)})
    return data.concept_scenario(
        seed, title="bursts: 0.3% fraud, a 6-hour card-testing burst at 15x the base rate", history=[Phase(base, 1.5, 30_000)],
        stream=[Phase(base, 1.5, 30_000), Phase(burst, 0.25, 5_000), Phase(base, 2.25, 45_000)],
        label_times=exponential_delay(HOUR), period_days=0.5, probes=pattern_probes(burst),
    )


A_FRAUD = Cluster((2.5, 2.5))
B_FRAUD = Cluster((-2.5, 2.5))
CONCEPT_A = Concept("concept_A", {"concept_A": (A_FRAUD, 0.05)}, segments=((B_FRAUD, 0.05),))
CONCEPT_B = Concept("concept_B", {"concept_B": (B_FRAUD, 0.05)}, segments=((A_FRAUD, 0.05),))


def _recurrence(seed: int) -> data.Scenario:
    return data.concept_scenario(
        seed, title="recurrence: concept A -> B -> A, the decision boundary flips and returns, 5% fraud",
        history=[Phase(CONCEPT_A, 3, 30_000)],
        stream=[Phase(CONCEPT_A, 2, 20_000), Phase(CONCEPT_B, 3, 30_000), Phase(CONCEPT_A, 3, 30_000)],
        label_times=exponential_delay(HOUR), period_days=1, probes=concept_probes(CONCEPT_A, CONCEPT_B),
    )


THRESHOLD_FRAUD = Cluster((2.25, 2.25))
THRESHOLD_SHIFT = (2 ** -0.5, 2 ** -0.5)
"""One unit along the direction from the legitimate centre to the fraud cluster."""
BEFORE_SHIFT = Concept("before_shift", {"before_shift": (THRESHOLD_FRAUD, 0.05)})
AFTER_SHIFT = Concept("after_shift", {"after_shift": (THRESHOLD_FRAUD, 0.05)}, shift=THRESHOLD_SHIFT)


def _threshold(seed: int) -> data.Scenario:
    return data.concept_scenario(
        seed, title="threshold: every event moves along the fraud direction after 2 days, 5% fraud",
        history=[Phase(BEFORE_SHIFT, 3, 30_000)], stream=[Phase(BEFORE_SHIFT, 2, 20_000), Phase(AFTER_SHIFT, 6, 60_000)],
        label_times=exponential_delay(HOUR), period_days=1, probes=concept_probes(BEFORE_SHIFT, AFTER_SHIFT),
    )


def _day_of_labels(seed: int, label_times: data.LabelTimes, title: str) -> data.Scenario:
    history, stream = new_pattern(0.002)
    return data.concept_scenario(
        seed, title=title, history=[Phase(history, 1, 30_000)], stream=[Phase(stream, 4, 100_000)],
        label_times=label_times, period_days=0.5, probes=pattern_probes(stream),
    )


def _backlog(seed: int) -> data.Scenario:
    return _day_of_labels(seed, end_of_day, "backlog: 0.2% fraud, a new pattern, every label of a day at the end of that day")


def _paced(seed: int) -> data.Scenario:
    return _day_of_labels(seed, exponential_delay(HOUR), "paced: 0.2% fraud, a new pattern, labels after an exponential delay of mean one hour")


def _delays(seed: int) -> data.Scenario:
    history, stream = new_pattern(0.005)
    return data.concept_scenario(
        seed, title="delays: 0.5% fraud, a new pattern, 80% of labels within a day or two and 20% weeks later",
        history=[Phase(history, 14, 28_000)], stream=[Phase(stream, 42, 84_000)], label_times=chargebacks,
        period_days=7, probes=pattern_probes(stream), step_hours=4,
    )


_BUILDERS: dict[str, Callable[[int], data.Scenario]] = {
    "default": data.simulator_scenario, "rare": _rare, "bursts": _bursts, "recurrence": _recurrence,
    "threshold": _threshold, "backlog": _backlog, "paced": _paced, "delays": _delays,
}
