"""API keys, tenants and limits: who gets in, what each tenant sees, and the 429s and 400/413s of the limits.

The gateway runs on real sockets (uvicorn in a thread) over the stub upstream, and is called with httpx and with
the official `openai` client."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from lorag.cli import main as lorag
from server.app import create_app
from server.keys import KeyLimits, KeyRing, KeysFile, hash_secret, new_key, verify_secret, write_keys_file
from server.settings import GatewaySettings
from tests.stub_upstream import Stub, StubConfig
from tests.test_hotswap import Serve

pytestmark = pytest.mark.api

MANIFEST = """\
base_model: stub-model
assistants:
  - {name: acme-support, adapter: null, retrieval: {enabled: false}, max_tokens: 32}
  - name: acme-sales
    adapter: null
    retrieval: {enabled: false}
    max_tokens: 32
    limits: {max_body_bytes: 1500, max_messages: 3, max_message_chars: 200, max_tokens: 16}
  - {name: globex-support, adapter: null, retrieval: {enabled: false}, max_tokens: 32}
"""
ADMIN = "admin-secret-key"


class Keys:
    """Tokens by role, written to a keys file the way `lorag keys create` writes them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = KeysFile()
        self.acme = self.add("acme", ["acme-support", "acme-sales"])
        self.globex = self.add("globex", ["globex-support"])
        self.limited = self.add("acme", ["acme-support"], requests_per_minute=3)
        self.tokens = self.add("acme", ["acme-support"], tokens_per_minute=30)
        self.streams = self.add("acme", ["acme-support"], concurrent_streams=1)

    def add(self, tenant: str, assistants: list[str], **limits: Any) -> str:
        token, record = new_key(tenant, assistants, KeyLimits(**limits))
        self.file.keys.append(record)
        write_keys_file(self.path, self.file)
        return token


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys.json")


@pytest.fixture
def stub() -> Stub:
    return Stub(StubConfig(tokens=4))  # usage: 10 prompt + 4 completion tokens per answer


@pytest.fixture
def gateway(serve_app: Serve, tmp_path: Path, keys: Keys, stub: Stub) -> Iterator[str]:
    (tmp_path / "assistants.yaml").write_text(MANIFEST)
    settings = GatewaySettings(  # type: ignore[call-arg]
        _env_file=None,
        assistants=tmp_path / "assistants.yaml",
        upstream_url="http://vllm.test",
        state_file=tmp_path / "adapters.json",
        api_keys_file=keys.path,
        admin_key=ADMIN,
    )
    with serve_app(create_app(settings, upstream_transport=httpx.ASGITransport(app=stub.app))) as url:
        yield url


