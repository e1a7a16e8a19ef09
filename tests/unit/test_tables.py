"""History files of your own: numbers, categories, empty cells and ids, read without preprocessing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from learners.schema import FeatureSchema
from perennial.evaluation import harness
from perennial.evaluation.data import table_scenario
from perennial.evaluation.strategies import Product
from perennial.settings import Settings
from streams.events import feature_vector
from streams.tables import read_labeled_table


def own_history(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Fraud far likelier in one country and when the device age is missing; a session id in text."""
    rng = np.random.default_rng(seed)
    country = rng.choice(["US", "GB", "FR", "NG"], n, p=[0.5, 0.2, 0.2, 0.1])
    y = (rng.random(n) < np.where(country == "NG", 0.35, 0.03)).astype(int)
    age = np.where(rng.random(n) < np.where(y == 1, 0.5, 0.15), np.nan, rng.exponential(100, n))
    return pd.DataFrame({"time": np.arange(n) * 60.0, "label": y, "amount": rng.lognormal(3 + y, 1.0), "country": country,
                         "device_age": age, "online": rng.random(n) < 0.5, "session": [f"s-{i:06x}" for i in range(n)],
                         "merchant_id": rng.integers(0, 40, n)})


@pytest.fixture
def history_csv(tmp_path):
    path = tmp_path / "history.csv"
    own_history().to_csv(path, index=False)
    return path


def test_categories_and_empty_cells_are_kept_and_free_form_text_is_left_out(history_csv):
    table = read_labeled_table(history_csv)
    assert table.features == ("amount", "country", "device_age", "online")  # merchant_id: an id by its name
    assert table.x.dtype == object and table.x.shape == (3000, 4)
    assert set(table.x[:, 1]) == {"US", "GB", "FR", "NG"} and set(table.x[:, 3]) == {True, False}
    gaps = [v is None for v in table.x[:, 2]]
    assert 0 < sum(gaps) < 3000 and all(isinstance(v, float) for v, g in zip(table.x[:, 2], gaps) if not g)
    assert table.excluded == {"session": "free-form text: 3000 distinct values in 3000 rows (an id, not a category)"}


def test_free_form_text_named_as_a_feature_is_refused(history_csv):
    with pytest.raises(ValueError, match=r"feature column 'session' of .*history.csv holds free-form text: 3000 distinct values"
                                         r" in 3000 rows .*leave it out of --features"):
        read_labeled_table(history_csv, features=["amount", "session"])
    assert read_labeled_table(history_csv, features=["country"]).features == ("country",)


def test_numbers_are_read_as_before_and_an_empty_cell_is_nan(tmp_path):
    df = own_history()[["time", "label", "amount", "device_age"]]
    path = tmp_path / "numbers.csv"
    df.to_csv(path, index=False)
    table = read_labeled_table(path)
    assert table.x.dtype == np.float32 and table.excluded == {}
    np.testing.assert_array_equal(table.x, df[["amount", "device_age"]].to_numpy(np.float32))  # NaN where empty
    df.assign(amount=df["amount"].where(df.index != 7, np.inf)).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"feature column\(s\) amount hold infinite values"):
        read_labeled_table(path)


