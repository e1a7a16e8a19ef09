"""No request can stop another: `perennial serve` as a real process on a real port, with Kafka at an
address where nothing listens (the server must serve without it). Issue 12, defects 2, 4, 5 and 6."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import torch

from learners.model import TabularNet, state_numpy
from learners.registry import Registry
from learners.schema import FeatureSchema
from streams.broker import free_port

from .conftest import wait_for

pytestmark = pytest.mark.integration
NAMES = ("amount", "hour", "velocity")
TOKEN = "robustness-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


class Server:
    """``perennial serve`` with the given ``serve`` settings; Kafka's address refuses connections."""

    def __init__(self, root: Path, registry: Path, **serve: object):
        self.port = free_port()
        env = {
            **os.environ,
            "PERENNIAL_REGISTRY__PATH": str(registry),
            "PERENNIAL_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "PERENNIAL_SERVE__PORT": str(self.port),
            "PERENNIAL_SERVE__ADMIN_TOKEN": TOKEN,
            **{f"PERENNIAL_SERVE__{k.upper()}": str(v) for k, v in serve.items()},
        }
        self.log = root / f"serve-{self.port}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "perennial.cli", "serve"], env=env, stdout=log, stderr=log)
        wait_for(self.ready, 60, "server ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def metric(self, line_start: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(line_start))

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


@pytest.fixture
def registry(tmp_path) -> Path:
    torch.manual_seed(0)
    schema = FeatureSchema.fit(NAMES, np.random.default_rng(0).uniform(0, 10, (200, len(NAMES))))
    Registry(tmp_path / "registry").publish(state_numpy(TabularNet(len(NAMES), hidden=16).state_dict()), schema, parent=None)
    return tmp_path / "registry"


@pytest.fixture
def serve(tmp_path, registry):
    servers: list[Server] = []

    def start(**settings: object) -> Server:
        servers.append(Server(tmp_path, registry, **settings))
        return servers[-1]

    yield start
    for server in servers:
        server.proc.kill()
        server.proc.wait()


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    head = {"host": "test", "content-type": "application/json", **({"content-length": str(len(body))} if body else {}), **(headers or {})}
    return f"{method} {path} HTTP/1.1\r\n".encode() + b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items()) + b"\r\n" + body


