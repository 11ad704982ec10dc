"""Admission control: the completion rate, the bound it gives, and fast 503s with Retry-After through the gateway
(a slow stub upstream standing in for a busy engine)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp

from server.admission import AdmissionPolicy, CompletionRate, admits, retry_after
from server.app import create_app
from server.engines import EngineNode, EnginePool
from server.errors import Overloaded
from server.settings import GatewaySettings
from server.upstream import Upstream
from tests.stub_upstream import Stub, StubConfig

Serve = Callable[[ASGIApp], AbstractContextManager[str]]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_counts_busy_time_only() -> None:
    clock = Clock()
    rate = CompletionRate(clock)
    assert rate.per_second() is None  # nothing seen
    for _ in range(4):  # four requests in flight for 2 s, then all done: 2 per busy second
        rate.started(0 if _ == 0 else 1)
    clock.now += 2
    for left in (3, 2, 1, 0):
        rate.finished(left, completed=True)
    assert rate.per_second() == pytest.approx(2.0)
    clock.now += 3600  # an idle hour is not slowness
    assert rate.per_second() == pytest.approx(2.0)
    rate.started(0)
    clock.now += 2
    rate.finished(0, completed=False)  # refused by the engine: freed, but not work done
    assert rate.per_second() == pytest.approx(1.0)


def test_a_fast_engine_has_a_rate_before_two_busy_seconds() -> None:
    clock = Clock()
    rate = CompletionRate(clock)
    rate.started(0)
    for _ in range(7):  # seven quick answers: not yet evidence
        clock.now += 0.01
        rate.finished(1, completed=True)
    assert rate.per_second() is None
    clock.now += 0.01
    rate.finished(1, completed=True)  # the eighth: 8 in 0.08 busy seconds
    assert rate.per_second() == pytest.approx(100.0)
    assert admits(AdmissionPolicy(max_wait=20, min_inflight=8), 64, rate.per_second())


def test_the_bound_follows_the_estimated_wait() -> None:
    policy = AdmissionPolicy(max_wait=10, min_inflight=2, max_inflight=0)
    assert admits(policy, 1, None) and not admits(policy, 2, None)  # start-up allowance, then nothing unknown
    assert admits(policy, 19, 2.0) and not admits(policy, 20, 2.0)  # (20 + 1) / 2 s > 10 s
    assert retry_after(policy, 20, 2.0) == pytest.approx(1.0) and retry_after(policy, 29, 2.0) == pytest.approx(5.0)
    assert not admits(AdmissionPolicy(max_wait=10, min_inflight=2, max_inflight=5), 5, 100.0)
    assert admits(AdmissionPolicy(max_wait=0), 10_000, None)  # off


def test_the_pool_leases_and_refuses_when_every_engine_is_full() -> None:
    settings = GatewaySettings(_env_file=None)  # type: ignore[call-arg]
    nodes = [EngineNode(Upstream.from_settings(settings, url=url)) for url in ("http://a", "http://b")]
    pool = EnginePool(nodes, AdmissionPolicy(max_wait=5, min_inflight=1))
    first = pool.admit("m", set())
    second = pool.admit("m", set())
    assert first is not None and second is not None and {first.node, second.node} == set(nodes)
    with pytest.raises(Overloaded):
        pool.check("m")  # asked before retrieval: refuses without taking anything
    with pytest.raises(Overloaded) as refused:
        pool.admit("m", set())
    assert refused.value.status == 503 and refused.value.headers() == {"retry-after": "1"}
    assert pool.admit("m", set(nodes)) is None  # every engine tried: the caller reports the last error
    first.release()
    first.release()  # idempotent
    assert first.node.outstanding == 0 and pool.admit("m", set()) is not None


@pytest.fixture
def slow_stub(serve_app: Serve) -> Iterator[tuple[Stub, str]]:
    stub = Stub(StubConfig(base_model="base", adapters=["helper"], ttft=1.5, tokens=2))
    with serve_app(stub.app) as url:
        yield stub, url


@pytest.mark.parametrize("stream", [False, True])
def test_requests_beyond_the_bound_are_refused_fast_with_retry_after(
    serve_app: Serve, tmp_path: Path, slow_stub: tuple[Stub, str], stream: bool
) -> None:
    manifest = tmp_path / "assistants.yaml"
    manifest.write_text(
        "base_model: base\nassistants:\n  - {name: helper, adapter: helper, retrieval: {enabled: false}}\n"
    )
    settings = GatewaySettings(  # type: ignore[call-arg]
        _env_file=None,
        assistants=manifest,
        upstream_url=slow_stub[1],
        admission_max_wait=1.0,
        admission_min_inflight=2,
        state_file=tmp_path / "state.json",
    )
    body = {"model": "helper", "messages": [{"role": "user", "content": "hi"}], "stream": stream}

    def ask(_: int) -> tuple[int, float, httpx.Headers]:
        began = time.perf_counter()
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "overloaded"
        return response.status_code, time.perf_counter() - began, response.headers

    with serve_app(create_app(settings)) as url, ThreadPoolExecutor(6) as pool:
        results = list(pool.map(ask, range(6)))
    admitted = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(admitted) == 2 and len(refused) == 4, [r[0] for r in results]
    assert all(r[1] < 1.0 for r in refused)  # refused at once, not after queueing behind the engine
    assert all(int(r[2]["retry-after"]) >= 1 for r in refused)
    assert len(slow_stub[0].requests) == 2  # the refused never reached the engine
