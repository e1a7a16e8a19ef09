"""Settings are read once and frozen: nothing changes a default behind a running process's back."""

from __future__ import annotations

import pydantic
import pytest

from perennial.settings import Settings


def test_settings_are_frozen_at_every_level_and_copies_change_only_the_copy():
    s = Settings()
    for target, field in ((s, "learn"), (s.learn, "round_events"), (s.learn.gates, "confidence"), (s.join, "maturity_s")):
        with pytest.raises(pydantic.ValidationError, match="frozen"):
            setattr(target, field, getattr(target, field))
    copy = s.model_copy(update={"learn": s.learn.model_copy(update={"round_events": 7})})
    assert copy.learn.round_events == 7 and s.learn.round_events == Settings().learn.round_events