def test_evaluate_takes_a_table_of_categories_and_gaps(history_csv, tmp_path):
    own_history(20000).to_csv(history_csv, index=False)  # enough for 8 epochs to learn the countries
    scn = table_scenario(history_csv, periods=4)
    schema = scn.schema
    assert scn.names == ("amount", "country", "device_age", "online")
    assert schema.optional == (False, False, True, False) and set(schema.categories[1]) == {"US", "GB", "FR", "NG"}
    # the stream holds raw vectors as the learner receives them: codes, NaN for a missing device age
    assert scn.x.dtype == np.float32 and np.isnan(scn.x[:, 2]).any() and not np.isnan(scn.x[:, [0, 1, 3]]).any()
    settings = Settings().model_copy(update={"pretrain": Settings().pretrain.model_copy(update={"hidden": 16})})
    served = harness.pretrained(scn, settings, tmp_path / "registry", 0).load_current()
    assert served.schema == schema  # pretrained on the scenario's encoding, not refitted on its codes
    ng = scn.x[:, 1] == 2 + schema.categories[1].index("NG")
    assert served.score_raw(scn.x[ng]).mean() > 2 * served.score_raw(scn.x[~ng]).mean()
    assert served.manifest["metrics"]["validation_ap"] > 2 * served.manifest["metrics"]["fraud_rate"]

    # the product strategy sends the stream to the learner as a producer would (categories by key, gaps
    # as null): its learner holds the very raw vectors of the scenario, none of them read as other
    product = Product(tmp_path / "registry", settings, scn.names)
    n = 300
    product.learn(scn.x[:n], scn.y[:n], scn.label_time[:n], float(scn.time[n]))
    held = np.concatenate([product.learner.pending.arrays()[0], product.learner.pending_holdout.arrays()[0]])
    assert len(held) == n
    by_row = lambda a: a[np.lexsort(np.nan_to_num(a, nan=-1.0).T)]
    np.testing.assert_array_equal(by_row(held.astype(np.float32)), by_row(scn.x[:n]))


def test_evaluate_reads_a_table_of_numbers_as_before(tmp_path):
    path = tmp_path / "numbers.csv"
    own_history().drop(columns=["country", "session", "online", "device_age"]).to_csv(path, index=False)
    scn = table_scenario(path, periods=4)
    raw = read_labeled_table(path).x
    assert scn.x.dtype == np.float32 and scn.schema is not None and not any(scn.schema.optional)
    np.testing.assert_array_equal(scn.history_x, raw[: len(scn.history_x)])


@pytest.mark.parametrize(("cell", "message"), [
    (None, "time column 'time' is empty in 1 row(s) (row 5 of the data first)"),
    ("yesterday", "time column 'time': row 5 of the data holds 'yesterday', neither epoch seconds nor a date"),
])
def test_a_time_column_with_a_blank_or_a_word_is_refused_naming_the_row(tmp_path, cell, message):
    """A blank once made pandas read the whole column as dates in nanoseconds (times near 1.7 s); a
    word was reported as a valid cell."""
    df = own_history()[["time", "label", "amount"]]
    df["time"] = df["time"].astype(object).where(df.index != 5, cell)
    df.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError) as refused:
        read_labeled_table(tmp_path / "t.csv")
    assert message in str(refused.value)


def test_a_csv_category_keeps_its_cells_as_written_and_only_an_empty_cell_is_missing(tmp_path):
    """pandas reads NA, None, null, N/A as missing and TRUE/False as booleans: a country code NA was
    learned as a gap while a request sending "NA" was scored as other. A category's keys are now its
    cells as written (what a client sends); a column of numbers with such markers keeps them as gaps."""
    n = 200
    rows = "".join(f"{i},{i % 2},{['US', 'NA', 'None', ''][i % 4]},{['TRUE', 'False', 'x'][i % 3]},{['N/A', i][i % 2]}\n" for i in range(n))
    (tmp_path / "t.csv").write_text("time,label,country,flag,amount\n" + rows)
    table = read_labeled_table(tmp_path / "t.csv")
    assert table.x[:4].tolist() == [["US", "TRUE", None], ["NA", "False", 1.0], ["None", "x", None], [None, "TRUE", 3.0]]
    schema = FeatureSchema.fit(table.features, table.x)
    assert schema.categories[:2] == (("NA", "None", "US"), ("false", "true", "x")) and schema.optional == (True, False, True)
    assert schema.log1p[2] and schema.categories[2] is None  # amount: a number with gaps
    features = schema.features
    raw = [feature_vector({"country": c, "flag": True, "amount": 1.0}, features) for c in ("NA", "None", "ZZ")]
    assert [features.unseen(r) for r in raw] == [0, 0, 1]  # served as learned
    # any spelling of a boolean is one key: JSON's true and the file's TRUE are the same value
    assert {feature_vector({"country": "US", "flag": f, "amount": 1.0}, features)[1] for f in (True, "true", "True", "TRUE")} == {
        feature_vector({"country": "US", "flag": "TRUE", "amount": 1.0}, features)[1]}
