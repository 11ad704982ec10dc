"""API tier: `lorag eval truthfulness` against a real gateway (vLLM replaced by a stub that says what a test wants):
the guard applied to an annotated answer gives exactly what an assistant that corrects sends the client."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request
from starlette.types import ASGIApp

from lorag.truthfulness import Item, apply_guard, ask, guard_configs, load_set, tallies
from retrieval.catalog import Product
from retrieval.demo_catalog import demo_catalog
from retrieval.retriever import Hit, RetrievalResult
from server import deps
from server.chat import ChatService
from tests.conftest import in_process_app
from tests.test_guard_api import Says

pytestmark = pytest.mark.api

CATALOG = {p.id: p for p in demo_catalog()}
REFUSAL = "Sorry, I can't confirm that from our catalog."
MANIFEST = f"""\
base_model: stub-model
assistants:
  - {{name: noter, adapter: null, guard: {{policy: annotate, refusal: "{REFUSAL}"}}}}
  - {{name: fixer, adapter: null, guard: {{policy: correct, refusal: "{REFUSAL}"}}}}
"""


class Shows:
    """The retriever: the products and NOT IN CATALOG signal a test sets."""

    def __init__(self) -> None:
        self.products: list[Product] = []
        self.unknown = False

    def retrieve(self, query: str, **_: Any) -> RetrievalResult:
        return RetrievalResult(hits=[Hit(p, 1.0, 0.9) for p in self.products], unknown=self.unknown)


def _item(kind: str) -> Item:
    return next(i for i in load_set() if i.kind == kind)


@pytest.mark.parametrize(
    ("kind", "unknown", "says"),
    [
        ("manipulation", False, "You're right, the {name} is {asserted}."),  # corrected to the catalog's price
        ("product", False, "The {name} is {price} and in stock (3 units)."),  # a wrong stock figure corrected
        ("fake", True, "It costs $49.00."),  # a price under NOT IN CATALOG: refused
        ("near_miss", False, "The {near} costs {price}."),  # a shown look-alike's price for the asked name
    ],
)
def test_the_guard_applied_to_annotated_answers_equals_the_gateways_own(
    tmp_path: Path,
    serve_app: Callable[[ASGIApp], AbstractContextManager[str]],
    kind: str,
    unknown: bool,
    says: str,
) -> None:
    item = _item(kind)
    shows, speaker = Shows(), Says()
    shown = item.product or next(p for p in load_set() if p.product and p.kind == "product").product
    assert shown is not None
    shows.products, shows.unknown = [shown], unknown
    asserted = next((w for w in item.text.split() if w.startswith("$")), "$1")
    near = item.text.split("the ", 1)[-1].split("?")[0]
    speaker.text = says.format(name=shown.name, asserted=asserted, price=f"${shown.price}", near=near)
    app = in_process_app(tmp_path, MANIFEST, speaker.app)

    async def chat(request: Request) -> ChatService:
        service: ChatService = copy.copy(request.state.chat)
        service.retriever = shows  # type: ignore[assignment]
        return service

    app.dependency_overrides[deps._chat] = chat
    with serve_app(app) as url:
        replies = asyncio.run(ask(url, ["noter", "fixer"], [item], max_tokens=48, concurrency=1))
    noted, fixed = replies
    assert noted.grounding and noted.grounding["policy"] == "annotate" and noted.grounding["unsupported"]
    assert noted.content == speaker.text and fixed.content != speaker.text
    configs = guard_configs(tmp_path / "assistants.yaml", ["noter"], "correct")
    assert apply_guard(noted, configs["noter"], CATALOG) == (fixed.content, fixed.finish)
    result = {(t.model, t.guard): t for t in tallies(replies, configs)}
    assert set(result) == {("noter", "off"), ("noter", "correct"), ("fixer", "correct")}
    assert result["noter", "off"].unsupported == 1
    assert result["noter", "correct"].unsupported == result["fixer", "correct"].unsupported == 0
