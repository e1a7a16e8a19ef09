"""Fuzz the HTTP API of a real server from its own OpenAPI document with schemathesis: no input,
with or without the admin token, may produce a 5xx; and since the document names the served model's
features, generated predictions reach scoring."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from .conftest import ADMIN_TOKEN

pytestmark = pytest.mark.integration


def test_no_request_gets_a_server_error(stack):
    stack.start("serve")
    stack.start("learn")  # admin commands reach a real learner through the control topic
    stack.wait_ready()
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/predict", "POST /v1/model/rollback", "POST /v1/learner/pause", "GET /v1/model"}
    failures: list[str] = []
    calls = {"n": 0, "scored": 0}

    def fuzz(op, headers: dict) -> None:
        @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case):
            response = case.call(base_url=stack.url, headers=headers, timeout=10)
            calls["n"] += 1
            calls["scored"] += op.label == "POST /v1/predict" and response.status_code == 200
            if response.status_code >= 500:
                failures.append(f"{op.label} -> {response.status_code}: {case.body!r:.200}")

        run()

    for op in operations:
        for headers in ({}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
            fuzz(op, headers)
    assert calls["n"] > 400
    assert calls["scored"] > 0, "no generated prediction reached scoring"
    assert not failures, failures[:5]
