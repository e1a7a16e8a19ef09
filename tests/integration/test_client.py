"""perennial.client against a running server over real HTTP: predictions one and many, the model,
refusals as PerennialError with the server's reason code, and admin commands through Kafka."""

from __future__ import annotations

import numpy as np
import pytest

from perennial.client import Client, PerennialError, Prediction
from streams.simulator import FEATURES

from .conftest import ADMIN_TOKEN, SIM

pytestmark = pytest.mark.integration


def test_the_client_predicts_describes_and_commands(stack):
    stack.start("serve")
    stack.wait_ready()
    rows = SIM.generate(46, 1).features[:50]
    with Client(stack.url) as c:
        assert c.ready()
        one = c.predict(dict(zip(FEATURES, rows[0])), id="tx-1", time=1767225600.0)  # numpy float32 values are fine
        assert isinstance(one, Prediction) and one.id == "tx-1" and one.version == "v000001" and 0 <= one.score <= 1
        many = c.predict_many([{"id": f"tx-{i}", "features": dict(zip(FEATURES, r.tolist()))} for i, r in enumerate(rows)])
        assert [p.id for p in many] == [f"tx-{i}" for i in range(50)] and many[0].score == pytest.approx(one.score, abs=1e-6)
        plain = c.predict_many([dict(zip(FEATURES, r.tolist())) for r in rows[:3]])
        assert np.allclose([p.score for p in plain], [p.score for p in many[:3]], atol=1e-6)
        assert c.model()["version"] == "v000001"
        with pytest.raises(PerennialError) as err:
            c.predict({"amount": 1.0})
        assert err.value.status == 422 and err.value.reason == "missing_feature" and "is missing" in err.value.message
        with pytest.raises(PerennialError) as err:
            c.pause("no token")
        assert err.value.status == 401
    with Client(stack.url, token=ADMIN_TOKEN) as admin:
        assert admin.pause("maintenance")["command"]["action"] == "pause"  # confirmed by Kafka
        assert admin.resume()["command"]["action"] == "resume"
        with pytest.raises(PerennialError) as err:
            admin.rollback()  # the pretrained version has no parent
        assert err.value.status == 409 and "no parent" in err.value.message
