import json
import math
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import (
    FIRST_CODE,
    MISSING,
    OTHER,
    REASONS,
    EventError,
    Features,
    LabeledEvent,
    category_key,
    exact_feature_vector,
    feature_vector,
    parse_event,
    parse_time,
)

NAMES = ("amount", "hour")


def raw(**over):
    doc = {"id": "tx-1", "time": 1767225600, "features": {"amount": 12.5, "hour": 3}, "label": 1, **over}
    return orjson.dumps(doc)


def reason(data: bytes, **kw) -> str:
    with pytest.raises(EventError) as exc:
        parse_event(data, NAMES, **kw)
    return exc.value.reason


def test_valid_event_in_schema_order():
    e = parse_event(
        orjson.dumps({"id": 7, "time": "2026-01-01T00:00:00Z", "features": {"hour": 3, "amount": 1}, "label": True, "entities": {"card": "c1"}}), NAMES
    )
    assert (e.id, e.time, e.features, e.label, e.entities) == ("7", 1767225600.0, (1.0, 3.0), 1, {"card": "c1"})


def test_naive_iso_time_is_utc():
    assert parse_event(raw(time="2026-01-01T00:00:00"), NAMES).time == 1767225600.0


def test_missing_feature_names_it_and_the_schema():
    with pytest.raises(EventError) as exc:
        parse_event(raw(features={"amount": 1}), NAMES)
    assert exc.value.reason == "missing_feature"
    assert "'hour' is missing" in exc.value.message and "amount, hour" in exc.value.message


def test_unknown_feature_is_named():
    with pytest.raises(EventError) as exc:
        parse_event(raw(features={"amount": 1, "hour": 2, "colour": 3}), NAMES)
    assert exc.value.reason == "unknown_feature" and "'colour'" in exc.value.message


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"not json", "not_json"),
        (b'{"id": "a", "features": {"amount": NaN, "hour": 1}}', "not_json"),
        (b"[1, 2]", "not_object"),
        (raw(id=""), "bad_id"),
        (raw(id=None), "bad_id"),
        (raw(id="x" * 300), "bad_id"),
        (raw(time="yesterday"), "bad_time"),
        (raw(time=True), "bad_time"),
        (raw(features=[1, 2]), "bad_features"),
        (raw(features={"amount": "12", "hour": 1}), "bad_value"),
        (raw(features={"amount": True, "hour": 1}), "bad_value"),
        (raw(features={"amount": 1, "hour": None}), "bad_value"),
        (raw(label=2), "bad_label"),
        (raw(label="1"), "bad_label"),
        (raw(label=None), "bad_label"),
        (raw(entities=["c1"]), "bad_entities"),
    ],
)
def test_rejections_carry_a_reason(data, expected):
    assert reason(data) == expected


def test_size_limit():
    assert reason(raw(), max_bytes=10) == "too_large"


def test_values_whose_sum_overflows_are_still_finite_and_kept():
    assert parse_event(raw(features={"amount": 1e308, "hour": 1e308}), NAMES).features == (1e308, 1e308)


def test_integer_features_become_floats_and_entity_numbers_strings():
    e = parse_event(raw(features={"amount": 12, "hour": 3}, entities={"card": 17, "terminal": "t-1"}), NAMES)
    assert e.features == (12.0, 3.0) and all(type(v) is float for v in e.features)
    assert e.entities == {"card": "17", "terminal": "t-1"}


def test_a_parsed_event_is_immutable():
    e = parse_event(raw(), NAMES)
    with pytest.raises(AttributeError):
        e.label = 0


def test_a_misnamed_feature_with_the_right_count_is_named_not_emptied():
    with pytest.raises(EventError) as exc:
        feature_vector({"a": 1, "zzz": 2}, ("a", "b"))
    assert exc.value.reason == "missing_feature" and "'b' is missing" in exc.value.message


def test_an_integer_beyond_the_range_of_a_float_is_a_bad_value():
    assert reason(json.dumps({"id": "a", "time": 0, "features": {"amount": 10**400, "hour": 1}, "label": 0}).encode()) == "not_json"
    with pytest.raises(EventError) as exc:
        feature_vector({"amount": 10**400, "hour": 1}, NAMES)
    assert exc.value.reason == "bad_value" and "'amount' must be finite" in exc.value.message


