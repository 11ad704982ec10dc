"""API tier: the whole gateway in-process through TestClient, vLLM replaced by the stub upstream over an ASGI
transport, and one dependency overridden where a test needs a part to misbehave (the retriever here).

The lifespan runs for real (manifest, adapter state, store and embedder), so these tests see what a client sees.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from retrieval.catalog import Product
from retrieval.embedder import EmbedderError
from retrieval.retriever import Hit, RetrievalResult
from retrieval.store import StoreError
from server import deps
from server.chat import ChatService
from tests.conftest import in_process_app
from tests.stub_upstream import Stub, StubConfig

pytestmark = pytest.mark.api

MANIFEST = """\
base_model: stub-model
assistants:
  - {name: shop, adapter: null, retrieval: {enabled: true, top_k: 2}, max_tokens: 16}
  - {name: plain, adapter: null, retrieval: {enabled: false}, max_tokens: 16}
"""
GRINDER = Product(
    id="SKU-1",
    name="Caffora Mill G-100",
    category="grinders",
    price=Decimal("149.00"),
    currency="USD",
    description="conical burr grinder",
    stock=3,
)


class FakeRetriever:
    """Answers every question with `result`, or raises `error`."""

    def __init__(self, result: RetrievalResult | None = None, error: Exception | None = None) -> None:
        self.result, self.error, self.queries = result, error, list[str]()

    def retrieve(self, query: str, **_: Any) -> RetrievalResult:
        self.queries.append(query)
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@pytest.fixture
def stub() -> Stub:
    return Stub(StubConfig(tokens=4))


@pytest.fixture
def app(tmp_path: Path, stub: Stub) -> FastAPI:
    return in_process_app(tmp_path, MANIFEST, stub.app)


def _with_retriever(app: FastAPI, retriever: FakeRetriever) -> None:
    """The real chat service of the running app, with `retriever` in place of the catalog's."""

    async def chat(request: Request) -> ChatService:
        service = copy.copy(request.state.chat)
        service.retriever = retriever
        return service

    app.dependency_overrides[deps._chat] = chat


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def _ask(client: TestClient, model: str, text: str = "How much is the Caffora Mill G-100?") -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": text}]})


@pytest.mark.parametrize("error", [StoreError("collection gone"), EmbedderError("model missing")])
def test_a_failing_catalog_is_a_503_in_openai_shape_and_nothing_reaches_vllm(
    app: FastAPI, client: TestClient, stub: Stub, error: Exception
) -> None:
    _with_retriever(app, FakeRetriever(error=error))
    response = _ask(client, "shop")
    assert response.status_code == 503
    body = response.json()["error"]
    assert body["code"] == "retrieval_unavailable" and body["type"] == "service_unavailable"
    assert "collection gone" not in body["message"] and "model missing" not in body["message"]
    assert not stub.requests
    # An assistant that does not retrieve is unaffected by the catalog's failure.
    assert _ask(client, "plain").status_code == 200


def test_injected_facts_reach_the_prompt_and_the_sources(app: FastAPI, client: TestClient, stub: Stub) -> None:
    retriever = FakeRetriever(RetrievalResult(hits=[Hit(GRINDER, 1.0, 0.9)], unknown=False))
    _with_retriever(app, retriever)
    response = _ask(client, "shop")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == "shop" and [s["id"] for s in answer["sources"]] == ["SKU-1"]
    assert retriever.queries == ["How much is the Caffora Mill G-100?"]
    system = stub.requests[-1]["messages"][0]
    assert system["role"] == "system" and "Caffora Mill G-100" in system["content"] and "$149.00" in system["content"]


def test_an_unknown_product_gets_the_signal_and_no_sources(app: FastAPI, client: TestClient, stub: Stub) -> None:
    _with_retriever(app, FakeRetriever(RetrievalResult(hits=[], unknown=True, reason="no product named X")))
    answer = _ask(client, "shop", "How much is the Zorblatt 9000?").json()
    assert answer["sources"] == []
    assert "NOT IN CATALOG" in stub.requests[-1]["messages"][0]["content"]
