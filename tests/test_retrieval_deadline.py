"""The gateway's own deadline on retrieval (LORAG_RETRIEVAL_TIMEOUT): a catalog store that hangs holds no request
past it. Each assistant's `retrieval.on_failure` then decides (`fail`: 503 retrieval_unavailable, `degrade`: an
answer without facts and `x-lorag-retrieval: skipped`), and retrievals left running on the hung store are not
piled up: once every slot's thread is stuck, new requests are refused without calling the store.

The real embedder and the real lifespan; the store is a stand-in that blocks until the test lets it go, and vLLM
is the stub upstream."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import in_process_app
from tests.stub_upstream import Stub, StubConfig

pytestmark = pytest.mark.api

MANIFEST = """\
base_model: stub-model
assistants:
  - {name: strict, adapter: null, retrieval: {enabled: true}, max_tokens: 8}
  - {name: lenient, adapter: null, retrieval: {enabled: true, on_failure: degrade}, max_tokens: 8}
"""
DEADLINE = 1.5  # seconds; the first embedding of a cold process fits well within it
HANG = 30.0  # how long the store blocks unless released: far beyond the deadline


class HangingStore:
    """A catalog store whose search blocks while `blocked` is set (at most HANG seconds), then finds nothing."""

    collection = "products"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.blocked = False
        self.searches = 0
        self.finished = 0

    def exists(self) -> bool:
        if self.blocked:
            self.release.wait(HANG)
        return True

    def search(self, *args: Any, **kwargs: Any) -> list[Any]:
        self.searches += 1
        if self.blocked:
            self.release.wait(HANG)
        self.finished += 1
        return []


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[TestClient, Stub, HangingStore]]:
    stub = Stub(StubConfig(tokens=3))
    app = in_process_app(tmp_path, MANIFEST, stub.app, retrieval_timeout=DEADLINE, retrieval_concurrency=2)
    store = HangingStore()
    with TestClient(app) as client:
        client.app_state["retriever"].store = store
        try:
            yield client, stub, store
        finally:
            store.release.set()  # let the threads left behind end


def _ask(client: TestClient, model: str, **extra: Any) -> tuple[httpx.Response, float]:
    body = {"model": model, "messages": [{"role": "user", "content": "Do you sell a burr grinder?"}], **extra}
    began = time.perf_counter()
    response = client.post("/v1/chat/completions", json=body)
    return response, time.perf_counter() - began


def test_a_store_that_answers_in_time_is_used(gateway: tuple[TestClient, Stub, HangingStore]) -> None:
    client, _, store = gateway
    for model in ("strict", "lenient"):
        response, _ = _ask(client, model)
        assert response.status_code == 200, response.text
        assert "x-lorag-retrieval" not in response.headers
    assert store.searches == store.finished == 2


def test_a_hung_store_fails_or_degrades_at_the_deadline(gateway: tuple[TestClient, Stub, HangingStore]) -> None:
    client, stub, store = gateway
    _ask(client, "strict")  # warm the embedder while the store still answers
    store.blocked = True

    strict, seconds = _ask(client, "strict")
    assert strict.status_code == 503, strict.text
    error = strict.json()["error"]
    assert error["code"] == "retrieval_unavailable" and set(error) == {"message", "type", "param", "code"}
    assert "in time" in error["message"]
    assert DEADLINE <= seconds < HANG / 3, seconds  # cut at the deadline, not when the store gives up
    assert len(stub.requests) == 1  # only the warm-up reached vLLM

    lenient, seconds = _ask(client, "lenient", stream=True)
    assert lenient.status_code == 200 and lenient.headers["x-lorag-retrieval"] == "skipped", lenient.text
    assert seconds < HANG / 3, seconds
    events = [line.removeprefix("data: ") for line in lenient.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["sources"] == []
    system = stub.requests[-1]["messages"][0]["content"]
    assert "<catalog_facts>" in system  # an empty facts block: the adapters were trained to refuse what it lacks
    assert store.searches == 3 and store.finished == 1  # both searches still hang in their threads


def test_threads_stuck_on_the_store_are_not_piled_up(gateway: tuple[TestClient, Stub, HangingStore]) -> None:
    client, _, store = gateway
    _ask(client, "strict")
    store.blocked = True
    for _ in range(2):  # as many as the retrieval slots: each is left behind at the deadline
        assert _ask(client, "strict")[0].status_code == 503
    assert store.searches == 3

    refused, seconds = _ask(client, "strict")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "retrieval_unavailable"
    assert seconds < DEADLINE, seconds  # refused before waiting out another deadline
    assert store.searches == 3  # the store was not asked again
    degraded, _ = _ask(client, "lenient")
    assert degraded.status_code == 200 and degraded.headers["x-lorag-retrieval"] == "skipped"

    began = time.perf_counter()
    ready = client.get("/ready")  # the probe has the same deadline
    assert ready.status_code == 503 and ready.json()["checks"]["qdrant"] == "failing"
    assert time.perf_counter() - began < HANG / 3

    store.release.set()  # the store recovers: the stuck threads end, and retrieval is used again
    deadline = time.monotonic() + 10
    while store.finished < 3 and time.monotonic() < deadline:  # the readiness probe's thread ends too
        time.sleep(0.05)
    store.blocked = False
    time.sleep(0.2)  # the threads' own bookkeeping runs just after the store returns
    recovered, _ = _ask(client, "strict")
    assert recovered.status_code == 200 and "x-lorag-retrieval" not in recovered.headers, recovered.text
