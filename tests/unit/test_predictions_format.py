"""The prediction-log and label formats: what is accepted, and a named reason for everything else."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import REASONS, EventError, Features
from streams.predictions import OTHER_KEY, encode_batch, parse_label, parse_predictions
from tests.unit.conftest import DECLARED

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


# -- raw vectors of a schema with optional and categorical features (issue 16) -------------------

DECLARED_ROWS = np.float32([[3.0, np.nan, 3, 2], [0.5, 4.25, 0, 3], [1.0, 2.0, 1, 0], [7.0, np.nan, 2, 2]])
"""Raw vectors as the server scores them: NaN an optional number missing; codes 0 other, 1 missing, 2.. the vocabulary."""


def test_a_batch_of_raw_vectors_reads_back_the_same_with_categories_by_key():
    raw = encode_batch(["a", "b", "c", "d"], [1.0, 2.0, 3.0, 4.0], DECLARED_ROWS, np.full(4, 0.5), "v3", DECLARED.features)
    doc = orjson.loads(raw)
    assert doc["rows"][0] == [3.0, None, None, None] and doc["rows"][1] == [0.5, 4.25, None, None]  # a code is not logged
    assert doc["categories"] == {"country": ["GB", OTHER_KEY, None, "US"], "channel": ["web", "app", OTHER_KEY, "web"]}
    back = parse_predictions(raw, DECLARED.features)
    np.testing.assert_array_equal(np.float32([p.features for p in back]), DECLARED_ROWS)  # NaN where NaN, each code again
    with pytest.raises(EventError, match="bad_features"):
        parse_predictions(raw, DECLARED.features[:3])  # another schema's features: refused


def test_the_key_logged_for_other_is_outside_any_vocabulary_even_one_holding_it():
    features = Features(("x",), categories={"x": {OTHER_KEY: 2, OTHER_KEY + "\u0000": 3}})
    raw = encode_batch(["a", "b", "c"], [1.0] * 3, np.float32([[0], [2], [3]]), np.zeros(3), "v1", features)
    assert orjson.loads(raw)["categories"]["x"] == [OTHER_KEY + "\u0000\u0000", OTHER_KEY, OTHER_KEY + "\u0000"]
    assert [p.features for p in parse_predictions(raw, features)] == [(0.0,), (2.0,), (3.0,)]


def declared_batch(**change) -> bytes:
    doc = {"version": "v1", "names": list(DECLARED.names), "ids": ["a"], "times": [1.0], "scores": [0.1],
           "rows": [[1.0, None, None, None]], "categories": {"country": [None], "channel": ["web"]}, **change}
    return orjson.dumps(doc)


def test_a_well_formed_declared_batch_reads():
    assert parse_predictions(declared_batch(), DECLARED.features)[0].features[1:] == pytest.approx((np.nan, 1.0, 2.0), nan_ok=True)


@pytest.mark.parametrize("raw, words", [
    (declared_batch(rows=[[None, None, None, None]]), "feature 'amount' must hold finite numbers"),
    (declared_batch(categories=None), "needs 'categories'"),
    (declared_batch(categories={"country": [None]}), "'categories' must hold for 'channel' one string per row"),
    (declared_batch(categories={"country": [None], "channel": [None]}), "for 'channel' one string per row"),
    (declared_batch(categories={"country": [7], "channel": ["web"]}), "for 'country' one string or null per row"),
    (declared_batch(categories={"country": [None, "US"], "channel": ["web"]}), "for 'country' one string or null per row"),
    (declared_batch(rows=[[1.0, "x", None, None]]), "'rows' and 'scores' must hold numbers only"),
])
def test_malformed_declared_batches_are_refused_naming_the_feature(raw, words):
    with pytest.raises(EventError, match=words.replace("(", r"\(")):
        parse_predictions(raw, DECLARED.features)
