import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learners.schema import (
    CLIP,
    FeatureSchema,
    declaration_from_file,
    declaration_from_json,
    parse_declaration,
)
from streams.events import FIRST_CODE, MISSING, OTHER, EventError, Features, exact_feature_vector, feature_vector

NAMES = ("amount", "hour", "count")


# -- the schema as it was before optional and categorical features: the reference to stay equal to --


def old_fit(names, x):
    log1p = tuple(bool(v) for v in (x.min(axis=0) >= 0))
    z = np.where(log1p, np.log1p(np.maximum(x, 0)), x)
    std = z.std(axis=0)
    return names, log1p, tuple(float(v) for v in z.mean(axis=0)), tuple(float(v) if v > 1e-9 else 1.0 for v in std)


def old_transform(log1p, mean, std, x):
    x = np.asarray(x, dtype=np.float64)
    z = np.where(log1p, np.log1p(np.maximum(x, 0)), x)
    z = (z - np.asarray(mean)) / np.asarray(std)
    return np.clip(z, -CLIP, CLIP).astype(np.float32)


def numbers(seed=0, n=200):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.lognormal(3, 1, n), rng.normal(0, 5, n), rng.integers(0, 20, n)]).astype(np.float64)


@pytest.mark.parametrize("seed", range(5))
def test_a_numeric_history_is_fitted_and_transformed_bit_for_bit_as_before(seed):
    x = numbers(seed)
    s = FeatureSchema.fit(NAMES, x)
    names, log1p, mean, std = old_fit(NAMES, x)
    assert (s.names, s.log1p, s.mean, s.std) == (names, log1p, mean, std)
    probe = np.concatenate([numbers(seed + 100, 50), [[1e300, -1e300, np.inf], [-np.inf, 0.0, -0.0]]])
    new, old = s.transform(probe), old_transform(log1p, mean, std, probe)
    assert new.dtype == np.float32 and new.tobytes() == old.tobytes()
    assert s.transform(probe[0]).tobytes() == old_transform(log1p, mean, std, probe[0]).tobytes()  # one row, 1-d, as before


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=2), min_size=1, max_size=30))
def test_any_numeric_history_is_fitted_as_before(rows):
    x = np.array(rows)
    s = FeatureSchema.fit(("a", "b"), x)
    assert (s.names, s.log1p, s.mean, s.std) == old_fit(("a", "b"), x)
    assert s.transform(x).tobytes() == old_transform(s.log1p, s.mean, s.std, x).tobytes()


def test_the_four_argument_schema_is_numbers_required():
    s = FeatureSchema(("a", "b"), (False, True), (0.0, 1.0), (1.0, 2.0))
    assert s.optional == (False, False) and s.categories == (None, None)
    assert s == FeatureSchema(("a", "b"), (False, True), (0.0, 1.0), (1.0, 2.0), (False, False), (None, None))
    assert s.features == ("a", "b") and isinstance(s.features, Features) and s.features.bulk
    assert (s.numeric_width, s.cardinalities, s.input_width, s.input_names) == (2, (), 2, ("a", "b"))
    assert s.declaration() == [{"name": "a", "type": "number", "missing": False}, {"name": "b", "type": "number", "missing": False}]
    assert hash(s) == hash(FeatureSchema(("a", "b"), (False, True), (0.0, 1.0), (1.0, 2.0)))


