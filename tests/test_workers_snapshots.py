"""`lorag serve --workers 2` with retrieval on and no Qdrant server: both workers answer from the catalog, and a
catalog ingested while they serve reaches both of them. Real processes: the stub upstream, `lorag serve` (uvicorn
workers, MiniLM on the CPU), `lorag catalog ingest` (local-mode Qdrant, published snapshots)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from retrieval import snapshots
from retrieval.demo_catalog import write_demo_catalog
from tests.conftest import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
MANIFEST = """base_model: stub-model
assistants:
  - {name: shop, adapter: null, retrieval: {enabled: true, top_k: 4}, max_tokens: 16}
"""
NEW = {"id": "NEW-1", "name": "Zephyrine Kettle ZQK-9", "category": "kettle", "price": "99.00", "stock": 3}


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    copies: Path  # the workers' TMPDIR, where each keeps its private copy of the catalog


def _ingest(catalog: Path, store: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "lorag", "catalog", "ingest", str(catalog), "--qdrant-path", str(store)]
    return subprocess.run([*command, "--quiet"], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


def _wait(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.25)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("workers")
    copies = work / "tmp"
    copies.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LORAG_EMBEDDING_THREADS": "1", "TMPDIR": str(copies)}
    catalog = write_demo_catalog(work / "catalog.jsonl", count=60)
    ingested = _ingest(catalog, work / "qdrant", env)
    assert ingested.returncode == 0, ingested.stderr[-2000:]
    (work / "assistants.yaml").write_text(MANIFEST)
    stub_port, port = free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with (work / "stub.log").open("wb") as out:
            stub = [sys.executable, str(ROOT / "tests" / "stub_upstream.py"), "--port", str(stub_port)]
            processes.append(subprocess.Popen(stub, stdout=out, stderr=subprocess.STDOUT, env=env))
        _wait(f"http://127.0.0.1:{stub_port}/health", processes[0], work / "stub.log")
        serve = [
            *(sys.executable, "-m", "lorag", "serve", "--workers", "2", "--port", str(port)),
            *("--upstream-url", f"http://127.0.0.1:{stub_port}", "--assistants", str(work / "assistants.yaml")),
            *("--qdrant-path", str(work / "qdrant"), "--no-access-log"),
        ]
        with (work / "gateway.log").open("wb") as out:
            processes.append(subprocess.Popen(serve, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT))
        url = f"http://127.0.0.1:{port}"
        _wait(f"{url}/ready", processes[1], work / "gateway.log")
        yield Gateway(url, processes[1], env, copies)
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _sources(url: str, question: str) -> list[str]:
    # A new connection per request, so the kernel hands requests to both workers.
    body = {"model": "shop", "messages": [{"role": "user", "content": question}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return [s["id"] for s in response.json()["sources"]]


def _ask_many(url: str, question: str, count: int = 24) -> list[list[str]]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: _sources(url, question), range(count)))


def _workers(serve_pid: int) -> set[int]:
    """The uvicorn worker processes of `lorag serve` (its children, less multiprocessing's resource tracker)."""
    children = Path(f"/proc/{serve_pid}/task/{serve_pid}/children").read_text().split()
    return {int(pid) for pid in children if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()}


def _copies(directory: Path) -> dict[int, str]:
    """Worker pid -> the generation its private copy holds (names are lorag-catalog-<pid>-<generation>-*)."""
    held: dict[int, str] = {}
    for path in directory.glob("lorag-catalog-*"):
        pid, rest = path.name.removeprefix("lorag-catalog-").split("-", 1)
        held[int(pid)] = rest.rsplit("-", 1)[0]
    return held


def test_two_workers_answer_from_the_catalog_without_a_qdrant_server(gateway: Gateway) -> None:
    answers = _ask_many(gateway.url, "How much is the Ferrovia Bolt F-700?")
    assert all("TMP-1000" in ids for ids in answers), answers
    workers = _workers(gateway.process.pid)
    assert len(workers) == 2
    # each worker holds its own copy of the one published generation
    assert _copies(gateway.copies) == dict.fromkeys(workers, snapshots.current(gateway.copies.parent / "qdrant"))


def test_a_catalog_ingested_while_serving_reaches_both_workers(gateway: Gateway) -> None:
    store = gateway.copies.parent / "qdrant"
    question = f"How much is the {NEW['name']}?"
    assert not any("NEW-1" in ids for ids in _ask_many(gateway.url, question, 8))
    catalog = gateway.copies.parent / "catalog.jsonl"
    catalog.write_text(catalog.read_text() + json.dumps(NEW) + "\n")
    before = snapshots.current(store)
    ingested = _ingest(catalog, store, gateway.env)  # the workers hold no lock on the writer's directory
    assert ingested.returncode == 0, ingested.stderr[-2000:]
    after = snapshots.current(store)
    assert after is not None and after != before
    time.sleep(snapshots.CHECK_INTERVAL + 0.5)  # the bound: one check interval, then the copy loads
    answers = _ask_many(gateway.url, question)
    assert all("NEW-1" in ids for ids in answers), answers
    assert _copies(gateway.copies) == dict.fromkeys(_workers(gateway.process.pid), after)
