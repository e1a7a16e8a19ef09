"""Micro-batching: concurrent requests share forward passes and each gets exactly its own scores."""

import asyncio

import numpy as np
import orjson
import pytest

from service.batching import MicroBatcher


class Affine:
    def __init__(self, a):
        self.a, self.calls = a, []

    def score(self, rows):
        self.calls.append(len(rows))
        return rows[:, 0] * self.a


class Dot:
    def __init__(self, w):
        self.w = np.array(w)

    def score(self, rows):
        return rows @ self.w


class Broken:
    def score(self, rows):
        raise RuntimeError("broken model")


def run(coros):
    async def main():  # bounded: a request left unanswered fails the test instead of hanging it
        return await asyncio.wait_for(asyncio.gather(*coros, return_exceptions=True), 10)

    return asyncio.run(main())


def test_requests_of_one_turn_share_a_pass_per_model_and_get_their_own_rows():
    batcher, old, new = MicroBatcher(), Affine(1.0), Affine(10.0)
    rows = [np.full((n, 1), float(i)) for i, n in enumerate((1, 3, 2, 1))]
    models = [old, new, old, new]  # a swap happened between requests
    out = run([batcher.score(m, r) for m, r in zip(models, rows)])
    assert [o.tolist() for o in out] == [[0.0], [10.0] * 3, [2.0] * 2, [30.0]]
    assert old.calls == [3] and new.calls == [4] and batcher.passes == 2


def test_a_failing_pass_fails_its_requests_only():
    batcher, good = MicroBatcher(), Affine(2.0)
    out = run([batcher.score(Broken(), np.ones((1, 1))), batcher.score(good, np.ones((2, 1)))])
    assert isinstance(out[0], RuntimeError) and out[1].tolist() == [2.0, 2.0]


class RefusesNegatives(Affine):
    """Fails a whole pass when any row is negative, as a model may fail on some values."""

    def score(self, rows):
        if (rows < 0).any():
            raise ValueError("negative value")
        return super().score(rows)


def test_a_row_of_the_wrong_width_fails_its_request_only():
    """Issue 12: concatenating a ragged row raised outside the pass's try, so no request of the pass
    was ever answered."""
    batcher, model = MicroBatcher(), Dot([1.0, 10.0])
    widths = [2, 2, 0, 2, 3, 2]
    out = run([batcher.score(model, np.full((1, w), float(i))) for i, w in enumerate(widths)])
    assert [out[i].tolist() for i in (0, 1, 3, 5)] == [[0.0], [11.0], [33.0], [55.0]]
    assert isinstance(out[2], ValueError) and isinstance(out[4], ValueError)


def test_a_model_failing_on_some_rows_fails_only_the_requests_holding_them():
    batcher, model = MicroBatcher(), RefusesNegatives(3.0)
    values = [1.0, -1.0, 2.0, -5.0, 4.0]
    out = run([batcher.score(model, np.array([[v]])) for v in values])
    assert [o.tolist() for o in out[::2]] == [[3.0], [6.0], [12.0]]
    assert all(isinstance(out[i], ValueError) and "negative" in str(out[i]) for i in (1, 3))


class WrongLength(Affine):
    def score(self, rows):
        return np.zeros(len(rows) + 1)


def test_scores_of_the_wrong_shape_are_an_error_not_a_misaligned_answer():
    out = run([MicroBatcher().score(WrongLength(1.0), np.ones((2, 1)))])
    assert isinstance(out[0], ValueError) and "shape (3,) for 2 rows" in str(out[0])


def test_every_request_is_answered_whatever_fails_in_the_flush():
    batcher = MicroBatcher()
    batcher._pass = lambda model, items: 1 / 0  # any failure outside the passes themselves
    out = run([batcher.score(Affine(1.0), np.ones((1, 1))) for _ in range(3)])
    assert all(isinstance(o, RuntimeError) and "before this request was scored" in str(o) for o in out)


def test_a_cancelled_request_is_left_out_of_the_pass():
    batcher, model = MicroBatcher(), Affine(1.0)

    async def main():
        gone = asyncio.ensure_future(batcher.score(model, np.ones((5, 1))))
        kept = asyncio.ensure_future(batcher.score(model, np.ones((2, 1))))
        await asyncio.sleep(0)  # both are waiting for the pass
        gone.cancel()
        return await kept

    assert asyncio.run(main()).tolist() == [1.0, 1.0] and model.calls == [2]


def test_later_turns_get_their_own_pass():
    batcher, model = MicroBatcher(), Affine(1.0)

    async def main():
        first = await batcher.score(model, np.ones((1, 1)))
        second = await batcher.score(model, np.ones((1, 1)))
        return first, second

    asyncio.run(main())
    assert model.calls == [1, 1]


def test_concurrent_http_requests_share_passes_and_score_as_alone(tmp_path):
    import torch
    from fastapi.testclient import TestClient

    from learners.model import TabularNet, state_numpy
    from learners.registry import Registry
    from learners.schema import FeatureSchema
    from perennial.settings import Settings
    from service.app import create_app

    names = ("amount", "hour")
    torch.manual_seed(0)
    schema = FeatureSchema.fit(names, np.random.default_rng(0).uniform(0, 10, (50, 2)))
    Registry(tmp_path / "reg").publish(state_numpy(TabularNet(2, hidden=8).state_dict()), schema, parent=None)
    settings = Settings(registry={"path": tmp_path / "reg"}, kafka={"bootstrap_servers": "127.0.0.1:1"})
    bodies = [orjson.dumps({"id": str(i), "features": {"amount": i * 0.7, "hour": i % 24}}) for i in range(16)]
    with TestClient(create_app(settings)) as client:
        alone = [client.post("/v1/predict", content=b).json() for b in bodies]
        passes_before = _metric(client, "perennial_server_forward_pass_rows_count")

        async def call(body):
            sent, messages = [], [{"type": "http.request", "body": body}]

            async def receive():
                return messages.pop(0)

            async def send(message):
                sent.append(message)

            await client.app({"type": "http", "method": "POST", "path": "/v1/predict", "headers": []}, receive, send)
            return sent[0]["status"], orjson.loads(sent[1]["body"])

        together = run([call(b) for b in bodies])
        passes = _metric(client, "perennial_server_forward_pass_rows_count") - passes_before
    assert [status for status, _ in together] == [200] * 16
    assert [(d["id"], d["version"]) for _, d in together] == [(d["id"], d["version"]) for d in alone]
    assert [d["score"] for _, d in together] == pytest.approx([d["score"] for d in alone], abs=1e-6)  # its own row's score
    assert passes == 1  # parsed in one turn of the loop: one forward pass for all sixteen


def _metric(client, name):
    line = next(x for x in client.get("/metrics").text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])
