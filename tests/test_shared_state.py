"""Several gateway replicas over one Redis (LORAG_REDIS_URL): a swap taken by one is served by the others within
the store's bound, swaps raced through two replicas never lose or corrupt a change, and the keys' limits count
across replicas. A real redis-server (tests/redis_server.py) and the fake engines of tests/test_hotswap.py; the
gateways run in-process on real sockets (tests/test_scale.py runs them as separate processes)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.state import BOOT, DesiredState, seed_boot_adapters
from adapters.state_redis import RedisStateStore
from adapters.state_store import StateConflict
from server.keys import KeyLimits, KeysFile, new_key, write_keys_file
from tests.test_hotswap import FakeEngine, Serve, _admin, _ask, _gateway, engine, make_adapter, roots

__all__ = ["engine", "roots"]

BOUND = 1.0  # seconds: twice the Redis store's poll interval; pub/sub usually delivers in milliseconds


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def pair(
    serve_app: Serve, tmp_path: Path, engine: tuple[FakeEngine, str], roots: Path, redis_url: str, prefix: str
) -> Callable[..., AbstractContextManager[str]]:
    """A factory of gateway replicas sharing one Redis prefix and the fake engine."""

    def replica(**extra: Any) -> AbstractContextManager[str]:
        return _gateway(serve_app, tmp_path, [engine[1]], roots, redis_url=redis_url, redis_prefix=prefix, **extra)

    return replica


def _content(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def _served_within(client: httpx.Client, name: str, bound: float) -> float:
    began = time.monotonic()
    while _content(_ask(client)) != f"answered by {name}":
        assert time.monotonic() - began < bound, f"{name} not served within {bound} s"
        time.sleep(0.01)
    return time.monotonic() - began


def test_the_store_is_a_compare_and_set_and_announces_each_revision(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        one, two = RedisStateStore(redis_url, prefix=prefix), RedisStateStore(redis_url, prefix=prefix)
        try:
            state, rev = await one.load()
            assert (state, rev) == (DesiredState(), 0)
            seed_boot_adapters(state, ["helper"])
            changes = two.changes(0)
            assert await one.save(state, 0) == 1
            assert await asyncio.wait_for(anext(changes), BOUND) == 1
            with pytest.raises(StateConflict):
                await two.save(DesiredState(), 0)  # based on a revision that is gone: refused, nothing written
            seen, rev = await two.load()
            assert rev == 1 and seen.adapters["helper"].active == BOOT
            await changes.aclose()
        finally:
            await one.aclose()
            await two.aclose()

    asyncio.run(scenario())


def test_a_swap_on_one_replica_is_served_by_the_other_within_the_bound(
    pair: Callable[..., AbstractContextManager[str]], engine: tuple[FakeEngine, str], roots: Path
) -> None:
    with pair() as url_a, pair() as url_b, _admin(url_a) as a, _admin(url_b) as b:
        assert _content(_ask(b)) == "answered by helper"
        new = a.post("/admin/adapters/helper/swap", json={"path": str(roots / "helper-v2")}).json()["served_name"]
        _served_within(b, new, BOUND)
        listing = {x["name"]: x for x in b.get("/admin/adapters").json()["data"]}
        assert listing["helper"]["served_name"] == new and listing["helper"]["history"] == [BOOT]
        back = b.post("/admin/adapters/helper/rollback")  # B can roll back what A swapped
        assert back.status_code == 200, back.text
        _served_within(a, "helper", BOUND)
        b.post("/admin/adapters/helper/retire")
        began = time.monotonic()
        while _ask(a).status_code != 404:
            assert time.monotonic() - began < BOUND, "A still serves a retired adapter"
            time.sleep(0.01)


def test_swaps_raced_through_two_replicas_are_serialised_and_none_is_lost(
    pair: Callable[..., AbstractContextManager[str]], roots: Path
) -> None:
    make_adapter(roots / "helper-v3", seed=3)
    make_adapter(roots / "other-v2", seed=4)
    with pair() as url_a, pair() as url_b, _admin(url_a) as a, _admin(url_b) as b:
        for _ in range(2):
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                # The same adapter from both replicas, and another adapter alongside (a different lock, the same
                # stored document: its write must be applied again on the newer state, not overwrite it).
                first = pool.submit(a.post, "/admin/adapters/helper/swap", json={"path": str(roots / "helper-v2")})
                second = pool.submit(b.post, "/admin/adapters/helper/swap", json={"path": str(roots / "helper-v3")})
                third = pool.submit(b.post, "/admin/adapters/other/swap", json={"path": str(roots / "other-v2")})
                reports = [f.result().json() for f in (first, second, third)]
            one, two, other = reports
            assert all("served_name" in r for r in reports), reports
            # Serialised: whichever went second started from the first one's result.
            later, earlier = (two, one) if two.get("previous") == one["active"] else (one, two)
            assert later["previous"] == earlier["active"] or "already active" in later.get("notes", [])
            time.sleep(BOUND)
            views = [{x["name"]: x for x in c.get("/admin/adapters").json()["data"]} for c in (a, b)]
            assert views[0] == views[1] or _same_state(views)
            assert views[0]["helper"]["active"] == later["active"]
            assert views[0]["other"]["served_name"] == other["served_name"] != "other"
            for client in (a, b):
                assert _content(_ask(client)) == f"answered by {later['served_name']}"
                assert _content(_ask(client, "other")) == f"answered by {other['served_name']}"


def _same_state(views: list[dict[str, Any]]) -> bool:
    # Request counts differ per replica; the desired state must not.
    keys = ("active", "served_name", "retired", "history")
    return all(views[0][n][k] == views[1][n][k] for n in views[0] for k in keys)


@pytest.fixture
def limited_keys(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    path = tmp_path / "keys.json"
    token, record = new_key("acme", ["helper"], KeyLimits(requests_per_minute=3))
    write_keys_file(path, KeysFile(keys=[record]))
    yield path, token


def test_a_keys_limit_holds_across_replicas(
    pair: Callable[..., AbstractContextManager[str]], limited_keys: tuple[Path, str]
) -> None:
    path, token = limited_keys
    with pair(api_keys_file=path) as url_a, pair(api_keys_file=path) as url_b:
        headers = {"authorization": f"Bearer {token}"}
        codes = []
        for url in (url_a, url_b, url_a, url_b, url_a):
            with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
                codes.append(_ask(client).status_code)
        assert codes == [200, 200, 200, 429, 429]  # 3 per minute in all, not 3 on each replica