def test_a_numeric_schema_is_stored_as_before_and_an_old_manifest_loads():
    s = FeatureSchema.fit(NAMES, numbers())
    d = s.to_dict()
    assert list(d) == ["names", "log1p", "mean", "std"]
    old = json.loads(json.dumps({"names": list(NAMES), "log1p": list(s.log1p), "mean": list(s.mean), "std": list(s.std)}))
    assert FeatureSchema.from_dict(old) == s and FeatureSchema.from_dict(json.loads(json.dumps(d))) == s


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"optional": (True,)}, "differ in length"),
        ({"categories": (None,)}, "differ in length"),
        ({"categories": (None, ("x", "x"), None)}, "distinct strings"),
        ({"categories": (None, ("x", 1), None)}, "distinct strings"),
    ],
)
def test_a_schema_refuses_inconsistent_declarations(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatureSchema(NAMES, (False,) * 3, (0.0,) * 3, (1.0,) * 3, **kwargs)


# -- fitting a mixed history --


def mixed_history(n=100):
    """amount: numbers with gaps (None and NaN); country: text, 'US' most frequent; flag: booleans;
    zip: numbers written as text; store: integers and whole floats naming one category, and text."""
    rng = np.random.default_rng(1)
    countries = ["US"] * 50 + ["GB"] * 30 + ["FR"] * 12 + ["DE"] * 4 + ["IT"] * 4
    rows = []
    for i in range(n):
        amount: object = float(rng.lognormal(2, 1))
        if i % 10 == 0:
            amount = None
        elif i % 10 == 5:
            amount = math.nan
        rows.append([amount, countries[i], bool(i % 3), str(10000 + i % 7), [7, 7.0, "7", "x"][i % 4]])
    return ("amount", "country", "flag", "zip", "store"), rows


def test_fit_infers_numbers_categories_and_gaps():
    names, rows = mixed_history()
    s = FeatureSchema.fit(names, rows)
    assert s.optional == (True, False, False, False, False)
    assert s.categories == (None, ("US", "GB", "FR"), ("true", "false"), None, ("7", "x"))  # DE, IT: 4 rows each, under min_count 5
    present = np.array([r[0] for r in rows if r[0] is not None and not math.isnan(r[0])])
    assert s.log1p[0] and s.mean[0] == pytest.approx(np.log1p(present).mean()) and s.std[0] == pytest.approx(np.log1p(present).std())
    zips = np.array([float(r[3]) for r in rows])
    assert s.log1p[3] and s.mean[3] == pytest.approx(np.log1p(zips).mean())
    assert (s.log1p[1], s.mean[1], s.std[1]) == (False, 0.0, 1.0)
    assert s.numeric_width == 3 and s.cardinalities == (5, 4, 4) and s.input_width == 6
    assert s.input_names == ("amount", "zip", "amount:missing", "country", "flag", "store")
    assert FeatureSchema.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_fit_takes_an_object_array_and_a_dataframe_alike():
    names, rows = mixed_history()
    s = FeatureSchema.fit(names, rows)
    assert FeatureSchema.fit(names, np.array(rows, dtype=object)) == s
    assert FeatureSchema.fit(names, pd.DataFrame(rows, columns=list(names))) == s


def test_a_numeric_history_with_gaps_makes_optional_numbers():
    x = numbers()
    x[::7, 1] = np.nan
    s = FeatureSchema.fit(NAMES, x)
    assert s.optional == (False, True, False) and s.categories == (None, None, None)
    present = x[~np.isnan(x[:, 1]), 1]
    assert s.mean[1] == pytest.approx(present.mean()) and s.std[1] == pytest.approx(present.std())
    assert s.mean[0] == pytest.approx(np.log1p(x[:, 0]).mean())


def test_a_column_with_no_value_is_an_optional_number_of_the_identity_normalisation():
    s = FeatureSchema.fit(("a", "b"), [[1.0, None], [2.0, math.nan]])
    assert (s.optional[1], s.log1p[1], s.mean[1], s.std[1], s.categories[1]) == (True, False, 0.0, 1.0, None)


def test_the_vocabulary_is_the_most_frequent_values_capped_ties_by_key():
    values = ["a"] * 9 + ["c"] * 6 + ["b"] * 6 + ["d"] * 5 + ["e"] * 4
    rows = [[v] for v in values]
    assert FeatureSchema.fit(("x",), rows).categories == (("a", "b", "c", "d"),)
    assert FeatureSchema.fit(("x",), rows, max_categories=2).categories == (("a", "b"),)
    assert FeatureSchema.fit(("x",), rows, min_count=6).categories == (("a", "b", "c"),)
    assert FeatureSchema.fit(("x",), rows, min_count=1).categories == (("a", "b", "c", "d", "e"),)
    assert FeatureSchema.fit(("x",), rows, min_count=10).categories == ((),)
    declared = [{"name": "x", "max_categories": 1, "min_count": 1}]
    assert FeatureSchema.fit(("x",), rows, declared, max_categories=3).categories == (("a",),)


@pytest.mark.parametrize("kwargs", [{"max_categories": 0}, {"min_count": 0}, {"max_categories": 2.0}, {"min_count": True}])
def test_fit_refuses_limits_under_one(kwargs):
    with pytest.raises(ValueError, match="at least 1"):
        FeatureSchema.fit(("x",), [["a"]], **kwargs)


@pytest.mark.parametrize(
    "names, data, message",
    [
        (("a", "b"), np.zeros((3, 3)), "3 columns but the schema names 2"),
        (("a", "b"), [[1.0, 2.0], [1.0]], "row 1 has 1 values"),
        (("a", "b"), ["ab"], "row 0 has no sequence"),
        (("a", "a"), [[1.0, 2.0]], "unique"),
        (("a", "a"), np.zeros((2, 2)), "unique"),
        (("a",), [[{"x": 1}]], "feature 'a' is a category .* row 0 holds"),
        (("a",), [["x"], [1.5]], "feature 'a' is a category .* row 1 holds 1.5"),
        (("a",), [[1.0], [math.inf]], "feature 'a' holds an infinite number"),
    ],
)
def test_fit_refuses_data_it_cannot_read(names, data, message):
    with pytest.raises(ValueError, match=message):
        FeatureSchema.fit(names, data)


# -- declarations --


def test_a_declaration_overrides_inference():
    names, rows = mixed_history()
    declared = [
        {"name": "zip", "type": "category", "min_count": 1},
        {"name": "country", "missing": True},
        {"name": "store", "type": "category", "max_categories": 1},
    ]
    s = FeatureSchema.fit(names, rows, declaration=declared)
    assert s.categories[3] == tuple(str(10000 + i) for i in range(7))
    assert s.optional == (True, True, False, False, False)
    assert s.categories[4] == ("7",)
    assert s.categories[0] is None and s.categories[2] == ("true", "false")  # not declared: inferred


def test_a_numeric_array_can_hold_categories_by_declaration():
    x = np.array([[1.0, 7.0], [2.0, 7.0], [3.0, np.nan], [4.0, 8.0]])
    s = FeatureSchema.fit(("a", "code"), x, [{"name": "code", "type": "category"}], min_count=1)
    assert s.categories == (None, ("7", "8")) and s.optional == (False, True)
    assert s.encode_rows(x).tolist() == [[1.0, 2.0], [2.0, 2.0], [3.0, float(MISSING)], [4.0, 3.0]]


def test_the_declaration_of_a_schema_fits_it_again():
    names, rows = mixed_history()
    s = FeatureSchema.fit(names, rows)
    declaration = s.declaration()
    assert parse_declaration(declaration) == declaration
    assert declaration_from_json(json.dumps(declaration)) == declaration
    assert FeatureSchema.fit(names, rows, declaration) == s


@pytest.mark.parametrize(
    "declared, message",
    [
        ([{"name": "amount", "type": "number"}], "declared a number but row 0 holds 'US'"),
        ([{"name": "amount", "missing": False}], "declared missing: false but 3 row"),
        ([{"name": "colour"}], "feature 'colour', which is not one of the features"),
        ({"name": "amount"}, "a list of objects"),
    ],
)
def test_a_declaration_that_does_not_fit_the_data_is_refused(declared, message):
    rows = [["US"], [None], ["GB"], [None], [None]]
    with pytest.raises(ValueError, match=message):
        FeatureSchema.fit(("amount",), rows, declared)


@pytest.mark.parametrize(
    "declaration, message",
    [
        ("amount", "a list of objects"),
        ([["amount"]], "entry 0 is not an object"),
        ([{"type": "number"}], "entry 0 has no name"),
        ([{"name": ""}], "entry 0 has no name"),
        ([{"name": "a"}, {"name": "a"}], "feature 'a' is declared twice"),
        ([{"name": "a", "kind": "number"}], "feature 'a': unknown key 'kind'"),
        ([{"name": "a", "type": "text"}], "feature 'a': unknown type 'text'; a type is number or category"),
        ([{"name": "a", "missing": "yes"}], "feature 'a': missing must be true or false"),
        ([{"name": "a", "max_categories": 0}], "feature 'a': max_categories must be an integer of at least 1"),
        ([{"name": "a", "max_categories": 2.5}], "feature 'a': max_categories must be an integer"),
        ([{"name": "a", "min_count": -1}], "feature 'a': min_count must be an integer of at least 1"),
        ([{"name": "a", "min_count": True}], "feature 'a': min_count must be an integer"),
        ([{"name": "a", "type": "number", "max_categories": 3}], "feature 'a': max_categories applies to a category"),
    ],
)
def test_a_malformed_declaration_is_named(declaration, message):
    with pytest.raises(ValueError, match=message):
        parse_declaration(declaration)


def test_a_declaration_is_read_from_json_and_files(tmp_path):
    text = '[{"name": "country", "type": "category", "missing": true, "max_categories": 20, "min_count": 2}, {"name": "amount"}]'
    expected = [{"name": "country", "type": "category", "missing": True, "max_categories": 20, "min_count": 2}, {"name": "amount"}]
    assert declaration_from_json(text) == declaration_from_json(text.encode()) == expected
    path = tmp_path / "features.json"
    path.write_text(text)
    assert declaration_from_file(path) == expected
    with pytest.raises(ValueError, match="not valid JSON"):
        declaration_from_json("[{")
    path.write_text('[{"name": "a", "type": "money"}]')
    with pytest.raises(ValueError, match=f"{path}: feature 'a': unknown type 'money'"):
        declaration_from_file(path)
    assert parse_declaration([{"name": "a", "type": None}]) == [{"name": "a"}]  # null: inferred


def test_describe_has_a_line_per_feature():
    names, rows = mixed_history()
    text = FeatureSchema.fit(names, rows).describe()
    lines = text.splitlines()
    assert len(lines) == 5
    assert lines[0].split()[:3] == ["amount", "number", "optional"] and "log1p" in lines[0]
    assert lines[1].split()[:3] == ["country", "category", "required"] and "3 value(s): US, GB, FR" in lines[1]
    many = FeatureSchema(("c",), (False,), (0.0,), (1.0,), (), (tuple(f"v{i}" for i in range(12)),))
    assert "... (2 more)" in many.describe()


# -- storage --


def declared_schema() -> FeatureSchema:
    return FeatureSchema(
        ("amount", "tip", "country", "channel"),
        (True, False, False, False),
        (2.0, 1.0, 0.0, 0.0),
        (0.5, 2.0, 1.0, 1.0),
        (False, True, False, True),
        (None, None, ("US", "GB"), ("web",)),
    )


def test_a_declared_schema_round_trips():
    s = declared_schema()
    d = json.loads(json.dumps(s.to_dict()))
    assert d["optional"] == [False, True, False, True] and d["categories"] == [None, None, ["US", "GB"], ["web"]]
    assert FeatureSchema.from_dict(d) == s
    only_optional = FeatureSchema(("a", "b"), (False, False), (0.0, 0.0), (1.0, 1.0), (False, True))
    assert "categories" not in only_optional.to_dict() and FeatureSchema.from_dict(only_optional.to_dict()) == only_optional


@pytest.mark.parametrize(
    "change, message",
    [
        ({"optional": [True]}, "optional must be a list of booleans, one per feature"),
        ({"optional": [0, 1, 0, 1]}, "optional must be a list of booleans"),
        ({"optional": "yes"}, "optional must be a list"),
        ({"categories": [None]}, "categories must be a list, one entry per feature"),
        ({"categories": {"country": ["US"]}}, "categories must be a list"),
        ({"categories": [None, None, ["US", "US"], None]}, "feature 'country': a vocabulary must be a list of distinct strings"),
        ({"categories": [None, None, ["US", 7], None]}, "feature 'country': a vocabulary"),
        ({"categories": [None, None, "US", None]}, "feature 'country': a vocabulary"),
    ],
)
def test_a_malformed_stored_declaration_is_named(change, message):
    with pytest.raises(ValueError, match=message):
        FeatureSchema.from_dict({**declared_schema().to_dict(), **change})


# -- the raw vector and the network input --


def test_features_carry_the_declarations():
    f = declared_schema().features
    assert f == ("amount", "tip", "country", "channel") and f.optional == {"tip", "channel"}
    assert f.categories == {"country": {"US": FIRST_CODE, "GB": FIRST_CODE + 1}, "channel": {"web": FIRST_CODE}}


def test_transform_lays_out_numbers_indicators_then_codes_and_imputes_the_mean():
    s = declared_schema()
    assert (s.numeric_width, s.cardinalities, s.input_width) == (3, (4, 3), 5)
    assert s.input_names == ("amount", "tip", "tip:missing", "country", "channel")
    raw = np.array([
        feature_vector({"amount": math.e**2 - 1, "tip": 3.0, "country": "GB", "channel": "web"}, s.features),
        feature_vector({"amount": 0.0, "country": "FR"}, s.features),
    ])
    z = s.transform(raw)
    assert z.dtype == np.float32 and z.shape == (2, 5)
    assert z[0].tolist() == pytest.approx([0.0, 1.0, 0.0, 3.0, 2.0])
    assert z[1].tolist() == pytest.approx([-4.0, 0.0, 1.0, float(OTHER), float(MISSING)])


def test_the_numbers_of_a_declared_schema_are_normalised_as_in_a_numeric_one():
    s = declared_schema()
    numeric = FeatureSchema(("amount", "tip"), (True, False), (2.0, 1.0), (0.5, 2.0))
    x = np.column_stack([numbers(3)[:, :2], np.full(200, 2.0), np.full(200, 1.0)])
    assert s.transform(x)[:, :2].tobytes() == numeric.transform(x[:, :2]).tobytes()
    assert not s.transform(x)[:, 2].any()


def test_transform_takes_a_code_it_does_not_know_as_other_and_nan_as_missing():
    s = declared_schema()
    raw = np.array([[1.0, 1.0, 9.0, np.nan], [1.0, 1.0, -1.0, 2.5], [1.0, 1.0, np.inf, 2.0], [np.inf, -np.inf, 3.0, 1.0]])
    z = s.transform(raw)
    assert z[:, 3:].tolist() == [[OTHER, MISSING], [OTHER, OTHER], [OTHER, 2.0], [3.0, MISSING]]
    assert z[3, :2].tolist() == [CLIP, -CLIP]
    with pytest.raises(ValueError, match="the schema names 4 features"):
        s.transform(raw[:, :3])


def test_unseen_counts_codes_of_other_in_a_batch_or_a_row():
    s = declared_schema()
    raw = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 3.0, 1.0]])
    assert s.unseen(raw) == 3 and s.unseen(raw[0]) == 2 and s.unseen(raw[2]) == 0
    assert s.unseen(raw[0]) == s.features.unseen(tuple(raw[0]))
    assert FeatureSchema.fit(NAMES, numbers()).unseen(np.zeros((4, 3))) == 0


