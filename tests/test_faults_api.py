"""An engine that goes away and comes back, at the API tier: vLLM is the stub upstream behind a switch that refuses
connections as a stopped server does. The real engine's version of this (a vLLM process killed, stopped and
started again) is tests/test_faults_engine.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from server import reconciler
from server.upstream import ENGINE_RETRY_AFTER_S, ShardedTransport
from tests.conftest import in_process_app
from tests.stub_upstream import Stub, StubConfig

pytestmark = pytest.mark.api

MANIFEST = """\
base_model: stub-model
assistants:
  - {name: support, adapter: support-agent, retrieval: {enabled: false}, max_tokens: 8}
"""
QUESTION = {"model": "support", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


class Switch:
    """The stub behind a switch: while `down`, every request fails to connect, as a stopped engine's port does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.down = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.down and scope["type"] == "http":
            raise httpx.ConnectError("[Errno 111] Connection refused")
        await self.app(scope, receive, send)


@pytest.fixture
def stub() -> Stub:
    return Stub(StubConfig(adapters=["support-agent"], tokens=3))


@pytest.fixture
def gateway(tmp_path: Path, stub: Stub) -> Iterator[tuple[TestClient, Switch]]:
    switch = Switch(stub.app)
    # No periodic pass during the test: only the probing of a down engine and the wake-ups are at work.
    app = in_process_app(tmp_path, MANIFEST, switch, reconcile_interval=3600)
    with TestClient(app) as client:
        yield client, switch


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error


def test_engine_down_is_503_with_retry_after_then_served_again_by_itself(
    gateway: tuple[TestClient, Switch], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconciler, "DOWN_PROBE_S", 0.1)
    monkeypatch.setattr(reconciler, "MIN_GAP_S", 0.05)
    client, switch = gateway
    assert client.post("/v1/chat/completions", json=QUESTION).status_code == 200
    switch.down = True
    for stream in (False, True):
        refused = client.post("/v1/chat/completions", json={**QUESTION, "stream": stream})
        _error(refused, 503, "upstream_unavailable")
        assert refused.headers["retry-after"] == str(ENGINE_RETRY_AFTER_S)
    assert client.get("/ready").status_code == 503

    switch.down = False  # no /admin/reconcile: the gateway finds the engine back by itself
    deadline = time.monotonic() + 10
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "the gateway did not find the engine back within 10 s"
        time.sleep(0.05)
    assert client.post("/v1/chat/completions", json=QUESTION).status_code == 200


def test_a_restarted_engine_without_its_adapter_is_a_short_503_not_a_502(
    gateway: tuple[TestClient, Switch], stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reconciler stays asleep, so the request meets the engine before the adapter is loaded back.
    monkeypatch.setattr(reconciler, "DOWN_PROBE_S", 600.0)
    monkeypatch.setattr(reconciler, "MIN_GAP_S", 600.0)
    client, switch = gateway
    switch.down = True
    _error(client.post("/v1/chat/completions", json=QUESTION), 503, "upstream_unavailable")
    stub.config.adapters = []  # it comes back with its start-up models only: the adapter loaded at run time is gone
    switch.down = False
    restoring = client.post("/v1/chat/completions", json=QUESTION)
    _error(restoring, 503, "adapter_restoring")
    assert restoring.headers["retry-after"] == str(ENGINE_RETRY_AFTER_S)
    # (An engine that was not down and lacks the adapter stays a 502: tests/test_gateway_api.py.)


def test_idle_upstream_connections_expire_before_the_engine_closes_them() -> None:
    """vLLM serves on uvicorn, which closes a connection idle for `timeout_keep_alive` seconds; the gateway must drop
    it first, or a request sent as the server closes it fails with a reset (a 502)."""
    import uvicorn

    server_closes_after = uvicorn.Config(app=Stub().app).timeout_keep_alive
    for shard in ShardedTransport.sized(256).shards:
        assert shard._pool._keepalive_expiry is not None
        assert shard._pool._keepalive_expiry <= server_closes_after / 2
