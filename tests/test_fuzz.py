"""Property-based fuzzing of the gateway's OpenAPI schema (schemathesis): generated requests, valid and not, to
every route with keys and limits on; no answer may be a 5xx, and every error is in OpenAI's shape.

The gateway runs on real sockets over the stub upstream. Examples are bounded (FUZZ_EXAMPLES per operation), so
the run takes about a minute on 2 cores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.app import create_app
from server.keys import KeyLimits, KeysFile, new_key, write_keys_file
from server.settings import GatewaySettings
from tests.conftest import _serve_in_thread
from tests.stub_upstream import Stub, StubConfig

pytestmark = [pytest.mark.api, pytest.mark.slow]

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
MANIFEST = """\
base_model: stub-model
assistants:
  - {name: helper, adapter: null, retrieval: {enabled: false}, max_tokens: 8,
     limits: {max_messages: 8, max_message_chars: 2000, max_tokens: 8}}
  - {name: other, adapter: null, retrieval: {enabled: false}, max_tokens: 8}
"""
ADMIN = "fuzz-admin-key"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    work = tmp_path_factory.mktemp("fuzz")
    (work / "assistants.yaml").write_text(MANIFEST)
    token, record = new_key("acme", ["helper"], KeyLimits(requests_per_minute=100_000, concurrent_streams=4))
    write_keys_file(work / "keys.json", KeysFile(keys=[record]))
    options: dict[str, Any] = {
        "assistants": work / "assistants.yaml",
        "upstream_url": "http://vllm.test",
        "state_file": work / "adapters.json",
        "api_keys_file": work / "keys.json",
        "admin_key": ADMIN,
        "adapter_roots": [work],
        "max_body_bytes": 64 * 1024,
    }
    settings_ = GatewaySettings(_env_file=None, **options)  # type: ignore[call-arg]
    stub = Stub(StubConfig(tokens=2))
    with _serve_in_thread(create_app(settings_, upstream_transport=httpx.ASGITransport(app=stub.app))) as url:
        yield url, token


def _schema() -> Any:
    """The gateway's OpenAPI schema, read from an app that is built but not started (no lifespan needed)."""
    settings_ = GatewaySettings(_env_file=None, upstream_url="http://vllm.test")  # type: ignore[call-arg]
    return schemathesis.openapi.from_dict(create_app(settings_).openapi())


SCHEMA = _schema()
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_5xx_and_every_error_in_openai_shape(label: str, gateway: tuple[str, str]) -> None:
    url, token = gateway
    key = ADMIN if " /admin" in label else token

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=OPERATIONS[label].as_strategy(), model=st.sampled_from([None, "helper", "other"]))
    def check(case: Any, model: str | None) -> None:
        # Random model names are all 404s: most requests name a real assistant (`other` is not this key's).
        if model is not None and isinstance(case.body, dict):
            case.body["model"] = model
        response = case.call(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30)
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
        if response.status_code >= 400:
            body = response.json()
            assert set(body) >= {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
            assert isinstance(body["error"]["message"], str) and body["error"]["message"]

    check()