@pytest.mark.parametrize("time", [1.7e12, -1e13, 10**400, 1e308, math.nan, "9999-12-31T23:59:59-05:00"])
def test_a_time_that_is_no_date_of_years_1_to_9999_is_refused(time):
    with pytest.raises(EventError) as exc:
        parse_time(time)
    assert exc.value.reason == "bad_time" and "years 1 to 9999" in exc.value.message


def test_epoch_milliseconds_are_refused_in_an_event():
    assert reason(raw(time=1767225600000)) == "bad_time"


def test_a_record_without_a_value_is_not_json():
    with pytest.raises(EventError) as exc:
        parse_event(None, NAMES)
    assert exc.value.reason == "not_json" and "null" in exc.value.message


# -- properties: the fast path agrees with the exact one; the parser answers an event or a reason --

NAME = st.text(min_size=1, max_size=6)
NUMBER = (
    st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([10**400, -(10**400), 2**1024, 1e308, -1e308, 0, -0.0])
)
SCALAR = st.none() | st.booleans() | NUMBER | st.text(max_size=8) | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "12"])
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)


@st.composite
def feature_documents(draw) -> tuple[tuple[str, ...], object]:
    """Schema names and a features document: right names, misnamed ones (the count kept), missing
    and extra ones, any JSON value; or no object at all."""
    names = tuple(draw(st.lists(NAME, max_size=5, unique=True)))
    doc: dict[str, object] = {}
    for name in names:
        kind = draw(st.sampled_from(["number", "number", "value", "missing", "misnamed"]))
        if kind == "number":
            doc[name] = draw(NUMBER)
        elif kind == "value":
            doc[name] = draw(VALUE)
        elif kind == "misnamed":
            doc[draw(NAME)] = draw(NUMBER)
    doc.update(draw(st.dictionaries(NAME, NUMBER | VALUE, max_size=2)))
    return names, draw(st.just(doc) | st.just(doc) | VALUE)


def outcome(vector, features, names):
    try:
        return vector(features, names)
    except EventError as exc:
        return exc.reason


@settings(max_examples=800, deadline=None)
@given(feature_documents())
def test_the_bulk_path_and_the_exact_path_agree(case):
    names, features = case
    fast, exact = outcome(feature_vector, features, names), outcome(exact_feature_vector, features, names)
    assert fast == exact
    if isinstance(fast, tuple):
        assert len(fast) == len(names) and all(type(v) is float and math.isfinite(v) for v in fast)


OFFSET = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
ISO_TIME = st.datetimes(timezones=st.none() | st.builds(timezone, OFFSET)).map(datetime.isoformat)


def mostly(valid, hostile):
    """Valid three times in four, so that one hostile field at a time reaches the later checks."""
    return st.one_of(valid, valid, valid, hostile)


@st.composite
def event_bytes(draw) -> tuple[tuple[str, ...], bytes]:
    """An event document with hostile fields, as JSON text that may carry NaN/Infinity tokens, huge
    integers and a repeated key; or arbitrary bytes."""
    names, features = draw(feature_documents())
    doc = {
        "id": draw(mostly(st.text(min_size=1, max_size=20), st.text(max_size=300) | st.integers(-(10**30), 10**30) | VALUE)),
        "time": draw(mostly(st.floats(0, 2e9) | ISO_TIME, NUMBER | st.text(max_size=30) | VALUE)),
        "features": features,
        "label": draw(mostly(st.sampled_from([0, 1, True, False, 0.0, 1.0]), st.sampled_from([2, -1, 0.5, "1", None]) | VALUE)),
        "entities": draw(mostly(st.dictionaries(NAME, st.text(max_size=5) | st.integers(), max_size=3), VALUE)),
    }
    doc = {k: v for k, v in doc.items() if draw(st.integers(0, 9))}  # each field missing 1 time in 10
    text = json.dumps(draw(mostly(st.just(doc), VALUE)), ensure_ascii=draw(st.booleans()))
    if text.startswith("{") and len(text) > 2 and draw(st.integers(0, 9)) == 0:
        text = text[:-1] + ', "id": ' + json.dumps(draw(VALUE)) + "}"  # a repeated key
    return names, draw(mostly(st.just(text.encode()), st.binary(max_size=200)))


