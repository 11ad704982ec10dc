"""A gateway over the demo kit for evaluations: vLLM serving the kit, the demo catalog in a temporary local Qdrant,
and the gateway with the demo manifest (its base model renamed to the kit's) on a thread of this process.

`lorag eval truthfulness --kit build/demo-kit` asks it; the manifest's guard policy is what its answers carry
(the demo manifest annotates, so the answers come back as the model wrote them, with the guard's findings).
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
import yaml

from adapters.demo_kit.kit import load_kit
from lorag.launcher import Engine, kit_spec
from retrieval.demo_catalog import demo_catalog
from server.app import create_app
from server.settings import DEFAULT_MANIFEST, GatewaySettings

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _ingest(qdrant: Path) -> None:
    from qdrant_client import QdrantClient

    from retrieval.embedder import Embedder
    from retrieval.ingest import ingest
    from retrieval.loaders import Row
    from retrieval.store import CatalogStore

    client = QdrantClient(path=str(qdrant))
    try:
        rows = (Row(i + 1, p) for i, p in enumerate(demo_catalog()))
        ingest(rows, CatalogStore(client), Embedder(threads=1), progress=False)
    finally:
        client.close()


@contextmanager
def kit_gateway(kit_dir: Path, manifest: Path = DEFAULT_MANIFEST, log: Path | None = None) -> Iterator[str]:
    """The gateway's base URL while the block runs; the engine and the gateway stop when it ends."""
    kit = load_kit(kit_dir)
    with tempfile.TemporaryDirectory(prefix="lorag-eval-") as tmp:
        work = Path(tmp)
        raw = yaml.safe_load(manifest.read_text())
        raw["base_model"] = kit.name
        (work / "assistants.yaml").write_text(yaml.safe_dump(raw))
        _ingest(work / "qdrant")
        with Engine(kit_spec(kit, _free_port()), log_path=log or work / "vllm.log") as engine:
            settings = GatewaySettings(  # type: ignore[call-arg]
                _env_file=None,
                upstream_url=engine.url,
                assistants=work / "assistants.yaml",
                qdrant_url=None,
                qdrant_path=work / "qdrant",
                embedding_threads=1,
            )
            port = _free_port()
            config = uvicorn.Config(create_app(settings), host=HOST, port=port, log_level="warning", access_log=False)
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            deadline = time.monotonic() + 120
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the gateway did not start")
                time.sleep(0.05)
            try:
                yield f"http://{HOST}:{port}"
            finally:
                server.should_exit = True
                thread.join(30)
