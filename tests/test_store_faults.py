"""A catalog store that fails (local mode, Qdrant Edge, a Qdrant server): translated once at the store boundary,
then each assistant's `retrieval.on_failure` decides: `fail` is a 503 retrieval_unavailable, `degrade` answers
with an empty facts block, `sources: []` and `x-lorag-retrieval: skipped`. Never a 500, never a hang.

Real stores and the real embedder; vLLM is the stub upstream."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import GatewaySettings
from tests.stub_upstream import Stub, StubConfig

pytestmark = [
    pytest.mark.api,
    # qdrant-client checks a server's version in a thread of its own and warns there when the server is down.
    pytest.mark.filterwarnings("ignore:Exception in thread .*_check_compatibility"),
]

MANIFEST = """\
base_model: stub-model
assistants:
  - {name: strict, adapter: null, retrieval: {enabled: true}, max_tokens: 8}
  - {name: lenient, adapter: null, retrieval: {enabled: true, on_failure: degrade}, max_tokens: 8}
"""


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connections to it are refused


def _store(kind: str, tmp_path: Path) -> dict[str, Any]:
    empty = tmp_path / "empty-store"
    empty.mkdir()
    if kind == "local":  # the path holds no collection: every search fails
        return {"store": "qdrant", "qdrant_url": None, "qdrant_path": empty}
    if kind == "edge":  # no shard in the directory
        return {"store": "edge", "qdrant_url": None, "qdrant_path": empty}
    return {"qdrant_url": f"http://127.0.0.1:{_refused_port()}", "qdrant_path": empty}


@pytest.fixture(params=["local", "edge", "server"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TestClient, Stub]]:
    (tmp_path / "assistants.yaml").write_text(MANIFEST)
    stub = Stub(StubConfig(tokens=3))
    settings = GatewaySettings(  # type: ignore[call-arg]
        _env_file=None,
        assistants=tmp_path / "assistants.yaml",
        upstream_url="http://vllm.test",
        state_file=tmp_path / "adapters.json",
        embedding_threads=1,
        **_store(request.param, tmp_path),
    )
    with TestClient(create_app(settings, upstream_transport=httpx.ASGITransport(app=stub.app))) as client:
        yield client, stub


def _ask(client: TestClient, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "How much is the Caffora Mill G-100?"}], **extra}
    return client.post("/v1/chat/completions", json=body)


def test_a_failing_store_fails_or_degrades_per_assistant(gateway: tuple[TestClient, Stub]) -> None:
    client, stub = gateway
    began = time.perf_counter()
    strict = _ask(client, "strict")
    assert strict.status_code == 503, strict.text
    error = strict.json()["error"]
    assert error["code"] == "retrieval_unavailable" and set(error) == {"message", "type", "param", "code"}
    assert "127.0.0.1" not in error["message"] and "empty-store" not in error["message"]
    assert not stub.requests and "x-lorag-retrieval" not in strict.headers

    lenient = _ask(client, "lenient")
    assert lenient.status_code == 200, lenient.text
    assert lenient.headers["x-lorag-retrieval"] == "skipped" and lenient.json()["sources"] == []
    system = stub.requests[-1]["messages"][0]["content"]
    assert "<catalog_facts>" in system and "Caffora" not in system  # an empty block: nothing to quote from

    streamed = _ask(client, "lenient", stream=True)
    assert streamed.status_code == 200 and streamed.headers["x-lorag-retrieval"] == "skipped"
    events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["sources"] == []
    assert time.perf_counter() - began < 10  # a refused or missing store answers at once, no hang
