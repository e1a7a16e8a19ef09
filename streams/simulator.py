"""Simulated card transactions in the manner of the Fraud Detection Handbook (Le Borgne et al.).

Customers have a location, a spending profile (mean and spread of amounts) and a daily rate; each
uses the terminals nearest to it. Fraud comes from a schedule of patterns that appear, vanish and
recur:

- ``compromised_terminal``: a terminal is compromised; every transaction on it is fraud for 14 days
  (found through the terminal-risk features, which only see labels after the label delay).
- ``card_compromise``: a card is stolen; for 7 days a third of its transactions are fraud with
  amounts five times the owner's usual (found through amount against the card's history).
- ``card_testing``: a stolen card is tested with a burst of tiny amounts within half an hour, mostly
  at night (found through the card's one-hour count and average).

Everything is vectorised with numpy and seeded *per day*, so any span of days regenerates exactly
(a chunk is generated with enough earlier days for its windows). Features are what a production
system has at prediction time: amount, time of day, per-card and per-terminal windowed counts and
averages, and terminal risk from labels already delivered.

Examples
--------
>>> sim = Simulator(seed=1, customers=300, terminals=100)
>>> tx = sim.generate(0, 3)
>>> tx.features.shape[1] == len(FEATURES), bool((tx.day < 3).all())
(True, True)
>>> bool((sim.generate(0, 3).features == tx.features).all())
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

DAY = 86400
HOUR = 3600
EPOCH = 1767225600  # 2026-01-01T00:00:00Z: simulated day 0

PATTERNS = ("compromised_terminal", "card_compromise", "card_testing")
"""Pattern codes are 1 + the index here; 0 is legitimate."""

FEATURES = (
    "amount",
    "is_night",
    "is_weekend",
    "card_nb_tx_1h",
    "card_avg_amount_1h",
    "card_nb_tx_1d",
    "card_avg_amount_1d",
    "card_nb_tx_7d",
    "card_avg_amount_7d",
    "card_nb_tx_30d",
    "card_avg_amount_30d",
    "amount_to_card_avg_30d",
    "terminal_nb_tx_1d",
    "terminal_risk_1d",
    "terminal_nb_tx_7d",
    "terminal_risk_7d",
    "terminal_nb_tx_30d",
    "terminal_risk_30d",
)

DEFAULT_SCHEDULE = "compromised_terminal:0-;card_compromise:0-50,66-;card_testing:45-"
"""Pretraining history is days 0-45: card testing is new after it; card compromise vanishes for
16 days and recurs."""

_TERMINAL_DAYS = 14
_CARD_DAYS = 7
_WINDOW_MAX_DAYS = 30
_NEAREST = 8


def parse_schedule(spec: str) -> dict[str, list[tuple[float, float]]]:
    """``"pattern:start-end,start-;..."`` (days, end exclusive, open end allowed) to intervals.

    >>> parse_schedule("card_testing:45-;card_compromise:0-50,66-")["card_compromise"]
    [(0.0, 50.0), (66.0, inf)]
    """
    schedule: dict[str, list[tuple[float, float]]] = {p: [] for p in PATTERNS}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, spans = part.partition(":")
        if name not in schedule:
            raise ValueError(f"unknown fraud pattern {name!r}; known patterns: {', '.join(PATTERNS)}")
        for span in filter(None, spans.split(",")):
            lo, _, hi = span.partition("-")
            schedule[name].append((float(lo), float(hi) if hi else math.inf))
    return schedule


@dataclass
class Transactions:
    """Columns of simulated transactions, one row each."""

    id: np.ndarray  # int64, unique: day * 10**7 + index within the day
    time: np.ndarray  # int64 epoch seconds
    day: np.ndarray  # int64 simulated day
    card: np.ndarray  # int64
    terminal: np.ndarray  # int64
    amount: np.ndarray  # float64
    pattern: np.ndarray  # int8, 0 legitimate, else 1 + index in PATTERNS
    label_time: np.ndarray  # int64 epoch seconds when the label becomes known
    features: np.ndarray  # float32 (n, len(FEATURES))

    @property
    def label(self) -> np.ndarray:
        return (self.pattern > 0).astype(np.int64)

    def __len__(self) -> int:
        return len(self.id)

    def take(self, idx: np.ndarray) -> Transactions:
        return Transactions(**{k: v[idx] for k, v in self.__dict__.items()})

    @staticmethod
    def concat(parts: list[Transactions]) -> Transactions:
        return Transactions(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in Transactions.__annotations__})


class Simulator:
    def __init__(
        self,
        seed: int = 7,
        customers: int = 5000,
        terminals: int = 2000,
        label_delay_days: float = 1.0,
        schedule: str = DEFAULT_SCHEDULE,
        stream: int = 0,
        fraud_keep: float = 1.0,
    ):
        if not 0 < fraud_keep <= 1:
            raise ValueError(f"fraud_keep is the share of frauds kept, in (0, 1]; got {fraud_keep}")
        self.fraud_keep = fraud_keep
        self.seed = seed
        self.customers = customers
        self.terminals = terminals
        self.label_delay_days = label_delay_days
        self.schedule = parse_schedule(schedule)
        self.stream = stream
        rng = np.random.default_rng([seed, 0xC0FFEE])
        self._cust_xy = rng.uniform(0, 100, (customers, 2))
        self._cust_mean = rng.uniform(5, 100, customers)
        self._cust_std = self._cust_mean / 2
        self._cust_rate = rng.uniform(0, 4, customers)
        term_xy = rng.uniform(0, 100, (terminals, 2))
        k = min(_NEAREST, terminals)
        d2 = ((self._cust_xy[:, None, :] - term_xy[None, :, :]) ** 2).sum(-1)
        self._cust_terms = np.argpartition(d2, k - 1, axis=1)[:, :k]

    @classmethod
    def from_settings(cls, s, schedule: str = DEFAULT_SCHEDULE) -> Simulator:
        """The simulator of the settings' ``simulate`` section (seed, population, label delay, fraud kept)."""
        return cls(seed=s.seed, customers=s.customers, terminals=s.terminals, label_delay_days=s.label_delay_days,
                   schedule=schedule, fraud_keep=s.fraud_keep)

    def with_stream(self, stream: int, schedule: str | None = None) -> Simulator:
        """The same population with other daily draws (an independent sample, e.g. for evaluation)."""
        spec = schedule if schedule is not None else ";".join(
            f"{p}:" + ",".join(f"{lo:g}-{'' if math.isinf(hi) else f'{hi:g}'}" for lo, hi in spans)
            for p, spans in self.schedule.items()
        )
        return Simulator(self.seed, self.customers, self.terminals, self.label_delay_days, spec, stream)

    # -- raw transactions ----------------------------------------------------------------------

    def _active(self, pattern: str, day: int) -> bool:
        return any(lo <= day < hi for lo, hi in self.schedule[pattern])

    def _rng(self, day: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.stream, day, purpose])

    def _raw_day(self, day: int) -> dict[str, np.ndarray]:
        rng = self._rng(day, 1)
        n_per = rng.poisson(self._cust_rate)
        card = np.repeat(np.arange(self.customers), n_per)
        n = len(card)
        secs = np.clip(rng.normal(DAY / 2, 20000, n), 0, DAY - 1)
        amount = rng.normal(self._cust_mean[card], self._cust_std[card])
        neg = amount < 0
        amount[neg] = rng.uniform(0, 2 * self._cust_mean[card[neg]])
        terminal = self._cust_terms[card, rng.integers(0, self._cust_terms.shape[1], n)]
        pattern = np.zeros(n, np.int8)

        # card compromise: cards drawn on each of the last _CARD_DAYS days (while the pattern was active)
        stolen = [
            self._rng(d, 2).choice(self.customers, 3, replace=False)
            for d in range(day - _CARD_DAYS + 1, day + 1)
            if d >= 0 and self._active("card_compromise", d)
        ]
        if stolen:
            hit = np.isin(card, np.concatenate(stolen)) & (rng.random(n) < 1 / 3) & (pattern == 0)
            amount[hit] *= 5
            pattern[hit] = 2

        # compromised terminals: every transaction on them is fraud
        bad_terms = [
            self._rng(d, 3).choice(self.terminals, 1, replace=False)
            for d in range(day - _TERMINAL_DAYS + 1, day + 1)
            if d >= 0 and self._active("compromised_terminal", d)
        ]
        if bad_terms:
            pattern[np.isin(terminal, np.concatenate(bad_terms)) & (pattern == 0)] = 1

        parts: dict[str, np.ndarray] = {"card": card, "secs": secs, "amount": amount, "terminal": terminal, "pattern": pattern}
        if self._active("card_testing", day):
            parts = _concat_dicts(parts, self._card_testing_bursts(day))
        if self.fraud_keep < 1:  # a rarer fraud: the same patterns, fewer of their transactions
            fraud = parts["pattern"] > 0
            kept = ~fraud | (self._rng(day, 6).random(len(fraud)) < self.fraud_keep)
            parts = {k: v[kept] for k, v in parts.items()}
        return parts

    def _card_testing_bursts(self, day: int) -> dict[str, np.ndarray]:
        rng = self._rng(day, 4)
        cards = rng.choice(self.customers, 4, replace=False)
        sizes = rng.integers(6, 13, len(cards))
        card = np.repeat(cards, sizes)
        starts = np.where(rng.random(len(cards)) < 0.8, rng.uniform(0, 6 * HOUR, len(cards)), rng.uniform(0, DAY - HOUR, len(cards)))
        secs = np.repeat(starts, sizes) + rng.uniform(0, HOUR / 2, len(card))
        terminal = np.repeat(rng.integers(0, self.terminals, len(cards)), sizes)
        return {
            "card": card,
            "secs": secs,
            "amount": rng.uniform(0.5, 5.0, len(card)),
            "terminal": terminal,
            "pattern": np.full(len(card), 3, np.int8),
        }

    # -- features ------------------------------------------------------------------------------

    def generate(self, start_day: int, n_days: int) -> Transactions:
        """Transactions of days [start_day, start_day + n_days) with their features."""
        warm = _WINDOW_MAX_DAYS + math.ceil(self.label_delay_days) + 1
        first = max(0, start_day - warm)
        days = [self._raw_day(d) for d in range(first, start_day + n_days)]
        day = np.concatenate([np.full(len(d["card"]), first + i, np.int64) for i, d in enumerate(days)])
        raw = _concat_dicts(*days)
        order = np.lexsort((raw["secs"], day))
        day = day[order]
        raw = {k: v[order] for k, v in raw.items()}
        time = EPOCH + day * DAY + raw["secs"].astype(np.int64)
        within = np.arange(len(day)) - np.searchsorted(day, day, side="left")
        ids = day * 10**7 + within
        pattern = raw["pattern"]
        delay = self._rng(start_day, 5).exponential(self.label_delay_days * DAY, len(day)) if self.label_delay_days > 0 else np.zeros(len(day))
        label_time = time + delay.astype(np.int64)
        feats = _features(time, raw["card"], raw["terminal"], raw["amount"], (pattern > 0).astype(np.float64), int(self.label_delay_days * DAY))
        keep = day >= start_day
        return Transactions(
            id=ids[keep], time=time[keep], day=day[keep], card=raw["card"][keep].astype(np.int64),
            terminal=raw["terminal"][keep].astype(np.int64), amount=raw["amount"][keep], pattern=pattern[keep],
            label_time=label_time[keep], features=feats[keep],
        )

    def labeled_stream(self, start_day: int, chunk_days: int = 2, end_day: float = math.inf) -> Iterator[Transactions]:
        """Transactions in the order their labels become known, chunk by chunk, without end (or to end_day)."""
        pending: Transactions | None = None
        day = start_day
        while day < end_day:
            n = int(min(chunk_days, end_day - day))
            chunk = self.generate(day, n)
            day += n
            if pending is not None:
                chunk = Transactions.concat([pending, chunk])
            horizon = EPOCH + day * DAY
            ready = chunk.label_time < horizon if day < end_day else np.ones(len(chunk), bool)
            out = chunk.take(np.flatnonzero(ready))
            pending = chunk.take(np.flatnonzero(~ready))
            yield out.take(np.argsort(out.label_time, kind="stable"))

    def pattern_sets(self, start_day: int, n_days: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per pattern, (features, labels) of legitimate transactions plus that pattern's frauds,
        from days where every pattern is active: what "detects pattern p" is measured on."""
        everything = ";".join(f"{p}:0-" for p in PATTERNS)
        tx = self.with_stream(self.stream + 1000, everything).generate(start_day, n_days)
        out = {}
        for code, name in enumerate(PATTERNS, start=1):
            idx = (tx.pattern == 0) | (tx.pattern == code)
            out[name] = (tx.features[idx], (tx.pattern[idx] == code).astype(np.int64))
        return out


def _concat_dicts(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _windows(group: np.ndarray, time: np.ndarray, values: np.ndarray, lag: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, count and sum of ``values`` over the same group's rows with time in
    (t - lag - width, t - lag]. Rows must be sorted by (group, time)."""
    key = group.astype(np.int64) * (1 << 32) + (time - time.min())
    lo = np.searchsorted(key, key - lag - width, side="right")
    hi = np.searchsorted(key, key - lag, side="right") if lag else np.arange(1, len(key) + 1)
    csum = np.concatenate([[0.0], np.cumsum(values)])
    return (hi - lo).astype(np.float64), csum[hi] - csum[lo]


def _features(time, card, terminal, amount, fraud, label_delay_s) -> np.ndarray:
    n = len(time)
    out = np.zeros((n, len(FEATURES)), np.float64)
    col = {name: i for i, name in enumerate(FEATURES)}
    secs = (time - EPOCH) % DAY
    out[:, col["amount"]] = amount
    out[:, col["is_night"]] = secs < 6 * HOUR
    out[:, col["is_weekend"]] = ((time - EPOCH) // DAY + 3) % 7 >= 5  # 2026-01-01 is a Thursday

    order = np.lexsort((time, card))
    for name, width in (("1h", HOUR), ("1d", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY)):
        cnt, tot = _windows(card[order], time[order], amount[order], 0, width)
        out[order, col[f"card_nb_tx_{name}"]] = cnt
        out[order, col[f"card_avg_amount_{name}"]] = tot / np.maximum(cnt, 1)
    out[:, col["amount_to_card_avg_30d"]] = amount / np.maximum(out[:, col["card_avg_amount_30d"]], 1.0)

    order = np.lexsort((time, terminal))
    for name, width in (("1d", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY)):
        cnt, frauds = _windows(terminal[order], time[order], fraud[order], label_delay_s, width)
        out[order, col[f"terminal_nb_tx_{name}"]] = cnt
        out[order, col[f"terminal_risk_{name}"]] = frauds / np.maximum(cnt, 1)
    return out.astype(np.float32)
