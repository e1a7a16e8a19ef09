"""Shared unit-test fixtures."""

from pathlib import Path

import numpy as np
import pytest
import torch

from learners.model import TabularNet, state_numpy
from learners.registry import Registry
from learners.schema import FeatureSchema

TWO_FEATURES = ("amount", "hour")


@pytest.fixture
def two_feature_registry(tmp_path) -> Path:
    """A registry serving a small untrained network over ``TWO_FEATURES`` (v000001): what the HTTP
    contract tests score with."""
    torch.manual_seed(0)
    schema = FeatureSchema.fit(TWO_FEATURES, np.random.default_rng(0).uniform(0, 10, (50, 2)))
    Registry(tmp_path / "reg").publish(state_numpy(TabularNet(2, hidden=8).state_dict()), schema, parent=None, gate_report={"passed": True})
    return tmp_path / "reg"


DECLARED = FeatureSchema(
    ("amount", "device_age", "country", "channel"), (True, False, False, False), (1.0, 2.0, 0.0, 0.0), (1.5, 3.0, 1.0, 1.0),
    optional=(False, True, True, False), categories=(None, None, ("US", "GB"), ("web", "app")),
)
"""A schema with each kind of feature: a required number, an optional number, an optional category
and a required one (issue 16)."""


@pytest.fixture
def declared_registry(tmp_path) -> Path:
    """A registry serving a small untrained network over ``DECLARED`` (v000001, with embeddings)."""
    torch.manual_seed(0)
    Registry(tmp_path / "declared").publish(state_numpy(TabularNet.for_schema(DECLARED, hidden=8).state_dict()), DECLARED,
                                            parent=None, gate_report={"passed": True})
    return tmp_path / "declared"


@pytest.fixture
def declared(declared_registry):
    """A test client of a server of ``declared_registry`` (no broker; at most 8 events a request)."""
    from fastapi.testclient import TestClient

    from perennial.settings import Settings
    from service.app import create_app

    settings = Settings(registry={"path": declared_registry}, kafka={"bootstrap_servers": "127.0.0.1:1"}, serve={"max_batch": 8})
    with TestClient(create_app(settings)) as c:
        yield c


def served_scores(registry_path: Path, raw_rows) -> list[float]:
    """What the served version gives raw vectors (NaN: an optional number missing; category codes)."""
    return Registry(registry_path).load_current().score(np.array(raw_rows, np.float64)).tolist()
