import orjson
import pytest

from streams.events import EventError, parse_event

NAMES = ("amount", "hour")


def raw(**over):
    doc = {"id": "tx-1", "time": 1767225600, "features": {"amount": 12.5, "hour": 3}, "label": 1, **over}
    return orjson.dumps(doc)


def reason(data: bytes, **kw) -> str:
    with pytest.raises(EventError) as exc:
        parse_event(data, NAMES, **kw)
    return exc.value.reason


def test_valid_event_in_schema_order():
    e = parse_event(orjson.dumps({"id": 7, "time": "2026-01-01T00:00:00Z", "features": {"hour": 3, "amount": 1}, "label": True, "entities": {"card": "c1"}}), NAMES)
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