@settings(max_examples=500, deadline=None)
@given(event_bytes())
def test_any_bytes_give_a_valid_event_or_a_known_reason(case):
    names, data = case
    try:
        event = parse_event(data, names)
    except EventError as exc:
        assert exc.reason in REASONS
        return
    assert isinstance(event, LabeledEvent)
    assert len(event.features) == len(names) and all(type(v) is float and math.isfinite(v) for v in event.features)
    assert event.label in (0, 1) and type(event.time) is float and math.isfinite(event.time)
    assert type(event.id) is str and 0 < len(event.id) <= 256
    assert all(type(k) is str and type(v) is str for k, v in event.entities.items())


# -- Features: optional and categorical features (issue 16) --

MIXED = Features(("amount", "tip", "country", "channel"), optional={"tip", "channel"},
                 categories={"country": {"US": 2, "GB": 3, "7": 4}, "channel": {"web": 2}})


def vector(features, names=MIXED):
    return outcome(feature_vector, features, names)


def same(a, b) -> bool:
    """Equal outcomes, NaN equal to NaN."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))
    return a == b


def test_features_are_the_names():
    assert MIXED == ("amount", "tip", "country", "channel") and isinstance(MIXED, tuple) and len(MIXED) == 4
    assert MIXED.optional == {"tip", "channel"} and MIXED.positions == (2, 3) and not MIXED.bulk
    assert Features(NAMES).bulk and Features(NAMES).optional == frozenset() and Features(NAMES).categories == {}
    assert "Features(" in repr(MIXED)


@pytest.mark.parametrize(
    "optional, categories",
    [({"nope"}, None), ((), {"nope": {}}), ((), {"a": {"x": 1}}), ((), {"a": {"x": 2, "y": 2}}), ((), {"a": {"x": 2.0}}), ((), {"a": {3: 2}})],
)
def test_features_refuse_a_malformed_declaration(optional, categories):
    with pytest.raises(ValueError):
        Features(("a", "b"), optional=optional, categories=categories)


def test_an_optional_number_absent_or_null_is_nan():
    assert same(vector({"amount": 1, "country": "US"}), (1.0, math.nan, 2.0, float(MISSING)))
    assert same(vector({"amount": 1, "tip": None, "country": "US", "channel": None}), (1.0, math.nan, 2.0, 1.0))
    assert same(vector({"amount": 1, "tip": 2.5, "country": "GB", "channel": "web"}), (1.0, 2.5, 3.0, 2.0))


def test_a_required_feature_absent_is_missing_and_null_a_bad_value_as_for_plain_names():
    assert vector({"tip": 1, "country": "US"}) == "missing_feature"
    assert vector({"amount": 1, "tip": 1}) == "missing_feature"
    assert vector({"amount": None, "country": "US"}) == "bad_value"
    assert vector({"amount": 1, "country": None}) == "bad_value"
    with pytest.raises(EventError) as exc:
        feature_vector({"amount": None, "country": "US"}, MIXED, "event 3: ")
    assert exc.value.message == "event 3: feature 'amount' must be a number, got null"


def test_missing_names_only_the_required_features():
    with pytest.raises(EventError) as exc:
        feature_vector({}, MIXED)
    assert "'amount', 'country' is missing" in exc.value.message and "'tip'" not in exc.value.message.split(";")[0]


def test_an_unknown_feature_is_refused_also_when_an_optional_one_is_absent():
    with pytest.raises(EventError) as exc:
        feature_vector({"amount": 1, "country": "US", "colour": 3}, MIXED)
    assert exc.value.reason == "unknown_feature" and "'colour'" in exc.value.message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400, "1", True, [1], {"a": 1}])
def test_an_optional_number_is_still_a_finite_number_when_present(value):
    assert vector({"amount": 1, "tip": value, "country": "US"}) == "bad_value"


@pytest.mark.parametrize(
    "value, key",
    [("US", "US"), ("", ""), ("7", "7"), (7, "7"), (7.0, "7"), (-0.0, "0"), (-3, "-3"), (True, "true"), (False, "false"),
     (1e20, "100000000000000000000"), (2**70, str(2**70))],
)
def test_category_values_have_one_key(value, key):
    assert category_key(value) == key


@pytest.mark.parametrize("value", [None, 7.5, math.nan, math.inf, -math.inf, [1], {"a": 1}, (1,), b"US", pytest.param(10**5000, id="5000-digits")])
def test_anything_else_is_no_category(value):
    with pytest.raises(EventError) as exc:
        category_key(value)
    assert exc.value.reason == "bad_value"
    assert vector({"amount": 1, "country": value}) == "bad_value"


def test_a_bad_category_is_named():
    with pytest.raises(EventError) as exc:
        feature_vector({"amount": 1, "country": 1.5}, MIXED, "event 0: ")
    assert exc.value.message == "event 0: feature 'country' is a category: a string, an integer or a boolean, got the number 1.5"


def test_7_and_7_0_and_the_string_7_are_one_category_and_an_integer_category_never_takes_the_bulk_path():
    for value in ("7", 7, 7.0):
        assert same(vector({"amount": 1, "country": value}), (1.0, math.nan, 4.0, 1.0))
    both = Features(("a", "b"), categories={"b": {"7": 2}})
    assert feature_vector({"a": 1, "b": 7}, both) == (1.0, 2.0) and feature_vector({"a": 1, "b": 8}, both) == (1.0, 0.0)


def test_an_unseen_category_is_other_and_counted():
    row = vector({"amount": 1, "country": "FR", "channel": "app"})
    assert same(row, (1.0, math.nan, float(OTHER), float(OTHER))) and MIXED.unseen(row) == 2
    assert MIXED.unseen(vector({"amount": 1, "country": "US", "channel": None})) == 0
    assert Features(NAMES).unseen((0.0, 0.0)) == 0  # numbers are never unseen
    assert FIRST_CODE == 2


def test_parse_event_takes_features():
    e = parse_event(raw(features={"amount": 3, "country": "GB"}), MIXED)
    assert same(e.features, (3.0, math.nan, 3.0, 1.0))
    with pytest.raises(EventError) as exc:
        parse_event(raw(features={"amount": 3, "country": {"x": 1}}), MIXED)
    assert exc.value.reason == "bad_value"


@settings(max_examples=400, deadline=None)
@given(feature_documents())
def test_features_of_numbers_only_answer_exactly_as_the_names(case):
    names, features = case
    assert outcome(feature_vector, features, Features(names)) == outcome(feature_vector, features, names)


@st.composite
def declared_documents(draw) -> tuple[Features, object]:
    """Features with some names optional and some categorical (small vocabularies), and a document
    that also holds nulls, category-like values and absent optional names."""
    names, features = draw(feature_documents())
    categorical = [n for n in names if draw(st.booleans())]
    keys = st.sampled_from(["US", "7", "true", "True", ""])
    categories = {n: {k: FIRST_CODE + i for i, k in enumerate(draw(st.lists(keys, unique=True, max_size=3)))} for n in categorical}
    declared = Features(names, optional=[n for n in names if draw(st.booleans())], categories=categories)
    if isinstance(features, dict):
        features = dict(features)
        for name in names:
            change = draw(st.sampled_from(["keep", "keep", "null", "absent", "category"]))
            if change == "null":
                features[name] = None
            elif change == "absent":
                features.pop(name, None)
            elif change == "category":
                features[name] = draw(st.sampled_from(["US", "FR", 7, 7.0, 7.5, True, "", "TRUE", "True"]))
    return declared, features


@settings(max_examples=800, deadline=None)
@given(declared_documents())
def test_with_features_the_bulk_path_and_the_exact_path_agree(case):
    names, features = case
    fast, exact = outcome(feature_vector, features, names), outcome(exact_feature_vector, features, names)
    assert same(fast, exact)
    if isinstance(fast, tuple):
        assert len(fast) == len(names) and all(type(v) is float for v in fast)
        for name, v in zip(names, fast):
            if name in names.categories:
                assert v in (OTHER, MISSING, *names.categories[name].values())
                assert v != MISSING or name in names.optional
            else:
                assert math.isfinite(v) or (math.isnan(v) and name in names.optional)
    else:
        assert fast in REASONS


@settings(max_examples=300, deadline=None)
@given(declared_documents(), st.sampled_from([0, 1, True, "2026-01-01"]))
def test_any_declared_document_gives_an_event_or_a_known_reason(case, time):
    names, features = case
    try:
        event = parse_event(orjson.dumps({"id": "a", "time": time, "features": features, "label": 1}), names)
    except EventError as exc:
        assert exc.reason in REASONS
        return
    except TypeError:  # orjson refuses integers beyond 64 bits and non-string keys: nothing to send
        return
    assert len(event.features) == len(names)
