"""Adapter hot-swap without an engine: validation, the state file, the admin API's rules and bookkeeping.

The engines here are small in-process fakes of vLLM's model list, LoRA load/unload and completion routes, so
every rule can be checked quickly; tests/test_hotswap_engine.py runs the same operations against real vLLM.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import save_file
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from adapters.state import BOOT, DesiredState, StateFile, seed_boot_adapters
from adapters.validation import AdapterInvalid, validate_adapter
from server.app import create_app
from server.settings import GatewaySettings

Serve = Callable[[ASGIApp], AbstractContextManager[str]]
BASE = "tiny-base"
KEY = "s3cret"
MANIFEST = f"""
base_model: {BASE}
assistants:
  - {{name: helper, adapter: helper, retrieval: {{enabled: false}}, max_tokens: 4}}
  - {{name: other, adapter: other, retrieval: {{enabled: false}}, max_tokens: 4}}
"""


def make_adapter(path: Path, rank: int = 8, base: str = BASE, seed: int = 0, **config: Any) -> Path:
    """A PEFT-shaped LoRA adapter directory with random weights."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "base_model_name_or_path": base, **config}
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(seed)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {
            f"{prefix}.lora_A.weight": rng.standard_normal((rank, 32)).astype(np.float32),
            f"{prefix}.lora_B.weight": rng.standard_normal((32, rank)).astype(np.float32),
        },
        str(path / "adapter_model.safetensors"),
    )
    return path


# --- validation -----------------------------------------------------------------------------------------------


