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
