"""Two gateway processes (`lorag serve`) over one redis-server and a fake engine, as behind a load balancer: a
swap sent to replica A is served by replica B within the bound, a key's limit holds across them, and a replica
stopped (SIGTERM: what a rolling update sends) finishes what it was answering while the balancer's retry of a new
request on the other replica succeeds; a replica killed (SIGKILL) drops its in-flight requests with the connection
(no HTTP answer), which a client or balancer retrying non-idempotent POSTs may send again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse

from server.keys import KeyLimits, KeysFile, new_key, write_keys_file
from tests.conftest import free_port
from tests.test_hotswap import KEY, MANIFEST, FakeEngine, Serve, make_adapter

pytestmark = pytest.mark.slow
BOUND = 1.0


class SlowEngine(FakeEngine):
    """The fake engine, answering after `delay` seconds."""

    delay = 0.0

    async def complete(self, request: Request) -> JSONResponse:
        await asyncio.sleep(self.delay)
        return await super().complete(request)


class Replica:
    """One `lorag serve` process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lorag", "serve", "--port", str(self.port), "--no-access-log"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.log = log
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)


def _chat(url: str, token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token or KEY}"}
    body = {"model": "helper", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def _balanced(urls: list[str], token: str) -> httpx.Response:
    """What a load balancer with retries does: on a refused connection, the next replica."""
    for url in urls:
        try:
            return _chat(url, token)
        except httpx.ConnectError:
            continue
    raise AssertionError("no replica answered")


@pytest.fixture
def replicas(serve_app: Serve, tmp_path: Path, redis_url: str) -> Iterator[tuple[list[Replica], SlowEngine, Path, str]]:
    roots = tmp_path / "adapters"
    make_adapter(roots / "helper-v1", seed=1)
    make_adapter(roots / "helper-v2", seed=2)
    fake = SlowEngine({"helper": str(roots / "helper-v1"), "other": str(roots / "helper-v1")})
    (tmp_path / "assistants.yaml").write_text(MANIFEST)
    token, record = new_key("acme", ["helper"], KeyLimits(requests_per_minute=4))
    admin_token, admin_record = new_key("acme", ["helper", "other"], KeyLimits())
    write_keys_file(tmp_path / "keys.json", KeysFile(keys=[record, admin_record]))
    with serve_app(fake.app) as upstream:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "LORAG_ASSISTANTS": str(tmp_path / "assistants.yaml"),
            "LORAG_ENGINES": upstream,
            "LORAG_ADMIN_KEY": KEY,
            "LORAG_ADAPTER_ROOTS": str(roots),
            "LORAG_API_KEYS_FILE": str(tmp_path / "keys.json"),
            "LORAG_REDIS_URL": redis_url,
            "LORAG_REDIS_PREFIX": f"scale{uuid.uuid4().hex[:6]}:",
        }
        started = [Replica(env, tmp_path / f"gateway-{i}.log") for i in range(2)]
        try:
            yield started, fake, roots, f"{token} {admin_token}"
        finally:
            for replica in started:
                replica.stop(signal.SIGKILL)


def test_two_processes_share_swaps_and_limits_and_survive_a_stopped_replica(
    replicas: tuple[list[Replica], SlowEngine, Path, str],
) -> None:
    (a, b), fake, roots, tokens = replicas
    limited, user = tokens.split()
    admin = {"authorization": f"Bearer {KEY}"}

    # A swap sent to A is what B serves, within the bound.
    swap = httpx.post(f"{a.url}/admin/adapters/helper/swap", json={"path": str(roots / "helper-v2")}, headers=admin)
    assert swap.status_code == 200, swap.text
    new, began = swap.json()["served_name"], time.monotonic()
    while _chat(b.url, user).json()["choices"][0]["message"]["content"] != f"answered by {new}":
        assert time.monotonic() - began < BOUND, "replica B did not serve the new version within the bound"
        time.sleep(0.02)

    # A key's 4 requests a minute are 4 across both replicas, not 4 on each.
    codes = [_chat(url, limited).status_code for url in (a.url, b.url, a.url, b.url, a.url, b.url)]
    assert codes == [200, 200, 200, 200, 429, 429]

    # SIGTERM on A while it answers: that answer still arrives; a new request finds A's port closed and the
    # balancer's retry on B is answered. Nothing the balancer can retry is lost.
    fake.delay = 1.5
    slow: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: slow.append(_chat(a.url, user)))
    thread.start()
    time.sleep(0.5)
    a.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    fake.delay = 0.0
    with pytest.raises(httpx.ConnectError):
        _chat(a.url, user)
    assert all(_balanced([a.url, b.url], user).status_code == 200 for _ in range(5))
    thread.join(30)
    assert [r.status_code for r in slow] == [200]
    assert a.process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM once it has shut down

    # SIGKILL on B mid-answer: the client sees the connection drop (no status), never a half answer.
    fake.delay = 2.0
    dropped: list[BaseException] = []

    def ask() -> None:
        try:
            _chat(b.url, user)
        except httpx.TransportError as exc:
            dropped.append(exc)

    thread = threading.Thread(target=ask)
    thread.start()
    time.sleep(0.5)
    b.stop(signal.SIGKILL)
    thread.join(30)
    assert len(dropped) == 1 and isinstance(dropped[0], httpx.RemoteProtocolError | httpx.ReadError)
