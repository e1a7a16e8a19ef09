"""Properties of POST /v1/predict over generated documents (hypothesis), in process: any JSON document
gets 200 with finite scores in [0, 1] or a 4xx naming the problem, never a 5xx; exactly the valid
events are scored; and an event scores the same alone, as a one-event list, or among others."""

import json
import math

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learners.model import TabularNet, state_numpy
from learners.registry import Registry
from learners.schema import FeatureSchema
from perennial.settings import Settings
from service.app import create_app

NAMES = ("amount", "hour", "velocity")
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    path = tmp_path_factory.mktemp("predict") / "reg"
    torch.manual_seed(0)
    schema = FeatureSchema.fit(NAMES, np.random.default_rng(0).uniform(0, 10, (50, len(NAMES))))
    Registry(path).publish(state_numpy(TabularNet(len(NAMES), hidden=8).state_dict()), schema, parent=None)
    with TestClient(create_app(Settings(registry={"path": path}, kafka={"bootstrap_servers": "127.0.0.1:1"}))) as c:
        yield c


integers = st.integers(-(10**300), 10**300)  # JSON allows larger, a double does not: 422 "not valid JSON"
scalars = st.one_of(st.none(), st.booleans(), integers, st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
numbers = st.one_of(integers, st.floats(allow_nan=False, allow_infinity=False))
# near-valid features: the model's names, misspellings and strangers, with numbers or anything else
features = st.dictionaries(st.sampled_from(NAMES + ("zzz", "Amount", "")), numbers | scalars, max_size=len(NAMES) + 1) | json_values
events = st.fixed_dictionaries({"features": features}, optional={"id": json_values})
valid_events = st.fixed_dictionaries(
    {"features": st.fixed_dictionaries({n: numbers for n in NAMES})}, optional={"id": st.text(max_size=8) | st.integers(-100, 100)},
)
documents = st.one_of(json_values, events, st.lists(events | valid_events, min_size=1, max_size=5), valid_events)


def is_valid(event: object) -> bool:
    """The rule of the README: exactly the model's feature names, each a finite number."""
    if not isinstance(event, dict) or not isinstance(event.get("features"), dict):
        return False
    values = event["features"]
    return set(values) == set(NAMES) and all(type(v) in (int, float) and math.isfinite(float(v)) for v in values.values())


def predict(client, doc):
    return client.post("/v1/predict", content=json.dumps(doc, allow_nan=False))


def scores_of(doc, answer) -> list[float]:
    return [p["score"] for p in answer["predictions"]] if isinstance(doc, list) else [answer["score"]]


@PROPERTY
@given(doc=documents)
def test_any_document_is_scored_or_refused_with_a_4xx_naming_the_problem(client, doc):
    r = predict(client, doc)
    answer = r.json()
    if r.status_code == 200:
        scores = scores_of(doc, answer)
        assert len(scores) == (len(doc) if isinstance(doc, list) else 1)
        assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)
    else:
        assert 400 <= r.status_code < 500, (r.status_code, answer)
        assert isinstance(answer["error"], str) and len(answer["error"]) > 10
    events = doc if isinstance(doc, list) and doc else [doc]
    assert (r.status_code == 200) == (isinstance(doc, (dict, list)) and all(map(is_valid, events)))


@PROPERTY
@given(batch=st.lists(valid_events, min_size=1, max_size=6))
def test_an_event_scores_the_same_alone_as_a_list_and_among_others(client, batch):
    alone = [predict(client, event).json() for event in batch]
    as_list = [predict(client, [event]).json()["predictions"][0] for event in batch]
    together = predict(client, batch).json()["predictions"]
    assert [a.get("id") for a in alone] == [p["id"] for p in as_list] == [p["id"] for p in together]
    for a, one, many in zip(alone, as_list, together):
        assert a["score"] == pytest.approx(one["score"], abs=1e-6) == pytest.approx(many["score"], abs=1e-6)
