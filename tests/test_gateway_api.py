"""The gateway over real sockets: a stub vLLM (tests/stub_upstream.py), a real local Qdrant and the real embedder.

Covers the relay (chunks as they come, [DONE], sources, usage), in-band stream errors, client disconnects
reaching the upstream, every error status in OpenAI's shape, request ids, readiness and metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from qdrant_client import QdrantClient
from starlette.types import ASGIApp

from retrieval.demo_catalog import demo_catalog
from retrieval.embedder import Embedder
from retrieval.facts import FACTS_OPEN, NOT_IN_CATALOG, format_price
from retrieval.ingest import ingest
from retrieval.loaders import Row
from retrieval.store import CatalogStore
from server.app import create_app
from server.settings import GatewaySettings
from tests.stub_upstream import Stub, StubConfig

pytestmark = pytest.mark.slow

Serve = Callable[[ASGIApp], AbstractContextManager[str]]
BASE = "smollm2-135m-instruct"
ADAPTERS = ["product-expert", "support-agent", "sales-assistant"]
PRODUCTS = demo_catalog()[:60]
PRODUCT = PRODUCTS[2]  # ESP-1002, an espresso machine
PLAIN_MANIFEST = f"""
base_model: {BASE}
assistants:
  - {{name: plain, adapter: support-agent, retrieval: {{enabled: false}}, max_tokens: 8}}
"""


@pytest.fixture(scope="module")
def stub(serve_app: Serve) -> Iterator[tuple[Stub, str]]:
    stub = Stub(StubConfig(base_model=BASE, adapters=list(ADAPTERS)))
    with serve_app(stub.app) as url:
        yield stub, url


@pytest.fixture(autouse=True)
def fresh_stub(stub: tuple[Stub, str]) -> Iterator[Stub]:
    """Each test starts from the stub's defaults."""
    stub[0].config = StubConfig(base_model=BASE, adapters=list(ADAPTERS))
    yield stub[0]


@pytest.fixture(scope="module")
def qdrant_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("qdrant")
    client = QdrantClient(path=str(path))
    try:
        report = ingest(
            (Row(i + 1, p) for i, p in enumerate(PRODUCTS)), CatalogStore(client), Embedder(threads=1), progress=False
        )
    finally:
        client.close()
    assert report.added == len(PRODUCTS)
    return path


def _settings(upstream: str, **overrides: Any) -> GatewaySettings:
    return GatewaySettings(
        _env_file=None,
        upstream_url=upstream,
        qdrant_url=None,
        embedding_threads=1,  # type: ignore[call-arg]
        **overrides,
    )


@pytest.fixture(scope="module")
def gateway(stub: tuple[Stub, str], qdrant_path: Path, serve_app: Serve) -> Iterator[str]:
    with serve_app(create_app(_settings(stub[1], qdrant_path=qdrant_path, max_body_bytes=64 * 1024))) as url:
        yield url


@pytest.fixture
def client(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=30) as c:
        yield c


def _plain_gateway(serve_app: Serve, tmp_path: Path, upstream: str, **overrides: Any) -> AbstractContextManager[str]:
    manifest = tmp_path / "plain.yaml"
    manifest.write_text(PLAIN_MANIFEST)
    return serve_app(create_app(_settings(upstream, assistants=manifest, **overrides)))


