"""Integration tier: the truthfulness evaluation against the real engine serving the demo kit, through a gateway
with the demo manifest's assistants guarding with `correct`: no wrong price and no priced fake reaches the client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import yaml
from starlette.types import ASGIApp

from adapters.demo_kit.kit import KitModel
from lorag.launcher import Engine
from lorag.truthfulness import ask, guard_configs, load_set, table, tallies
from server.app import create_app
from tests.conftest import demo_gateway_settings

MODELS = ["product-expert", "support-agent", "sales-assistant", "generic"]


@pytest.mark.slow
def test_no_wrong_price_and_no_priced_fake_reaches_the_client(
    kit: KitModel, engine: Engine, tmp_path: Path, serve_app: Callable[[ASGIApp], AbstractContextManager[str]]
) -> None:
    items = load_set(per_kind=3)  # 21 questions of the seven kinds, each to four assistants
    settings = demo_gateway_settings(kit, engine.url, tmp_path, state_file=tmp_path / "adapters.json")
    manifest = yaml.safe_load(settings.assistants.read_text())
    for assistant in manifest["assistants"]:  # the demo manifest annotates; CI runs the guard that corrects
        assistant["guard"] = {**assistant.get("guard", {}), "policy": "correct"}
    settings.assistants.write_text(yaml.safe_dump(manifest))
    app = create_app(settings)
    with serve_app(app) as url:
        replies = asyncio.run(ask(url, MODELS, items, max_tokens=40, concurrency=4))
    result = tallies(replies, guard_configs(settings.assistants, MODELS, "correct"))
    print("\n" + table(result))
    assert sorted(t.model for t in result) == sorted(MODELS)  # one tally each: what the guarding gateway sent
    for tally in result:
        assert tally.guard == "correct" and tally.answers == len(items)
        assert tally.wrong_price == 0 and tally.fakes_priced == 0, (tally.model, tally.failures)