def _chat(url: str, token: str | None, model: str, **extra: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    return error


def test_secrets_are_stored_hashed_and_checked_exactly(keys: Keys) -> None:
    stored = keys.path.read_text()
    for token in (keys.acme, keys.globex):
        assert token.split("_", 2)[2] not in stored  # the secret part never reaches the file
    digest = hash_secret("s3cret")
    assert verify_secret(digest, "s3cret") and not verify_secret(digest, "s3creT")
    assert hash_secret("s3cret") != digest  # salted: equal secrets do not hash alike
    ring = KeyRing(keys.path)
    assert ring.authenticate(f"Bearer {keys.acme}").tenant == "acme"
    prefix, key_id, secret = keys.acme.split("_", 2)
    for bad in (f"Bearer {prefix}_{key_id}_{secret}x", f"Bearer {prefix}_ffffffffffff_{secret}", keys.acme, ""):
        with pytest.raises(Exception, match="Incorrect API key"):
            ring.authenticate(bad)


def test_the_command_line_creates_lists_and_revokes_and_prints_the_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cli-keys.json"
    assert lorag(["keys", "create", "--file", str(path), "--tenant", "acme", "--assistants", "a,b", "--rpm", "5"]) == 0
    token = capsys.readouterr().out.strip()
    record = json.loads(path.read_text())["keys"][0]
    assert token.startswith(f"lorag_{record['id']}_") and token not in path.read_text()
    assert record["assistants"] == ["a", "b"] and record["limits"]["requests_per_minute"] == 5
    assert lorag(["keys", "list", "--file", str(path)]) == 0
    listing = capsys.readouterr().out
    assert record["id"] in listing and "active" in listing and token not in listing
    assert lorag(["keys", "revoke", "--file", str(path), record["id"]]) == 0
    with pytest.raises(Exception, match="Incorrect API key"):
        KeyRing(path).authenticate(f"Bearer {token}")
    assert lorag(["keys", "revoke", "--file", str(path), "nope"]) == 1


def test_no_key_or_a_wrong_one_is_401_and_models_lists_only_the_tenants_assistants(gateway: str, keys: Keys) -> None:
    _error(_chat(gateway, None, "acme-support"), 401, "invalid_api_key")
    _error(_chat(gateway, "lorag_0123456789ab_nope", "acme-support"), 401, "invalid_api_key")
    assert httpx.get(f"{gateway}/v1/models").status_code == 401
    ids = [
        m["id"]
        for m in httpx.get(f"{gateway}/v1/models", headers={"authorization": f"Bearer {keys.acme}"}).json()["data"]
    ]
    assert ids == ["acme-support", "acme-sales"]
    assert _chat(gateway, keys.acme, "acme-support").status_code == 200
    assert httpx.get(f"{gateway}/health").status_code == 200  # probes stay open


def test_another_tenants_assistant_is_a_404_exactly_like_an_unknown_one(gateway: str, keys: Keys) -> None:
    theirs = _chat(gateway, keys.acme, "globex-support")
    unknown = _chat(gateway, keys.acme, "globex-supporx")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["message"].replace("globex-support", "X") == unknown.json()["error"][
        "message"
    ].replace("globex-supporx", "X")
    assert "globex" not in theirs.json()["error"]["message"].replace("'globex-support'", "")
    card = httpx.get(f"{gateway}/v1/models/globex-support", headers={"authorization": f"Bearer {keys.acme}"})
    _error(card, 404, "model_not_found")
    assert _chat(gateway, keys.globex, "globex-support").status_code == 200


def test_admin_routes_never_take_a_chat_key_nor_chat_routes_the_admin_key(gateway: str, keys: Keys) -> None:
    for token in (keys.acme, keys.globex):
        response = httpx.get(f"{gateway}/admin/adapters", headers={"authorization": f"Bearer {token}"})
        _error(response, 401, "invalid_api_key")
    assert httpx.get(f"{gateway}/admin/adapters", headers={"authorization": f"Bearer {ADMIN}"}).status_code == 200
    _error(_chat(gateway, ADMIN, "acme-support"), 401, "invalid_api_key")


def test_a_revoked_key_is_refused_without_a_restart(gateway: str, keys: Keys) -> None:
    assert _chat(gateway, keys.globex, "globex-support").status_code == 200
    key_id = keys.globex.split("_")[1]
    next(k for k in keys.file.keys if k.id == key_id).revoked = True
    time.sleep(0.02)  # a later modification time than the file's first write
    write_keys_file(keys.path, keys.file)
    deadline = time.monotonic() + 5
    while _chat(gateway, keys.globex, "globex-support").status_code == 200:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.2)
    _error(_chat(gateway, keys.globex, "globex-support"), 401, "invalid_api_key")


def test_requests_per_minute_is_a_429_with_retry_after(gateway: str, keys: Keys) -> None:
    assert [_chat(gateway, keys.limited, "acme-support").status_code for _ in range(3)] == [200] * 3
    refused = _chat(gateway, keys.limited, "acme-support")
    error = _error(refused, 429, "rate_limit_exceeded")
    assert "requests_per_minute" in error["message"] and 1 <= int(refused.headers["retry-after"]) <= 60
    assert _chat(gateway, keys.acme, "acme-support").status_code == 200  # another key is not slowed down