def test_encode_rows_gives_the_raw_vectors_of_feature_vector():
    s = declared_schema()
    rows = [[1.5, None, "US", "web"], [2, math.nan, "FR", None], [np.float32(3.0), np.int64(4), "GB", pd.NA], [0.0, "2.5", np.str_("US"), "web"]]
    raw = s.encode_rows(rows)
    assert raw.dtype == np.float64 and raw.shape == (4, 4)
    expected = [[1.5, math.nan, 2.0, 2.0], [2.0, math.nan, 0.0, 1.0], [3.0, 4.0, 3.0, 1.0], [0.0, 2.5, 2.0, 2.0]]
    assert np.array_equal(raw, np.array(expected), equal_nan=True)
    event = feature_vector({"amount": 2, "country": "FR"}, s.features)
    assert np.array_equal(raw[1], np.array(event), equal_nan=True)
    assert np.array_equal(s.encode_rows(pd.DataFrame(rows, dtype=object)), raw, equal_nan=True)
    assert s.encode_rows([]).shape == (0, 4)


def test_encode_rows_of_a_numeric_array():
    x = numbers()
    s = FeatureSchema.fit(NAMES, x)
    assert s.encode_rows(x).tobytes() == x.tobytes()
    assert s.encode_rows(x.tolist()).tobytes() == x.tobytes()