def test_a_valid_adapter_is_hashed_by_content(tmp_path: Path) -> None:
    one = validate_adapter(make_adapter(tmp_path / "a"), [tmp_path], [BASE], 16)
    same = validate_adapter(make_adapter(tmp_path / "b"), [tmp_path], [BASE], 16)
    other = validate_adapter(make_adapter(tmp_path / "c", seed=1), [tmp_path], [BASE], 16)
    assert one.rank == 8 and one.path == (tmp_path / "a").resolve()
    assert one.digest == same.digest != other.digest and len(one.short_hash) == 8


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root, out: str(root / "missing"), "does not exist"),
        (lambda root, out: str(root / ".." / out.name / "adapter"), "outside the allowed roots"),
        (lambda root, out: str(_link(root / "link", out / "adapter")), "outside the allowed roots"),
        (lambda root, out: str(make_adapter(root / "hi", rank=32)), "exceeds the engine's max_lora_rank 16"),
        (lambda root, out: str(make_adapter(root / "qwen", base="Qwen/Qwen3-8B")), "trained on 'Qwen/Qwen3-8B'"),
        (lambda root, out: str(make_adapter(root / "ia3", peft_type="IA3")), "only LORA adapters"),
        (lambda root, out: str(_without(make_adapter(root / "nocfg"), "adapter_config.json")), "no adapter_config"),
        (lambda root, out: str(_without(make_adapter(root / "now"), "adapter_model.safetensors")), "has no weights"),
        (lambda root, out: str(_garbage(make_adapter(root / "bad"))), "cannot be read"),
        (lambda root, out: str(_link(root / "ln", out / "adapter", inner=True)), "outside the allowed roots"),
    ],
    ids=[
        "missing",
        "traversal",
        "symlink-dir",
        "rank",
        "base",
        "not-lora",
        "no-config",
        "no-weights",
        "garbage",
        "symlink-file",
    ],
)
def test_bad_adapters_are_refused_with_the_reason(
    tmp_path: Path, setup: Callable[[Path, Path], str], message: str
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    make_adapter(outside / "adapter")
    with pytest.raises(AdapterInvalid, match=message):
        validate_adapter(setup(root, outside), [root], [BASE], 16)


def _link(link: Path, target: Path, inner: bool = False) -> Path:
    if inner:  # a directory inside the root whose weights file links outside it
        make_adapter(link)
        (link / "adapter_model.safetensors").unlink()
        (link / "adapter_model.safetensors").symlink_to(target / "adapter_model.safetensors")
        return link
    link.symlink_to(target, target_is_directory=True)
    return link


def _without(path: Path, name: str) -> Path:
    (path / name).unlink()
    return path


def _garbage(path: Path) -> Path:
    (path / "adapter_model.safetensors").write_bytes(b"\x00" * 7)
    return path


def test_base_model_matches_by_id_or_directory_name(tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "a", base="build/demo-kit/base")
    assert validate_adapter(adapter, [tmp_path], ["/srv/kit/base"], 16).base_model == "build/demo-kit/base"


# --- state file -----------------------------------------------------------------------------------------------


def test_state_file_round_trips_and_seeds_boot_versions(tmp_path: Path) -> None:
    file = StateFile(tmp_path / "state" / "adapters.json")
    state = file.load()
    assert state == DesiredState()
    assert seed_boot_adapters(state, ["helper"]) and not seed_boot_adapters(state, ["helper"])
    file.save(state)
    again = file.load()
    assert again.adapters["helper"].active == BOOT and again.adapters["helper"].active_served_name() == "helper"
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["adapters.json"]  # no temp file left


# --- a fake engine ----------------------------------------------------------------------------------------------


class FakeEngine:
    """vLLM's model list, runtime LoRA routes and a completion that says which model answered."""

    def __init__(self, adapters: dict[str, str]) -> None:
        self.adapters = dict(adapters)
        self.calls: list[str] = []
        self.overloaded = False
        self.answered = 0
        self.app = Starlette(
            routes=[
                Route("/v1/models", self.models),
                Route("/v1/load_lora_adapter", self.load, methods=["POST"]),
                Route("/v1/unload_lora_adapter", self.unload, methods=["POST"]),
                Route("/v1/completions", self.complete, methods=["POST"]),
                Route("/v1/chat/completions", self.complete, methods=["POST"]),
            ]
        )

    async def models(self, request: Request) -> JSONResponse:
        cards = [{"id": BASE, "root": f"/models/{BASE}", "parent": None}]
        cards += [{"id": name, "root": path, "parent": BASE} for name, path in self.adapters.items()]
        return JSONResponse({"object": "list", "data": cards})

    async def load(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.calls.append(f"load {body['lora_name']}")
        if body["lora_name"] in self.adapters:
            return JSONResponse({"error": {"message": "already loaded"}}, status_code=400)
        self.adapters[body["lora_name"]] = body["lora_path"]
        return JSONResponse("ok")

    async def unload(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.calls.append(f"unload {body['lora_name']}")
        if self.adapters.pop(body["lora_name"], None) is None:
            return JSONResponse({"error": {"message": "not found"}}, status_code=404)
        return JSONResponse("ok")

    async def complete(self, request: Request) -> JSONResponse:
        model = (await request.json())["model"]
        if self.overloaded:
            return JSONResponse({"error": {"message": "too many requests"}}, status_code=503)
        self.answered += 1
        if model != BASE and model not in self.adapters:
            return JSONResponse({"error": {"message": f"model {model} not found"}}, status_code=404)
        message = {"role": "assistant", "content": f"answered by {model}"}
        return JSONResponse(
            {
                "id": "x",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        )


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "adapters"
    make_adapter(root / "helper-v1", seed=1)
    make_adapter(root / "helper-v2", seed=2)
    return root


@pytest.fixture
def engine(serve_app: Serve, roots: Path) -> Iterator[tuple[FakeEngine, str]]:
    fake = FakeEngine({"helper": str(roots / "helper-v1"), "other": str(roots / "helper-v1")})
    with serve_app(fake.app) as url:
        yield fake, url


def _gateway(
    serve_app: Serve, tmp_path: Path, engines: list[str], roots: Path, **extra: Any
) -> AbstractContextManager[str]:
    manifest = tmp_path / "assistants.yaml"
    manifest.write_text(MANIFEST)
    options: dict[str, Any] = {
        "assistants": manifest,
        "engines": engines,
        "admin_key": KEY,
        "adapter_roots": [roots],
        "max_lora_rank": 16,
        "state_file": tmp_path / "state.json",
        **extra,
    }
    settings = GatewaySettings(_env_file=None, **options)  # type: ignore[call-arg]
    return serve_app(create_app(settings))


def _wait_for(condition: Callable[[], bool], message: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


def _admin(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}, timeout=30)


def _ask(client: httpx.Client, model: str = "helper") -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def test_admin_needs_the_key_and_is_off_without_one(
    serve_app: Serve, tmp_path: Path, engine: tuple[FakeEngine, str], roots: Path
) -> None:
    with _gateway(serve_app, tmp_path, [engine[1]], roots) as url:
        assert httpx.get(f"{url}/admin/adapters").status_code == 401
        wrong = httpx.get(f"{url}/admin/adapters", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    with _gateway(serve_app, tmp_path, [engine[1]], roots, admin_key=None) as url:
        off = httpx.get(f"{url}/admin/adapters")
        assert off.status_code == 403 and "LORAG_ADMIN_KEY" in off.json()["error"]["message"]


def test_bad_versions_are_rejected_and_change_nothing(
    serve_app: Serve, tmp_path: Path, engine: tuple[FakeEngine, str], roots: Path
) -> None:
    fake, upstream = engine
    make_adapter(roots / "too-wide", rank=32)
    outside = make_adapter(tmp_path / "elsewhere")
    with _gateway(serve_app, tmp_path, [upstream], roots) as url, _admin(url) as admin:
        before = admin.get("/admin/adapters").json()
        state_before = (tmp_path / "state.json").read_text()
        cases = [
            ("/admin/adapters/helper/swap", {"path": str(roots / "too-wide")}, "max_lora_rank"),
            ("/admin/adapters/helper/swap", {"path": str(outside)}, "outside the allowed roots"),
            ("/admin/adapters/helper/swap", {"path": str(roots / ".." / "elsewhere")}, "outside the allowed roots"),
            ("/admin/adapters/helper/versions", {"path": str(roots / "nope")}, "does not exist"),
            ("/admin/adapters/helper/swap", {"version": "deadbeef"}, "has no version"),
            ("/admin/adapters/helper/swap", {"version": "boot", "path": "x"}, "exactly one"),
            ("/admin/adapters/helper/rollback", None, "no earlier version"),
        ]
        for path, body, message in cases:
            response = admin.post(path, json=body)
            assert response.status_code == 400, (path, body, response.text)
            assert message in response.json()["error"]["message"]
        missing = admin.post("/admin/adapters/nobody/swap", json={"version": "boot"})
        assert missing.status_code == 404
        assert admin.get("/admin/adapters").json() == before
        assert (tmp_path / "state.json").read_text() == state_before
        assert not [c for c in fake.calls if c.startswith("load")]
        assert _ask(admin).json()["choices"][0]["message"]["content"] == "answered by helper"


def test_swap_rollback_and_retire(
    serve_app: Serve, tmp_path: Path, engine: tuple[FakeEngine, str], roots: Path
) -> None:
    fake, upstream = engine
    with _gateway(serve_app, tmp_path, [upstream], roots) as url, _admin(url) as admin:
        swapped = admin.post("/admin/adapters/helper/swap", json={"path": str(roots / "helper-v2")}).json()
        new = swapped["served_name"]
        assert new.startswith("helper@") and swapped["previous"] == BOOT and swapped["draining"] == "helper"
        assert _ask(admin).json()["choices"][0]["message"]["content"] == f"answered by {new}"
        assert admin.get("/v1/models/helper").json()["root"] == new
        listing = {a["name"]: a for a in admin.get("/admin/adapters").json()["data"]}["helper"]
        states = {v["version"]: v["state"] for v in listing["versions"]}
        assert states[swapped["active"]] == "active"
        # The boot version is unloaded once drained, in the background; rolling back then reloads it from the
        # path learnt at start-up.
        _wait_for(lambda: "unload helper" in fake.calls, "the drained boot version was not unloaded")
        back = admin.post("/admin/adapters/helper/rollback").json()
        assert back["served_name"] == "helper" and fake.adapters["helper"] == str(roots / "helper-v1")
        assert _ask(admin).json()["choices"][0]["message"]["content"] == "answered by helper"
        # Swapping to the same content again reuses its version.
        again = admin.post("/admin/adapters/helper/swap", json={"path": str(roots / "helper-v2")}).json()
        assert again["served_name"] == new
        retired = admin.post("/admin/adapters/helper/retire").json()
        assert retired["retired"] is True
        gone = _ask(admin)
        assert gone.status_code == 404 and "retired" in gone.json()["error"]["message"]
        assert "helper" not in {m["id"] for m in admin.get("/v1/models").json()["data"]}
        assert _ask(admin, "other").status_code == 200
    # The desired state survives a restart of the gateway.
    with _gateway(serve_app, tmp_path, [upstream], roots) as url, _admin(url) as admin:
        assert _ask(admin).status_code == 404
        revived = admin.post("/admin/adapters/helper/swap", json={"version": "boot"}).json()
        assert revived["served_name"] == "helper"
        assert _ask(admin).json()["choices"][0]["message"]["content"] == "answered by helper"


def test_reconciler_restores_a_restarted_engine(
    serve_app: Serve, tmp_path: Path, engine: tuple[FakeEngine, str], roots: Path
) -> None:
    fake, upstream = engine
    with _gateway(serve_app, tmp_path, [upstream], roots) as url, _admin(url) as admin:
        new = admin.post("/admin/adapters/helper/swap", json={"path": str(roots / "helper-v2")}).json()["served_name"]
        fake.adapters.clear()  # what an engine restart does to runtime-loaded adapters (boot ones too, here)
        report = admin.post("/admin/reconcile").json()
        assert sorted(report["loaded"]) == sorted([f"{new} on {upstream}", f"other on {upstream}"])
        assert fake.adapters[new] == str((roots / "helper-v2").resolve())
        assert _ask(admin).json()["choices"][0]["message"]["content"] == f"answered by {new}"


def test_requests_go_to_an_engine_holding_the_adapter_and_fail_over(
    serve_app: Serve, tmp_path: Path, roots: Path
) -> None:
    one, two = FakeEngine({"helper": str(roots / "helper-v1")}), FakeEngine({"other": str(roots / "helper-v1")})
    with serve_app(one.app) as url_one, serve_app(two.app) as url_two:
        dead = "http://127.0.0.1:9"  # nothing listens: connection refused
        with _gateway(serve_app, tmp_path, [dead, url_one, url_two], roots) as url, _admin(url) as admin:
            for _ in range(3):
                assert _ask(admin, "helper").json()["model"] == "helper"
                assert _ask(admin, "other").json()["model"] == "other"
            assert one.calls == [] and two.calls == []  # no loads: each adapter stays where it was placed
            # A swap loads the new version only where the adapter lives.
            new = admin.post("/admin/adapters/helper/swap", json={"path": str(roots / "helper-v2")}).json()
            assert new["engines"] == [url_one] and new["served_name"] in one.adapters
            assert new["served_name"] not in two.adapters


def test_a_stopped_engine_moves_its_traffic_without_failed_requests(
    serve_app: Serve, tmp_path: Path, roots: Path
) -> None:
    one = FakeEngine({"helper": str(roots / "helper-v1"), "other": str(roots / "helper-v1")})
    two = FakeEngine({"helper": str(roots / "helper-v1"), "other": str(roots / "helper-v1")})
    with serve_app(two.app) as url_two:
        first = serve_app(one.app)
        url_one = first.__enter__()
        with _gateway(serve_app, tmp_path, [url_one, url_two], roots) as url, _admin(url) as admin:
            assert all(_ask(admin).status_code == 200 for _ in range(4))
            first.__exit__(None, None, None)  # engine one stops
            answers = [_ask(admin) for _ in range(6)]
            assert [a.status_code for a in answers] == [200] * 6
            ready = admin.get("/ready").json()
            assert ready["status"] == "ready"  # engine two still serves every assistant


def test_an_unexpected_error_is_a_500_in_openai_shape_with_the_request_id(
    serve_app: Serve, tmp_path: Path, engine: tuple[FakeEngine, str], roots: Path
) -> None:
    manifest = tmp_path / "assistants.yaml"
    manifest.write_text(MANIFEST)
    app = create_app(GatewaySettings(_env_file=None, assistants=manifest, upstream_url=engine[1]))  # type: ignore[call-arg]

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    with serve_app(app) as url:
        response = httpx.get(f"{url}/boom", headers={"x-request-id": "trace-42"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "trace-42"
    assert response.json()["error"] == {
        "message": "internal error in the gateway",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }


def test_an_overloaded_engine_passes_requests_on_and_keeps_its_adapters(
    serve_app: Serve, tmp_path: Path, roots: Path
) -> None:
    one, two = FakeEngine({"helper": str(roots / "helper-v1")}), FakeEngine({"helper": str(roots / "helper-v1")})
    with serve_app(one.app) as url_one, serve_app(two.app) as url_two:
        with _gateway(serve_app, tmp_path, [url_one, url_two], roots) as url, _admin(url) as admin:
            one.overloaded = True
            assert [_ask(admin).status_code for _ in range(4)] == [200] * 4
            assert one.answered == 0 and two.answered == 4
            one.overloaded = False
            assert [_ask(admin).status_code for _ in range(4)] == [200] * 4
            assert one.answered > 0  # still known to hold helper, and not marked down
