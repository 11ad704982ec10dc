"""The forwarding policy and the assistants' engine options: unit tests of the request model and the manifest,
then the API tier (the whole gateway through TestClient, the stub upstream over an ASGI transport) for what
reaches vLLM and what comes back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import ValidationError

from server.assistants import Assistant, Registry
from server.errors import InvalidRequest
from server.prompt import retrieval_query
from server.protocol import ChatCompletionRequest, ChatMessage
from server.upstream import upstream_message
from tests.conftest import in_process_app
from tests.stub_upstream import Stub, StubConfig

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
QWEN3_MANIFEST = ROOT / "deploy" / "assistants.qwen3.yaml"
KWARGS = "chat_template_kwargs"
USER = [{"role": "user", "content": "How much is the Caffora Mill G-100?"}]
# What current OpenAI SDKs, LangChain and vLLM clients send besides the fields the gateway owns.
PASSED_ON: dict[str, Any] = {
    "temperature": 1,  # an int stays an int: forwarded as sent, not re-serialised through a model
    "reasoning_effort": "low",
    "prediction": {"type": "content", "content": "It costs"},
    "chat_template_kwargs": {"enable_thinking": True},
    "structured_outputs": {"choice": ["yes", "no"]},
    "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "logprobs": True,
    "top_logprobs": 2,
    "some_future_vllm_field": [1, {"x": None}],
}


def _request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": USER, **fields})


# --- the request model ---------------------------------------------------------------------------------------


def test_fields_the_gateway_does_not_own_are_forwarded_as_sent() -> None:
    request = _request(**PASSED_ON, n=2, store=True, metadata={"a": "b"}, service_tier="auto", seed=None)
    forwarded = request.forwarded()
    assert forwarded == {**PASSED_ON, "n": 2}  # store, metadata, service_tier and a null seed left out
    assert type(forwarded["temperature"]) is int


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"n": 0}, "n"),
        ({"stream": "sometimes"}, "stream"),
    ],
)
def test_what_is_wrong_for_any_engine_is_still_refused_here(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ValidationError) as refused:
        _request(**fields)
    assert ".".join(str(p) for p in refused.value.errors()[0]["loc"]) == param


def test_unknown_stream_options_are_kept_for_vllm() -> None:
    request = _request(stream=True, stream_options={"include_usage": True, "include_obfuscation": False})
    assert request.stream_options is not None
    assert request.stream_options.model_dump(exclude_none=True) == {"include_usage": True, "include_obfuscation": False}


def test_reasoning_in_the_history_is_never_searched_as_the_answer() -> None:
    messages = [
        ChatMessage(role="user", content="Which grinder would you pick?"),
        ChatMessage.model_validate(
            {
                "role": "assistant",
                "content": "<think>Maybe the Caffora Mill G-100.</think>Hard to say.",
                "reasoning": "",
            }
        ),
        ChatMessage(role="user", content="Is it in stock?"),
    ]
    query = retrieval_query(messages)
    assert "Caffora" not in query and "Is it in stock?" in query


# --- the assistants' engine options --------------------------------------------------------------------------


def _assistant(**options: Any) -> Assistant:
    return Assistant.model_validate({"name": "a", "adapter": None, **options})


def test_defaults_fill_what_the_client_left_unset_and_template_kwargs_merge_by_key() -> None:
    assistant = _assistant(
        sampling={"temperature": 0.2, "top_p": 0.9},
        chat_template_kwargs={"enable_thinking": False, "keep": 1},
        max_tokens=64,
    )
    fields = assistant.engine_fields({"temperature": 0.7, "chat_template_kwargs": {"enable_thinking": True}}, 500)
    assert fields == {
        "temperature": 0.7,
        "top_p": 0.9,
        "chat_template_kwargs": {"enable_thinking": True, "keep": 1},
        "max_completion_tokens": 64,  # the cap
    }
    assert assistant.engine_fields({}, None) == {
        "temperature": 0.2,
        "top_p": 0.9,
        "chat_template_kwargs": {"enable_thinking": False, "keep": 1},
        "max_completion_tokens": 64,  # the default
    }
    assert "chat_template_kwargs" not in _assistant().engine_fields({}, 8)


@pytest.mark.parametrize(
    ("locked", "forwarded", "wanted", "param"),
    [
        ("sampling", {"temperature": 0.9}, None, "temperature"),
        (
            "chat_template_kwargs",
            {"chat_template_kwargs": {"enable_thinking": True}},
            None,
            f"{KWARGS}.enable_thinking",
        ),
        ("max_tokens", {}, 10, "max_tokens"),
    ],
)
def test_a_locked_option_is_a_400_naming_the_field(
    locked: str, forwarded: dict[str, Any], wanted: int | None, param: str
) -> None:
    assistant = _assistant(
        sampling={"temperature": 0},
        chat_template_kwargs={"enable_thinking": False},
        max_tokens=32,
        client_overrides={locked: False},
    )
    with pytest.raises(InvalidRequest) as refused:
        assistant.engine_fields(forwarded, wanted)
    assert refused.value.param == param and "leave it unset" in refused.value.message
    # The same value, or a key the manifest does not set, is no override.
    same = {"temperature": 0, "top_k": 3, "chat_template_kwargs": {"enable_thinking": False, "other": 1}}
    assert assistant.engine_fields(same, 32)["chat_template_kwargs"] == {"enable_thinking": False, "other": 1}


def test_template_kwargs_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="must be an object"):
        _assistant(chat_template_kwargs={"enable_thinking": False}).engine_fields({"chat_template_kwargs": [1]}, None)


def test_the_qwen3_manifest_turns_thinking_off_for_the_shop_assistants() -> None:
    registry = Registry.from_file(QWEN3_MANIFEST)
    shop = [a for a in registry if a.retrieval.enabled]
    assert shop and all(a.chat_template_kwargs == {"enable_thinking": False} for a in shop)
    assert all(a.engine_fields({}, None)["chat_template_kwargs"]["enable_thinking"] is False for a in shop)


def test_vllms_param_is_named_from_the_body_the_client_wrote() -> None:
    refusal = {"error": {"message": "1 validation error: ...", "param": "body.top_k", "code": 400}}
    assert upstream_message(json.dumps(refusal).encode()) == ("1 validation error: ...", "top_k")


def test_the_gpu_engine_parses_qwen3s_reasoning_and_tool_calls() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["x-vllm"]["command"]
    assert "--model=Qwen/Qwen3-8B" in command and "--reasoning-parser=qwen3" in command
    assert "--enable-auto-tool-choice" in command and "--tool-call-parser=hermes" in command


# --- the API tier ------------------------------------------------------------------------------------------

MANIFEST = """\
base_model: stub-model
assistants:
  - name: shop
    adapter: null
    retrieval: {enabled: false}
    persona: You sell coffee gear.
    sampling: {temperature: 0.2}
    chat_template_kwargs: {enable_thinking: false}
    max_tokens: 16
  - name: strict
    adapter: null
    retrieval: {enabled: false}
    chat_template_kwargs: {enable_thinking: false}
    client_overrides: {chat_template_kwargs: false}
    max_tokens: 16