@pytest.mark.parametrize(
    "row, reason, message",
    [
        ([None, 1.0, "US", "web"], "missing_feature", "row 1: feature 'amount' is missing and not declared optional"),
        ([1.0, 1.0, None, "web"], "missing_feature", "row 1: feature 'country' is missing"),
        ([1.0, 1.0, math.nan, "web"], "missing_feature", "row 1: feature 'country' is missing"),
        (["12x", 1.0, "US", "web"], "bad_value", "row 1: feature 'amount' must be a number, got '12x'"),
        ([True, 1.0, "US", "web"], "bad_value", "row 1: feature 'amount' must be a number, got True"),
        ([math.inf, 1.0, "US", "web"], "bad_value", "row 1: feature 'amount' must be finite"),
        ([10**400, 1.0, "US", "web"], "bad_value", "row 1: feature 'amount' must be finite"),
        ([1.0, 1.0, 1.5, "web"], "bad_value", "row 1: feature 'country' is a category: a string, an integer or a boolean, got the number 1.5"),
        ([1.0, 1.0, ["US"], "web"], "bad_value", "row 1: feature 'country' is a category"),
    ],
)
def test_encode_rows_names_the_row_and_the_feature(row, reason, message):
    with pytest.raises(EventError) as exc:
        declared_schema().encode_rows([[1.0, 1.0, "US", "web"], row])
    assert exc.value.reason == reason and exc.value.message.startswith(message)