def test_tokens_per_minute_counts_vllms_usage_streamed_or_not(gateway: str, keys: Keys) -> None:
    # 14 tokens an answer (10 prompt + 4 completion): after 28 the key is under 30, after 42 over.
    assert _chat(gateway, keys.tokens, "acme-support").status_code == 200
    streamed = _chat(gateway, keys.tokens, "acme-support", stream=True)  # the client asks for no usage
    assert streamed.status_code == 200 and "usage" not in streamed.text
    assert _chat(gateway, keys.tokens, "acme-support").status_code == 200
    refused = _chat(gateway, keys.tokens, "acme-support")
    assert "tokens_per_minute" in _error(refused, 429, "tokens_rate_limit_exceeded")["message"]
    assert int(refused.headers["retry-after"]) >= 1


def test_concurrent_streams_per_key(gateway: str, keys: Keys, stub: Stub) -> None:
    stub.config.tokens_per_s = 4  # one stream takes about a second
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(_chat, gateway, keys.streams, "acme-support", stream=True)
        time.sleep(0.4)
        second = _chat(gateway, keys.streams, "acme-support", stream=True)
        plain = _chat(gateway, keys.streams, "acme-support")  # a non-streamed request takes no stream slot
        assert first.result().status_code == 200 and first.result().text.endswith("data: [DONE]\n\n")
    _error(second, 429, "concurrency_limit_exceeded")
    assert plain.status_code == 200
    assert _chat(gateway, keys.streams, "acme-support", stream=True).status_code == 200  # the slot came back


@pytest.mark.parametrize(
    ("extra", "status", "param", "limit"),
    [
        ({"messages": [{"role": "user", "content": "hi"}] * 4}, 400, "messages", "max_messages"),
        ({"messages": [{"role": "user", "content": "x" * 201}]}, 400, "messages.0.content", "max_message_chars"),
        ({"max_tokens": 17}, 400, "max_tokens", "max_tokens"),
        ({"messages": [{"role": "user", "content": "y" * 190}] * 3, "user": "z" * 1000}, 413, None, "max_body_bytes"),
    ],
)
def test_an_assistants_caps_are_400_or_413_naming_the_limit(
    gateway: str, keys: Keys, stub: Stub, extra: dict[str, Any], status: int, param: str | None, limit: str
) -> None:
    response = _chat(gateway, keys.acme, "acme-sales", **extra)
    error = _error(response, status, "limit_exceeded" if status == 400 else "request_too_large")
    assert f"limits.{limit}" in error["message"] and error["param"] == param
    assert not stub.requests
    assert _chat(gateway, keys.acme, "acme-support", **extra).status_code == 200  # the cap is that assistant's


def test_keys_and_tenants_through_the_openai_client(gateway: str, keys: Keys) -> None:
    acme = openai.OpenAI(base_url=f"{gateway}/v1", api_key=keys.acme, max_retries=0)
    assert [m.id for m in acme.models.list()] == ["acme-support", "acme-sales"]
    answer = acme.chat.completions.create(model="acme-support", messages=[{"role": "user", "content": "hi"}])
    assert answer.model == "acme-support" and answer.choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        acme.chat.completions.create(model="globex-support", messages=[{"role": "user", "content": "hi"}])
    stranger = openai.OpenAI(base_url=f"{gateway}/v1", api_key="lorag_0123456789ab_guess", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    limited = openai.OpenAI(base_url=f"{gateway}/v1", api_key=keys.limited, max_retries=0)
    for _ in range(3):
        limited.chat.completions.create(model="acme-support", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as info:
        limited.chat.completions.create(model="acme-support", messages=[{"role": "user", "content": "hi"}])
    assert info.value.response.headers["retry-after"]