"""


@pytest.fixture
def stub() -> Stub:
    return Stub(StubConfig(tokens=4))


@pytest.fixture
def client(tmp_path: Path, stub: Stub) -> Iterator[TestClient]:
    with TestClient(in_process_app(tmp_path, MANIFEST, stub.app, max_body_bytes=16 * 1024)) as client:
        yield client


@pytest.mark.api
def test_every_field_reaches_vllm_as_sent_next_to_the_gateways_own(client: TestClient, stub: Stub) -> None:
    body = {"model": "shop", "messages": USER, "max_tokens": 99, **PASSED_ON}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    sent = stub.requests[-1]
    assert {k: sent[k] for k in PASSED_ON} == PASSED_ON
    assert sent["model"] == "stub-model" and sent["max_completion_tokens"] == 16 and "max_tokens" not in sent
    assert sent["messages"][0] == {"role": "system", "content": "You sell coffee gear."}
    # The manifest's template kwargs are defaults too: absent from the request, they are the assistant's.
    client.post("/v1/chat/completions", json={"model": "shop", "messages": USER})
    assert stub.requests[-1]["chat_template_kwargs"] == {"enable_thinking": False}
    assert stub.requests[-1]["temperature"] == 0.2


@pytest.mark.api
def test_vllms_own_400_comes_back_in_openai_shape_naming_the_field(client: TestClient, stub: Stub) -> None:
    stub.config.status, stub.config.error_param = 400, "top_k"
    response = client.post("/v1/chat/completions", json={"model": "shop", "messages": USER, "top_k": "many"})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "stub failure 400",
        "type": "invalid_request_error",
        "param": "top_k",
        "code": "invalid_value",
    }


@pytest.mark.api
def test_a_locked_option_is_refused_before_anything_reaches_vllm(client: TestClient, stub: Stub) -> None:
    body = {"model": "strict", "messages": USER, "chat_template_kwargs": {"enable_thinking": True}}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "chat_template_kwargs.enable_thinking"
    assert not stub.requests


@pytest.mark.api
def test_the_size_limit_covers_forwarded_fields(client: TestClient, stub: Stub) -> None:
    tools = [{"type": "function", "function": {"name": f"f{i}", "description": "x" * 200}} for i in range(100)]
    response = client.post("/v1/chat/completions", json={"model": "shop", "messages": USER, "tools": tools})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert not stub.requests


@pytest.mark.api
def test_a_recorded_reasoning_stream_is_relayed_unchanged(client: TestClient, stub: Stub) -> None:
    """vLLM's `--reasoning-parser qwen3` stream (recorded): the `reasoning` deltas reach the client as sent."""
    # Recorded under the adapter's name; here the stub serves the base model, which the gateway renames.
    lines = _sse_lines(FIXTURES / "qwen3_reasoning_stream.sse")
    recorded = [line[6:].replace('"model":"plumb-a"', '"model":"stub-model"').encode() for line in lines]
    stub.config.replay = recorded
    body = {"model": "shop", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    upstream = [json.loads(r) for r in recorded if r != b"[DONE]"]
    assert len(chunks) == len(upstream)
    for sent, got in zip(upstream, chunks, strict=True):
        assert got["choices"] == sent["choices"] and got["model"] == "shop"
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning") or "" for c in chunks if c["choices"])
    answer = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    # Relayed as sent: no thinking moved into (or scanned as) the answer.
    assert reasoning and not answer


def _sse_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("data: ")]