def test_encode_rows_refuses_rows_of_another_width():
    with pytest.raises(ValueError, match="row 0 has 2 values"):
        declared_schema().encode_rows([[1.0, 2.0]])
    with pytest.raises(ValueError, match="2 columns"):
        declared_schema().encode_rows(np.zeros((1, 2)))


def rarely(valid, hostile):
    return st.integers(0, 9).flatmap(lambda i: hostile if i == 0 else valid)


NUMBER_CELL = rarely(st.floats(-1e6, 1e6) | st.integers(-(10**6), 10**6), st.sampled_from([None, math.nan, True, "US", math.inf]))
CATEGORY_CELL = rarely(st.integers(-3, 10) | st.sampled_from(["US", "GB", "FR", "", "7", True, False, 7.0]), st.sampled_from([None, 7.5, math.nan]))
ROW = st.tuples(NUMBER_CELL, NUMBER_CELL, CATEGORY_CELL, CATEGORY_CELL)


@settings(max_examples=300, deadline=None)
@given(st.lists(ROW, min_size=1, max_size=5))
def test_encode_rows_agrees_with_feature_vector_row_by_row(rows):
    """A missing cell (None, NaN) is an absent feature of an event (null too where optional, tested
    in test_events; a required null is bad_value there, as before, and missing_feature in a table)."""
    s = declared_schema()
    events = []
    for row in rows:
        doc = {n: v for n, v in zip(s.names, row) if not (v is None or (isinstance(v, float) and math.isnan(v)))}
        try:
            events.append(exact_feature_vector(doc, s.features))
        except EventError as exc:
            events.append(exc.reason)
    try:
        raw = s.encode_rows([list(row) for row in rows])
    except EventError as exc:  # the row it names is refused as an event too (maybe for another of its values first)
        assert isinstance(events[int(exc.message.split(":")[0].removeprefix("row "))], str)
        return
    assert all(isinstance(e, tuple) for e in events)
    assert np.array_equal(raw, np.array(events), equal_nan=True)


def test_numbers_too_large_to_standardise_are_refused_naming_the_feature():
    """A column of values near the float limit, with signs (no log1p), has no finite mean or spread:
    refused at fit, so pretrain never publishes a version a server would refuse."""
    x = np.random.default_rng(0).uniform(-1, 1, (100, 2)) * np.array([1e308, 1.0])
    for data in (x, [[float(a), "US" if b > 0 else None] for a, b in x.tolist()]):
        with pytest.raises(ValueError, match="feature 'big' holds numbers too large to standardise"):
            FeatureSchema.fit(("big", "c"), data, min_count=1)
    assert FeatureSchema.fit(("big", "ok"), np.abs(x)).log1p == (True, True)  # positive: log1p keeps them finite
