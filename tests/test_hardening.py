"""Holes an outside probe found, closed: an adapter for another base model, an engine refusing an adapter, lone
surrogates in a request, and internal details on open routes. Against fake engines (tests/test_hotswap.py's);
tests/test_hotswap_engine.py runs the base-model and refusal cases against real vLLM with the demo kit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import save_file
from starlette.requests import Request
from starlette.responses import JSONResponse

from adapters.validation import AdapterInvalid, validate_adapter
from tests.test_hotswap import FakeEngine, Serve, _admin, _gateway, engine, make_adapter, roots

__all__ = ["engine", "roots"]  # test_hotswap's fixtures, used here too


def _model(path: Path, arch: str, hidden: int, layers: int = 2, **extra: Any) -> Path:
    """A model directory with only its config.json: all the base check reads."""
    path.mkdir(parents=True)
    config = {"architectures": [arch], "hidden_size": hidden, "intermediate_size": 4 * hidden}
    config |= {"num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 4, **extra}
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_an_adapter_for_another_model_in_a_directory_of_the_same_name_is_refused(tmp_path: Path) -> None:
    """The demo kit's case: both models live in directories called `base`."""
    ours = _model(tmp_path / "kit" / "base", "LlamaForCausalLM", 32)
    theirs = _model(tmp_path / "kit" / "plumbing" / "base", "Qwen3ForCausalLM", 32)
    adapter = make_adapter(tmp_path / "a", base=str(theirs))
    with pytest.raises(AdapterInvalid, match="Qwen3ForCausalLM .* the engine serves a LlamaForCausalLM") as info:
        validate_adapter(adapter, [tmp_path], ["smollm2", str(ours)], 16)
    assert str(ours) not in str(info.value)  # the engine's path is not the client's business
    # The same model copied elsewhere (same config) is the same base.
    copy = _model(tmp_path / "copy" / "smollm2", "LlamaForCausalLM", 32)
    assert validate_adapter(make_adapter(tmp_path / "b", base=str(copy)), [tmp_path], [str(ours)], 16).rank == 8


def test_weights_that_do_not_fit_the_engines_model_are_refused_whatever_the_base_is_called(tmp_path: Path) -> None:
    """An adapter names a training machine's directory that does not exist here: its tensors' shapes decide."""
    engine = _model(tmp_path / "srv" / "base", "LlamaForCausalLM", 576, layers=30)
    adapter = make_adapter(tmp_path / "a", base="/tmp/build-1234/base")  # q_proj A is 32 wide
    with pytest.raises(AdapterInvalid, match="no projection of the engine's model is 32 wide"):
        validate_adapter(adapter, [tmp_path], [str(engine)], 16)
    fitting = _model(tmp_path / "srv2" / "base", "LlamaForCausalLM", 32, layers=1)
    assert validate_adapter(adapter, [tmp_path], [str(fitting)], 16).base_model == "/tmp/build-1234/base"
    deep = make_adapter(tmp_path / "deep", base="/tmp/build-1234/base")
    prefix = "base_model.model.model.layers.5.mlp.up_proj"
    lora = {
        f"{prefix}.lora_A.weight": np.zeros((8, 32), np.float32),
        f"{prefix}.lora_B.weight": np.zeros((128, 8), np.float32),
    }
    save_file(lora, str(deep / "adapter_model.safetensors"))
    with pytest.raises(AdapterInvalid, match="layer 5; the engine's model has 1 layers"):
        validate_adapter(deep, [tmp_path], [str(fitting)], 16)


class RefusingEngine(FakeEngine):
    """vLLM refusing an adapter that names a module the model lacks: a 500 quoting the adapter's path."""

    async def load(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.calls.append(f"load {body['lora_name']}")
        message = f"Loading lora {body['lora_name']} from {body['lora_path']} failed: unexpected module foo_proj"
        return JSONResponse({"error": {"message": message, "type": "InternalServerError"}}, status_code=500)


def test_an_adapter_the_engine_refuses_is_a_400_naming_it_without_engine_details(
    serve_app: Serve, tmp_path: Path, roots: Path
) -> None:
    fake = RefusingEngine({"helper": str(roots / "helper-v1"), "other": str(roots / "helper-v1")})
    with serve_app(fake.app) as upstream, _gateway(serve_app, tmp_path, [upstream], roots) as url, _admin(url) as admin:
        before = admin.get("/admin/adapters").json()
        response = admin.post("/admin/adapters/helper/swap", json={"path": str(roots / "helper-v2")})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "adapter_refused" and error["type"] == "invalid_request_error"
        assert "'helper@" in error["message"] and "refused to load" in error["message"]
        assert str(roots) not in response.text and "foo_proj" not in response.text and upstream not in response.text
        assert admin.get("/admin/adapters").json() == before  # nothing changed
        assert any(c.startswith("load helper@") for c in fake.calls)


def test_admin_errors_do_not_list_the_adapter_roots(
    serve_app: Serve, tmp_path: Path, engine: tuple[FakeEngine, str], roots: Path
) -> None:
    outside = make_adapter(tmp_path / "elsewhere")
    with _gateway(serve_app, tmp_path, [engine[1]], roots) as url, _admin(url) as admin:
        response = admin.post("/admin/adapters/helper/swap", json={"path": str(outside)})
        assert response.status_code == 400 and "LORAG_ADAPTER_ROOTS" in response.text
        assert str(roots) not in response.text


def test_a_lone_surrogate_in_an_admin_path_is_a_400(
    serve_app: Serve, tmp_path: Path, engine: tuple[FakeEngine, str], roots: Path
) -> None:
    with _gateway(serve_app, tmp_path, [engine[1]], roots) as url, _admin(url) as admin:
        body = b'{"path": "/adapters/x\\ud800"}'
        response = admin.post("/admin/adapters/helper/swap", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["param"] == "path"


def test_ready_shows_details_only_to_an_admin_and_a_probe_does_not_change_routing(
    serve_app: Serve, tmp_path: Path, engine: tuple[FakeEngine, str], roots: Path
) -> None:
    fake, upstream = engine
    with _gateway(serve_app, tmp_path, [upstream], roots) as url, _admin(url) as admin:
        fake.adapters.pop("helper")  # the engine lost an adapter (a restart)
        public = httpx.get(f"{url}/ready")
        assert public.status_code == 503 and public.json()["checks"] == {"vllm": "failing"}
        assert upstream not in public.text and "helper" not in public.text
        wrong = httpx.get(f"{url}/ready", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 503 and "helper" not in wrong.text
        detailed = admin.get("/ready")
        assert detailed.status_code == 503 and "vLLM does not serve: helper" in detailed.json()["checks"]["vllm"]
        # The probes only read: the gateway still believes the engine holds helper until the reconciler looks.
        listing = {a["name"]: a for a in admin.get("/admin/adapters").json()["data"]}["helper"]
        assert listing["versions"][0]["loaded_on"] == [upstream]
        admin.post("/admin/reconcile")
        assert fake.adapters["helper"]  # the reconciler, not the probe, restored it
        assert httpx.get(f"{url}/ready").json() == {"status": "ready", "checks": {"vllm": "ok"}}
