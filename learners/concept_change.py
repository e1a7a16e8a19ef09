"""A concept change an operator confirmed (``POST /v1/learner/concept-change``): how long it lasts.

To the learner a concept that changed (fraud moved to where honest customers were, a pattern stopped
being fraud, an old concept came back) and targeted label poisoning are the same labels: ones that
contradict what it serves. Only a person can tell them apart, so the guards relax only when one
says so, and only for a while: ``rounds`` training rounds, and until a version was published during
the change (where fraud is rare a candidate needs many rounds of evidence), at most ``LIMIT`` times
``rounds``. The learner then learns the new concept, the gates judging candidates on the present.

>>> c = ConceptChange()
>>> c.start(2); c.active
True
>>> c.round_done(), c.round_done(), c.round_done()  # nothing published yet: it goes on
(False, False, False)
>>> c.published += 1; c.round_done(), c.active
(True, False)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MAX_ROUNDS = 10_000
"""The most rounds one confirmation may ask for."""

LIMIT = 4
"""A change lasts at most this many times its rounds while no version is published during it."""


@dataclass
class ConceptChange:
    rounds_left: int = 0
    rounds_limit: int = 0  # the rounds it may still last while nothing is published
    published: int = 0  # versions published since it was confirmed

    @property
    def active(self) -> bool:
        return self.rounds_left > 0

    def start(self, rounds: int) -> None:
        self.rounds_left, self.rounds_limit, self.published = rounds, LIMIT * rounds, 0

    def round_done(self) -> bool:
        """Count a trained round; True when this round ended the change."""
        if not self.active:
            return False
        self.rounds_left -= 1
        self.rounds_limit -= 1
        if not self.rounds_left and not self.published and self.rounds_limit > 0:
            self.rounds_left = 1  # nothing of the new concept served yet: one more round
        return not self.active

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def restore(cls, state: dict[str, Any] | None) -> ConceptChange:
        return cls(**state) if state else cls()
