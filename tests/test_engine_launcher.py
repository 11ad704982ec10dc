"""The engine launcher's derived vLLM flags, and the Qwen3 plumbing model served for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from adapters.demo_kit.kit import KitModel, load_kit
from lorag import launcher
from lorag.launcher import (
    AdapterSpec,
    Engine,
    EngineError,
    EngineSpec,
    engine_command,
    engine_env,
    lora_limits,
)
from tests.conftest import KIT_DIR, free_port


def _adapter(tmp_path: Path, name: str, rank: int) -> AdapterSpec:
    (tmp_path / name).mkdir()
    (tmp_path / name / "adapter_config.json").write_text(json.dumps({"r": rank}))
    return AdapterSpec(name, tmp_path / name)


def test_lora_limits_fit_every_adapter_plus_a_spare(tmp_path: Path) -> None:
    adapters = [_adapter(tmp_path, "a", 8), _adapter(tmp_path, "b", 12), _adapter(tmp_path, "c", 16)]
    assert lora_limits(adapters) == (4, 16)
    assert lora_limits(adapters[:2], spare=0) == (2, 16)  # rank 12 rounds up to vLLM's next allowed rank
    assert lora_limits([]) == (1, 8)


def test_lora_limits_refuse_rank_vllm_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="rank 1024"):
        lora_limits([_adapter(tmp_path, "huge", 1024)])


def test_command_and_env(tmp_path: Path) -> None:
    spec = EngineSpec(model="/m", served_name="base", adapters=[_adapter(tmp_path, "a", 16)], port=9, device="cpu")
    cmd = engine_command(spec, python="py")
    assert cmd[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--max-loras") + 1] == "2"
    assert cmd[cmd.index("--max-lora-rank") + 1] == "16"
    module = json.loads(cmd[cmd.index("--lora-modules") + 1])
    assert module == {"name": "a", "path": str(tmp_path / "a"), "base_model_name": "base"}
    env = engine_env(spec, base={})
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "VLLM_CPU_KVCACHE_SPACE" not in engine_env(EngineSpec("/m", "b", device="gpu"), base={})


@pytest.mark.integration  # starts the real vLLM (it imports for ~10 s before failing)
def test_start_fails_with_log_tail_for_a_missing_model(tmp_path: Path) -> None:
    spec = EngineSpec(model=str(tmp_path / "no-such-model"), served_name="x", port=free_port())
    with pytest.raises(EngineError, match="exited with code"):
        Engine(spec, log_path=tmp_path / "vllm.log").start(timeout=300)


# A stand-in for vLLM's process tree: the API server answers /health and has a child in its process group (as
# EngineCore and the workers are) that ignores SIGTERM and would outlive it.
FAKE_ENGINE = """
import http.server, os, signal, subprocess, sys
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)\\nwhile True: time.sleep(0.2)"])
open(sys.argv[2], "w").write(str(child.pid))
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has stopped; only its parent's reaping is left


def _fake_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Engine, Path]:
    port, pid_file = free_port(), tmp_path / "child.pid"
    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE_ENGINE)
    monkeypatch.setattr(
        launcher, "engine_command", lambda spec: [sys.executable, str(script), str(port), str(pid_file)]
    )
    spec = EngineSpec(model="m", served_name="m", port=port, device="cpu")
    return Engine(spec, log_path=tmp_path / "engine.log").start(timeout=60), pid_file


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


@pytest.mark.integration  # a real process tree and the watchdog's grace period: ~13 s
def test_children_are_stopped_when_the_api_server_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 of the API server used to leave EngineCore and the workers running; the watchdog stops them."""
    engine, pid_file = _fake_engine(tmp_path, monkeypatch)
    child = int(pid_file.read_text())
    try:
        assert engine.process is not None and _alive(child)
        os.kill(engine.process.pid, signal.SIGKILL)
        assert _wait_gone(child, timeout=20), "the API server's child outlived it"
    finally:
        engine.stop(grace=1)
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_stop_reaches_the_group_after_the_api_server_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`stop` used to return early once the main process had exited, leaving its children."""
    engine, pid_file = _fake_engine(tmp_path, monkeypatch)
    child = int(pid_file.read_text())
    try:
        assert engine.process is not None
        engine._stopping.set()  # as if stop had begun: only stop itself may clean up now
        engine.process.kill()
        engine.process.wait()
        assert _alive(child)
        engine.stop(grace=1)  # the child ignores SIGTERM: SIGKILL after the grace
        assert _wait_gone(child, timeout=5)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.engine
def test_cli_serves_qwen3_plumbing_model_and_stops_cleanly(kit: KitModel) -> None:
    """`lorag engine --plumbing`: ready line, the Qwen3 adapters change the output, Ctrl-C stops vLLM."""
    plumbing = load_kit(KIT_DIR, plumbing=True)
    config = json.loads((plumbing.path / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert config["num_attention_heads"] // config["num_key_value_heads"] == 4  # Qwen3-8B's 32:8 grouping
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with subprocess.Popen(
        [sys.executable, "-m", "lorag", "engine", "--kit", str(KIT_DIR), "--plumbing", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        _drive_plumbing_engine(proc, url, plumbing)


def _drive_plumbing_engine(proc: subprocess.Popen[str], url: str, plumbing: KitModel) -> None:
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert f"{url}/v1" in ready, ready
        ids = {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]}
        assert ids == {plumbing.name, *plumbing.adapters}
        outputs = set()
        for model in [plumbing.name, *plumbing.adapters]:
            body = {"model": model, "prompt": "coffee grinder", "max_tokens": 8, "temperature": 0}
            r = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
            assert r.status_code == 200, r.text
            outputs.add(r.json()["choices"][0]["text"])
        # Random-weight adapters change the output: the LoRA weights really reach the Qwen3 layers.
        assert len(outputs) == 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
