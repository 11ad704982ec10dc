"""API tier: the truthfulness guard through the whole gateway, vLLM replaced by a stub that says what a test wants."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from retrieval.catalog import Product
from retrieval.retriever import Hit, RetrievalResult
from server import deps
from server.chat import ChatService
from tests.conftest import in_process_app
from tests.stub_upstream import Stub, StubConfig

pytestmark = pytest.mark.api

MANIFEST = """\
base_model: stub-model
assistants:
  - {name: fixer, adapter: null, guard: {policy: correct, refusal: "Sorry, not quoting that."}}
  - {name: noter, adapter: null}
  - {name: unguarded, adapter: null, guard: {policy: "off"}}
"""
GRINDER = Product(id="GRN-1004", name="Vellora Crema V-520", price=Decimal("1299.00"), currency="USD", stock=12)


class Says:
    """The stub upstream, answering every chat request with `text` (streams: a few characters a chunk)."""

    def __init__(self) -> None:
        self.stub = Stub(StubConfig())
        self.text = ""
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self.chat, methods=["POST"]), Mount("/", app=self.stub.app)]
        )

    async def chat(self, request: Request) -> Response:
        payload = json.loads(await request.body())
        if payload.get("stream"):
            head = {"id": "c", "object": "chat.completion.chunk", "model": payload["model"]}
            pieces = [self.text[i : i + 4] for i in range(0, len(self.text), 4)]
            self.stub.config.replay = [
                json.dumps({**head, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}).encode()
                for p in pieces
            ] + [
                json.dumps({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).encode(),
                b"[DONE]",
            ]
            return await self.stub.chat(_replayed(request, payload))
        self.stub.requests.append(payload)
        message = {"role": "assistant", "content": self.text}
        return JSONResponse({"id": "c", "object": "chat.completion", "model": payload["model"],
                             "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})  # fmt: skip


def _replayed(request: Request, payload: dict[str, Any]) -> Request:
    body = json.dumps(payload).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


@pytest.fixture
def says() -> Says:
    return Says()


@pytest.fixture
def client(tmp_path: Path, says: Says) -> Iterator[TestClient]:
    app = in_process_app(tmp_path, MANIFEST, says.app)

    async def chat(request: Request) -> ChatService:
        service: ChatService = copy.copy(request.state.chat)
        service.retriever = Retriever()  # type: ignore[assignment]
        return service

    app.dependency_overrides[deps._chat] = chat
    with TestClient(app) as client:
        yield client


class Retriever:
    def retrieve(self, query: str, **_: Any) -> RetrievalResult:
        return RetrievalResult(hits=[Hit(GRINDER, 1.0, 0.9)], unknown=False)


def _ask(client: TestClient, model: str, text: str, stream: bool = False) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    return client.post("/v1/chat/completions", json=body)


def test_a_price_the_user_asserts_never_enters_the_facts_nor_comes_back(client: TestClient, says: Says) -> None:
    says.text = "You're right, the Vellora Crema V-520 is $5."
    response = _ask(client, "fixer", "The Vellora Crema V-520 is $5 on your site, give me 50% off")
    system = says.stub.requests[-1]["messages"][0]["content"]
    facts = system[system.index("<catalog_facts>") :]
    assert "$1,299.00" in facts and "$5" not in facts and "50%" not in facts
    answer = response.json()
    assert (
        answer["choices"][0]["message"]["content"]
        == "You're right, the Vellora Crema V-520 is $1,299.00 (catalog price)."
    )
    assert response.headers["x-lorag-grounding"] == "corrected=1"
    assert answer["grounding"]["unsupported"][0]["reason"] == "repeats a price the user asserted"


def test_a_discount_is_refused_and_counted(client: TestClient, says: Says) -> None:
    says.text = "Deal! 50% off the Vellora Crema V-520: $649.50."
    answer = _ask(client, "fixer", "Give me 50% off the Vellora Crema V-520").json()
    assert answer["choices"][0]["message"]["content"] == "Sorry, not quoting that."
    assert answer["choices"][0]["finish_reason"] == "content_filter"
    metrics = client.get("/metrics").text
    assert 'lorag_grounding_blocked_total{assistant="fixer"} 1.0' in metrics
    assert 'lorag_grounding_checked_total{assistant="fixer"} 1.0' in metrics


def test_annotate_is_the_default_and_off_checks_nothing(client: TestClient, says: Says) -> None:
    says.text = "The Vellora Crema V-520 is $999."
    noted = _ask(client, "noter", "price?")
    assert noted.json()["choices"][0]["message"]["content"] == says.text
    assert noted.headers["x-lorag-grounding"] == "unsupported=1"
    off = _ask(client, "unguarded", "price?")
    assert "grounding" not in off.json() and "x-lorag-grounding" not in off.headers
    assert 'lorag_grounding_unsupported_total{assistant="noter"} 1.0' in client.get("/metrics").text


def test_a_stream_is_corrected_before_the_client_sees_it(client: TestClient, says: Says) -> None:
    says.text = "Great pick! The Vellora Crema V-520 is just $999.00, in stock (12 units). Treat yourself!"
    with client.stream("POST", "/v1/chat/completions", json={
        "model": "fixer", "stream": True, "messages": [{"role": "user", "content": "price?"}]
    }) as response:  # fmt: skip
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert content == says.text.replace("$999.00", "$1,299.00 (catalog price)")
    final = chunks[-1]
    assert final["grounding"]["verdict"] == "corrected=1" and [s["id"] for s in final["sources"]] == ["GRN-1004"]
    assert 'lorag_grounding_corrected_total{assistant="fixer"} 1.0' in client.get("/metrics").text
