"""The prediction-log and label formats: what is accepted, and a named reason for everything else."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import REASONS, EventError
from streams.predictions import encode_batch, parse_label, parse_predictions

NAMES = ("amount", "hour")


def batch(**change) -> bytes:
    doc = {"version": "v1", "names": list(NAMES), "ids": ["a", "b"], "times": [1.0, 2.0], "scores": [0.1, 0.2],
           "rows": [[1, 2], [3, 4]], **change}
    return orjson.dumps(doc)


@pytest.mark.parametrize("raw, reason", [
    (None, "not_json"),
    (b"[1]", "not_object"),
    (batch(names=["hour", "amount"]), "bad_features"),  # scored on another schema: refused, not misread
    (batch(ids=["a"]), "bad_features"),
    (batch(rows=[[1, 2], [3]]), "bad_value"),
    (batch(rows=[[1, 2], [3, "x"]]), "bad_value"),
    (batch(scores=[0.1, None]), "bad_value"),
    (batch(ids=["a", ""]), "bad_id"),
    (batch(times=[1.0, "yesterday"]), "bad_time"),
    (orjson.dumps({"id": "a", "time": 1, "features": {"amount": 1}}), "missing_feature"),
    (orjson.dumps({"id": "a", "features": {"amount": 1, "hour": 2}}), "bad_time"),
    (orjson.dumps({"id": "a", "time": 1, "features": {"amount": 1, "hour": 2}, "x": "y" * 70_000}), "too_large"),
])
def test_malformed_prediction_records_are_refused_with_a_reason(raw, reason):
    with pytest.raises(EventError) as err:
        parse_predictions(raw, NAMES)
    assert err.value.reason == reason


def test_an_unlabeled_event_and_a_batch_read_alike():
    event = parse_predictions(orjson.dumps({"id": 7, "time": "2026-01-01T00:00:00Z", "features": {"hour": 2, "amount": 1}}), NAMES)
    assert [(p.id, p.features, p.score) for p in event] == [("7", (1.0, 2.0), None)]
    rows = np.float32([[0.1, 1e-7], [123456.78, -3.4e38]])
    back = parse_predictions(encode_batch(["a", 5], [1.5, 2.5], rows, np.array([0.25, 1.0]), "v9", NAMES), NAMES)
    assert np.array_equal(np.float32([p.features for p in back]), rows)  # float32 values survive the text form exactly
    assert [(p.id, p.time, p.score, p.version) for p in back] == [("a", 1.5, 0.25, "v9"), ("5", 2.5, 1.0, "v9")]


@pytest.mark.parametrize("doc, reason", [
    ({"label": 1}, "bad_id"),
    ({"id": "a"}, "bad_label"),
    ({"id": "a", "label": "1"}, "bad_label"),
    ({"id": "a", "label": 1, "source": "charge back"}, "bad_label"),
    ({"id": "a", "label": 1, "source": 5}, "bad_label"),
    ({"id": "a", "label": 1, "time": "soon"}, "bad_time"),
])
def test_malformed_labels_are_refused_with_a_reason(doc, reason):
    with pytest.raises(EventError) as err:
        parse_label(orjson.dumps(doc))
    assert err.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(st.sampled_from(["id", "label", "time", "source", "ids", "names", "rows", "times", "scores", "features"]), c, max_size=6)
        ),
        max_leaves=12,
    ).map(lambda d: orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS) if not isinstance(d, float) else b"1")
)
def test_any_bytes_give_predictions_and_labels_or_a_known_reason(raw):
    for parse in (lambda r: parse_predictions(r, NAMES), parse_label):
        try:
            parse(raw)
        except EventError as exc:
            assert exc.reason in REASONS