def _ask(question: str, model: str = "support-agent", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": question}], **extra}


def _events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def _assert_openai_error(response: httpx.Response, status: int, type_: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_ and error["message"]
    assert response.headers["x-request-id"]
    return dict(error)


# --- models ------------------------------------------------------------------------------------------------


def test_models_lists_the_assistants_with_the_base_model_as_parent(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    assert set(cards) == {*ADAPTERS, "generic"}
    assert all(c["parent"] == BASE and c["object"] == "model" for c in cards.values())
    assert cards["generic"]["root"] == BASE and cards["support-agent"]["root"] == "support-agent"
    assert client.get("/v1/models/generic").json()["id"] == "generic"
    _assert_openai_error(client.get("/v1/models/gpt-4"), 404, "invalid_request_error")


# --- chat, not streamed --------------------------------------------------------------------------------------


def test_chat_grounds_the_prompt_and_returns_sources(client: httpx.Client, fresh_stub: Stub) -> None:
    response = client.post(
        "/v1/chat/completions",
        json=_ask(f"How much is the {PRODUCT.name}?", max_tokens=5000),
        headers={"x-request-id": "req-42"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "req-42"
    assert response.headers["server-timing"].startswith("retrieval;dur=")
    body = response.json()
    assert body["model"] == "support-agent"
    assert body["sources"][0]["id"] == PRODUCT.id and body["sources"][0]["name"] == PRODUCT.name
    assert body["choices"][0]["message"]["content"].startswith("[support-agent]")
    sent = fresh_stub.requests[-1]
    assert sent["model"] == "support-agent"
    assert sent["max_completion_tokens"] == 256  # capped by the manifest
    assert sent["temperature"] == 0  # the manifest's default
    system = sent["messages"][0]
    assert system["role"] == "system" and FACTS_OPEN in system["content"]
    assert format_price(PRODUCT.price, PRODUCT.currency) in system["content"]
    assert fresh_stub.headers[-1]["x-request-id"] == "req-42"


def test_base_model_assistant_gets_its_persona_and_the_client_system_text(
    client: httpx.Client, fresh_stub: Stub
) -> None:
    messages = [{"role": "system", "content": "Reply in French."}, {"role": "user", "content": "Any kettles?"}]
    response = client.post("/v1/chat/completions", json={"model": "generic", "messages": messages, "temperature": 0.7})
    assert response.status_code == 200 and response.json()["model"] == "generic"
    sent = fresh_stub.requests[-1]
    assert sent["model"] == BASE and sent["temperature"] == 0.7
    system = sent["messages"][0]["content"]
    assert system.index("coffee-equipment shop") < system.index("Reply in French.") < system.index(FACTS_OPEN)
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]


def test_an_unknown_product_is_signalled_to_the_model(client: httpx.Client, fresh_stub: Stub) -> None:
    response = client.post("/v1/chat/completions", json=_ask("How much is the Vellora Quantum V-999?"))
    assert response.status_code == 200
    system = fresh_stub.requests[-1]["messages"][0]["content"]
    assert NOT_IN_CATALOG in system
    assert len(response.json()["sources"]) <= 2


def test_a_follow_up_about_it_retrieves_the_product_named_before(client: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": f"How much is the {PRODUCT.name}?"},
        {"role": "assistant", "content": "It is on the list."},
        {"role": "user", "content": "Is it in stock?"},
    ]
    body = client.post("/v1/chat/completions", json={"model": "product-expert", "messages": messages}).json()
    assert body["sources"][0]["id"] == PRODUCT.id


# --- streaming -----------------------------------------------------------------------------------------------


def test_stream_relays_chunks_ends_with_done_and_puts_sources_on_the_final_chunk(client: httpx.Client) -> None:
    with client.stream("POST", "/v1/chat/completions", json=_ask(f"Price of {PRODUCT.name}?", stream=True)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-request-id"]
        events = _events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["model"] == "support-agent" for c in chunks)
    assert all("usage" not in c for c in chunks)  # the gateway asked for usage; the client did not
    assert chunks[-1]["choices"][0]["finish_reason"] and chunks[-1]["sources"][0]["id"] == PRODUCT.id
    assert "sources" not in chunks[0]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.startswith("[support-agent] tok1")


def test_stream_with_include_usage_ends_with_the_usage_chunk(client: httpx.Client) -> None:
    request = _ask("Any grinders?", model="generic", stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", json=request) as r:
        chunks = [json.loads(e) for e in _events(r)[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 16
    assert "sources" in chunks[-1] and chunks[-1]["model"] == "generic"


def test_stream_is_not_buffered(client: httpx.Client, fresh_stub: Stub) -> None:
    fresh_stub.config.tokens, fresh_stub.config.tokens_per_s = 6, 10.0
    arrivals = []
    with client.stream("POST", "/v1/chat/completions", json=_ask("Any kettles?", stream=True)) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    # Five pauses of 0.1 s upstream: chunks relayed as they come arrive spread out, not in one burst.
    assert arrivals[-2] - arrivals[0] >= 0.35, arrivals


def test_a_mid_stream_failure_becomes_an_error_event_then_done(client: httpx.Client, fresh_stub: Stub) -> None:
    fresh_stub.config.fail_after = 3
    with client.stream("POST", "/v1/chat/completions", json=_ask("Any kettles?", stream=True)) as r:
        assert r.status_code == 200
        events = _events(r)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "upstream_error" and error["code"] == "upstream_error"
    assert len(events) == 6  # role chunk, three tokens, the error, [DONE]


def test_an_upstream_error_event_is_normalised(client: httpx.Client, fresh_stub: Stub) -> None:
    fresh_stub.config.error_event_after = 2
    with client.stream("POST", "/v1/chat/completions", json=_ask("Any kettles?", stream=True)) as r:
        events = _events(r)
    error = json.loads(events[-2])["error"]
    assert error["type"] == "upstream_error" and "generation failed" in error["message"]
    assert events[-1] == "[DONE]"


def test_a_client_leaving_a_non_streamed_request_cancels_it_upstream(client: httpx.Client, fresh_stub: Stub) -> None:
    fresh_stub.config.ttft = 1.5
    before, completed = fresh_stub.cancelled, fresh_stub.completed
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json=_ask("Any kettles?"), timeout=0.4)
    deadline = time.monotonic() + 5
    while fresh_stub.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fresh_stub.cancelled == before + 1 and fresh_stub.completed == completed
    fresh_stub.config.ttft = 0.0
    assert client.post("/v1/chat/completions", json=_ask("Any kettles?")).status_code == 200


def test_a_client_disconnect_cancels_the_upstream_stream(client: httpx.Client, fresh_stub: Stub) -> None:
    fresh_stub.config.tokens, fresh_stub.config.tokens_per_s = 200, 20.0
    before = fresh_stub.cancelled
    with client.stream("POST", "/v1/chat/completions", json=_ask("Any kettles?", stream=True)) as r:
        for line in r.iter_lines():
            if "tok1" in line:
                break
    deadline = time.monotonic() + 5
    while fresh_stub.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fresh_stub.cancelled == before + 1
    metrics = client.get("/metrics").text
    assert 'lorag_client_disconnects_total{assistant="support-agent"}' in metrics


# --- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"model": "support-agent"}, "messages: Field required"),
        ({"model": "support-agent", "messages": []}, "messages: List should have at least 1 item"),
        ({"model": "support-agent", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({**_ask("x"), "max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({**_ask("x"), "n": 0}, "n: Input should be greater than or equal to 1"),
        ({**_ask("x"), "stream_options": {"include_usage": True}}, "stream_options is only allowed when stream"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model: Field required"),
    ],
)
def test_malformed_requests_are_400_naming_the_field(client: httpx.Client, body: dict[str, object], names: str) -> None:
    error = _assert_openai_error(client.post("/v1/chat/completions", json=body), 400, "invalid_request_error")
    assert names in str(error["message"])


def test_a_lone_surrogate_is_a_400_naming_the_field(client: httpx.Client) -> None:
    """Valid JSON, invalid Unicode: it used to reach the retriever's tokenizer and end as a 500."""
    for content in ('"How much is \\ud800 the kettle?"', '[{"type": "text", "text": "kettle \\udfff"}]'):
        body = f'{{"model": "support-agent", "messages": [{{"role": "user", "content": {content}}}]}}'.encode()
        response = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        error = _assert_openai_error(response, 400, "invalid_request_error")
        assert str(error["param"]).startswith("messages.0.content") and "surrogate" in str(error["message"])
    # NUL bytes and emoji (a surrogate pair in JSON) are valid text and are answered.
    text = '"kettle\\u0000 \\ud83d\\ude00"'
    ok = f'{{"model": "support-agent", "max_tokens": 4, "messages": [{{"role": "user", "content": {text}}}]}}'
    response = client.post("/v1/chat/completions", content=ok.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


def test_invalid_json_and_missing_body_are_400(client: httpx.Client) -> None:
    bad = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert "not valid JSON" in str(_assert_openai_error(bad, 400, "invalid_request_error")["message"])
    empty = client.post("/v1/chat/completions")
    assert "body is missing" in str(_assert_openai_error(empty, 400, "invalid_request_error")["message"])


def test_unknown_model_is_404_and_unknown_route_too(client: httpx.Client) -> None:
    error = _assert_openai_error(
        client.post("/v1/chat/completions", json=_ask("x", model="gpt-4")), 404, "invalid_request_error"
    )
    assert error["code"] == "model_not_found" and error["param"] == "model" and "support-agent" in str(error["message"])
    _assert_openai_error(client.get("/v1/nothing"), 404, "invalid_request_error")


def test_bodies_over_the_limit_are_413_with_or_without_content_length(client: httpx.Client) -> None:
    big = _ask("x" * 70_000)
    _assert_openai_error(client.post("/v1/chat/completions", json=big), 413, "invalid_request_error")
    chunked = client.post(
        "/v1/chat/completions", content=iter([json.dumps(big).encode()]), headers={"content-type": "application/json"}
    )
    _assert_openai_error(chunked, 413, "invalid_request_error")


@pytest.mark.parametrize("stream", [False, True])
def test_vllm_errors_are_normalised(client: httpx.Client, fresh_stub: Stub, stream: bool) -> None:
    fresh_stub.config.status = 400
    error = _assert_openai_error(
        client.post("/v1/chat/completions", json=_ask("x", stream=stream)), 400, "invalid_request_error"
    )
    assert "stub failure 400" in str(error["message"])
    fresh_stub.config.status = 500
    _assert_openai_error(client.post("/v1/chat/completions", json=_ask("x", stream=stream)), 502, "upstream_error")


def test_an_adapter_vllm_does_not_serve_is_502_and_not_ready(client: httpx.Client, fresh_stub: Stub) -> None:
    fresh_stub.config.adapters = ["product-expert", "sales-assistant"]
    error = _assert_openai_error(client.post("/v1/chat/completions", json=_ask("x")), 502, "upstream_error")
    assert error["code"] == "upstream_model_not_found"
    ready = client.get("/ready")
    # Without the admin key /ready says which check fails, not what it found (models, engine addresses).
    assert ready.status_code == 503 and ready.json()["checks"]["vllm"] == "failing"
    assert "support-agent" not in ready.text and "127.0.0.1" not in ready.text


def test_upstream_down_is_503(serve_app: Serve, tmp_path: Path) -> None:
    from tests.conftest import free_port

    with _plain_gateway(serve_app, tmp_path, f"http://127.0.0.1:{free_port()}") as url:
        for stream in (False, True):
            response = httpx.post(f"{url}/v1/chat/completions", json=_ask("x", model="plain", stream=stream))
            assert _assert_openai_error(response, 503, "service_unavailable")["code"] == "upstream_unavailable"
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        assert httpx.get(f"{url}/ready").status_code == 503


def test_upstream_timeout_is_504(serve_app: Serve, tmp_path: Path, stub: tuple[Stub, str], fresh_stub: Stub) -> None:
    fresh_stub.config.ttft = 1.0
    with _plain_gateway(serve_app, tmp_path, stub[1], upstream_read_timeout=0.3) as url:
        response = httpx.post(f"{url}/v1/chat/completions", json=_ask("x", model="plain"))
        assert _assert_openai_error(response, 504, "timeout_error")["code"] == "upstream_timeout"


# --- probes and metrics --------------------------------------------------------------------------------------


def test_ready_checks_vllm_and_qdrant(client: httpx.Client) -> None:
    response = client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"vllm": "ok", "qdrant": "ok"}


def test_metrics_count_per_assistant(client: httpx.Client) -> None:
    client.post("/v1/chat/completions", json=_ask("Any kettles?", model="sales-assistant"))
    with client.stream(
        "POST", "/v1/chat/completions", json=_ask("Any kettles?", model="sales-assistant", stream=True)
    ) as r:
        _events(r)
    client.post("/v1/chat/completions", json=_ask("x", model="nope"))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("lorag_requests_total", assistant="sales-assistant", stream="false") >= 1
    assert value("lorag_requests_total", assistant="sales-assistant", stream="true") >= 1
    assert value("lorag_errors_total", assistant="unknown", status="404") >= 1
    assert value("lorag_time_to_first_token_seconds_count", assistant="sales-assistant") >= 1
    assert value("lorag_request_duration_seconds_count", assistant="sales-assistant", stream="true") >= 1
    assert value("lorag_retrieval_duration_seconds_count", assistant="sales-assistant") >= 2
    assert value("lorag_prompt_tokens_total", assistant="sales-assistant") >= 20  # the stub counts 10 per request
    assert value("lorag_completion_tokens_total", assistant="sales-assistant") >= 32


# --- the official client -------------------------------------------------------------------------------------


def test_the_openai_client_works_against_the_gateway(gateway: str) -> None:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0) as client:
        assert {m.id for m in client.models.list().data} == {*ADAPTERS, "generic"}
        completion = client.chat.completions.create(
            model="sales-assistant", messages=[{"role": "user", "content": f"Is the {PRODUCT.name} in stock?"}]
        )
        assert (completion.model_extra or {})["sources"][0]["id"] == PRODUCT.id
        stream = client.chat.completions.create(
            model="sales-assistant",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.BadRequestError, match="messages.0.role"):
            client.chat.completions.create(model="generic", messages=[{"role": "wizard", "content": "hi"}])  # type: ignore[misc,list-item]