def read_response(sock: socket.socket, deadline: float) -> tuple[int, bytes]:
    """Status and body of one response (with a content-length); (0, b"") when none came before the
    deadline or the server closed the connection first."""
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data) < _response_size(data):
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                return 0, b""
            data += chunk
    except OSError:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _response_size(data: bytes) -> int:
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        return len(data) + 1
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    return len(head) + len(sep) + length


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Whether the server closes ``sock`` (which expects no answer) within ``within_s``."""
    sock.settimeout(within_s)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# --- defect 2: a poison body in a shared forward pass ---------------------------------------------


def test_poison_bodies_fail_alone_and_every_valid_request_is_scored(serve, registry):
    """Issue 12: a body with a misnamed feature made MicroBatcher._flush raise; no request of its
    forward pass was answered, requests_in_flight stayed up and SIGTERM no longer stopped the server."""
    server = serve()
    values = np.random.default_rng(1).uniform(0, 10, (200, len(NAMES)))
    expected = Registry(registry).load("v000001").score(values.astype(np.float32))
    misnamed = {"features": {"amount": 1.0, "hour": 2.0, "zzz": 3.0}}  # all names but one, and one unknown
    bodies = [orjson.dumps({"id": str(i), "features": dict(zip(NAMES, map(float, row)))}) for i, row in enumerate(values)]
    poison_at = set(range(7, 200, 40))
    for i in poison_at:
        bodies[i] = orjson.dumps(misnamed if i % 2 else [{"features": dict(zip(NAMES, (1.0, 2.0, 3.0)))}, misnamed])
    # every request is on the wire before the server parses any: they share forward passes
    socks = [server.connect() for _ in bodies]
    for sock, body in zip(socks, bodies):
        sock.sendall(request("POST", "/v1/predict", body, {"connection": "close"}))
    deadline = time.monotonic() + 30
    answers = [read_response(sock, deadline) for sock in socks]

    unanswered = [i for i, (status, _) in enumerate(answers) if status == 0]
    assert not unanswered, f"{len(unanswered)} of {len(bodies)} requests were never answered"
    for i, (status, body) in enumerate(answers):
        if i in poison_at:
            assert status == 422 and "feature" in orjson.loads(body)["error"], (i, status, body)
        else:
            assert status == 200 and orjson.loads(body)["id"] == str(i), (i, status, body)
            assert orjson.loads(body)["score"] == pytest.approx(float(expected[i]), abs=1e-5)
    wait_for(lambda: server.metric("perennial_server_requests_in_flight ") == 0, 10, "no request left in flight")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == -signal.SIGTERM  # uvicorn re-raises the signal once it has shut down


# --- defect 4: admin commands with Kafka down -----------------------------------------------------


def test_an_admin_call_with_kafka_down_answers_503_in_time_while_predictions_go_on(serve):
    """Issue 12: the admin handlers called the synchronous Kafka producer on the event loop; with Kafka
    down a replica answered nothing for 30 s."""
    server = serve(admin_timeout_s=2)
    body = orjson.dumps({"features": dict(zip(NAMES, (1.0, 2.0, 3.0)))})
    admin: dict[str, float | int | str] = {}

    def pause() -> None:
        started = time.monotonic()
        r = httpx.post(f"{server.url}/v1/learner/pause", headers=AUTH, timeout=120)
        admin.update(status=r.status_code, error=r.json()["error"], started=started, ended=time.monotonic())

    caller = threading.Thread(target=pause)
    caller.start()
    predictions = []  # (started, ended, status) while the admin call is pending
    with httpx.Client(base_url=server.url, timeout=60) as client:
        while caller.is_alive():
            started = time.monotonic()
            status = client.post("/v1/predict", content=body).status_code
            predictions.append((started, time.monotonic(), status))
    caller.join()

    meanwhile = [p for p in predictions if p[0] > admin["started"] + 0.5 and p[1] < admin["ended"]]
    assert meanwhile, "no prediction sent during the admin call was answered before it"
    assert all(status == 200 for _, _, status in predictions)
    assert admin["ended"] - admin["started"] < 15  # 2 s configured; it was 30 s, the Kafka client's own timeout
    assert admin["status"] == 503 and "Kafka did not confirm the command within 2 s" in admin["error"]
    # the sender's thread may still be stuck in Kafka's first connection attempt: the next call is on time too
    started = time.monotonic()
    r = httpx.post(f"{server.url}/v1/learner/resume", headers=AUTH, timeout=120)
    assert r.status_code == 503 and time.monotonic() - started < 15


# --- defect 5: auth and a size limit before any body is read --------------------------------------


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(serve):
    """Issue 12: a 300 MB unauthenticated POST to an admin endpoint was read whole, then answered 422."""
    server = serve()
    chunk, total = b"x" * 65536, 4096  # 256 MiB offered
    for headers in ({"content-length": str(len(chunk) * total)}, {}):  # declared, then chunked
        sent = {"chunks": 0}

        def upload(sent: dict[str, int] = sent):
            for _ in range(total):
                sent["chunks"] += 1
                yield chunk

        r = httpx.post(f"{server.url}/v1/model/rollback", content=upload(), headers=headers, timeout=60)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert sent["chunks"] < total // 16, f"{sent['chunks']} of {total} chunks were sent before the answer"
    for headers in ({"content-length": str(20000)}, {}):
        r = httpx.post(f"{server.url}/v1/learner/pause", content=iter([b" " * 20000]), headers={**AUTH, **headers}, timeout=60)
        assert r.status_code == 413 and "16384" in r.json()["error"]
    assert server.metric('perennial_server_requests_total{code="401",route="/v1/model/rollback"}') == 2


# --- defect 6: idle and slow connections are closed -----------------------------------------------


def test_idle_and_slow_connections_are_closed_and_others_served_meanwhile(serve):
    """Issue 12: idle and slow (slowloris) sockets stayed open indefinitely."""
    server = serve(request_timeout_s=1.5, keep_alive_s=1)
    idle = server.connect()
    half_headers = server.connect()
    half_headers.sendall(b"GET /healthz HTTP/1.1\r\nhost: test\r\n")
    half_body = server.connect()
    half_body.sendall(request("POST", "/v1/predict", b"{" * 100)[:-90])
    kept_alive = server.connect()
    kept_alive.sendall(request("GET", "/healthz"))
    assert read_response(kept_alive, time.monotonic() + 10)[0] == 200
    slow = [server.connect() for _ in range(20)]
    for sock in slow:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\n")

    body = orjson.dumps({"features": dict(zip(NAMES, (1.0, 2.0, 3.0)))})
    assert httpx.post(f"{server.url}/v1/predict", content=body, timeout=10).status_code == 200  # others are served meanwhile
    for name, sock in [("idle", idle), ("half headers", half_headers), ("half a body", half_body), ("kept alive", kept_alive)] + [("slow", s) for s in slow]:
        assert closed_by_server(sock, within_s=20), f"a {name} connection is still open"
    cut_short = 'perennial_server_requests_total{code="499",route="/v1/predict"}'  # the half-sent body
    wait_for(lambda: server.metric(cut_short) == 1, 10, "the request cut short counted as 499")


def test_connections_over_the_limit_get_503_until_the_idle_ones_are_closed(serve):
    server = serve(request_timeout_s=2, max_connections=8)
    idle = [server.connect() for _ in range(8)]
    probe = server.connect()
    probe.sendall(request("GET", "/healthz"))
    assert read_response(probe, time.monotonic() + 10)[0] == 503
    for sock in idle:
        assert closed_by_server(sock, within_s=20)
    assert wait_for(lambda: server.ready(), 10, "requests served again")
