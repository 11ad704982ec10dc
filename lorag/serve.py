"""`lorag serve`: the gateway on uvicorn.

Options override the `LORAG_*` environment (and `.env`) through `GatewaySettings.from_options`; with several
workers they also reach each worker process as `LORAG_*` variables, the only channel uvicorn gives its workers.
Local-mode Qdrant (a directory) takes an exclusive lock, so
several workers read it from published snapshots (retrieval.snapshots; each worker loads its own copy), or use a
Qdrant server (LORAG_QDRANT_URL); the Qdrant Edge store allows one worker. Each worker is a replica with its own
adapter service: with the admin API on (hot-swap), several workers need a shared Redis (LORAG_REDIS_URL).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrieval.settings import RetrievalSettings

# Options that override the gateway settings of the same name.
_OPTIONS = ("host", "port", "assistants", "upstream_url", "qdrant_url", "qdrant_path", "collection")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app
    from server.assistants import ManifestError, Registry
    from server.settings import GatewaySettings

    options = {name: getattr(args, name) for name in _OPTIONS}
    if args.no_access_log:
        options["access_log"] = False
    settings = GatewaySettings.from_options(**options)
    try:
        registry = Registry.from_file(settings.assistants)
    except ManifestError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.workers > 1 and registry.needs_retrieval and not settings.qdrant_url:
        if settings.store == "edge":
            print("the Qdrant Edge store allows one process: use --workers 1 or LORAG_STORE=qdrant", file=sys.stderr)
            return 2
        if (problem := _snapshot_for_workers(settings)) is not None:
            print(problem, file=sys.stderr)
            return 2
    if args.workers > 1 and settings.admin_key is not None and settings.redis_url is None:
        print(
            "hot-swap with several workers needs their shared state in Redis: set LORAG_REDIS_URL, or use --workers 1",
            file=sys.stderr,
        )
        return 2
    print(
        f"gateway on http://{settings.host}:{settings.port}/v1 -> vLLM at {settings.upstream_url}; "
        f"assistants: {', '.join(a.name for a in registry)}",
        file=sys.stderr,
        flush=True,
    )
    run: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": args.log_level,
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": 10,
    }
    if args.workers == 1:
        uvicorn.run(create_app(settings), **run)
        return 0
    for name, value in options.items():
        if value is not None:
            os.environ[f"LORAG_{name.upper()}"] = str(value)
    uvicorn.run("server.app:create_app", factory=True, workers=args.workers, **run)
    return 0


def _snapshot_for_workers(settings: RetrievalSettings) -> str | None:
    """Serve the local-mode store from published snapshots (one private copy per worker); None when ready."""
    from retrieval.snapshots import ensure_published
    from retrieval.store import StoreError

    try:
        generation = ensure_published(settings.qdrant_path, settings.collection)
    except StoreError as exc:
        return f"{exc}: wait for the ingest to finish, or use a Qdrant server (--qdrant-url)"
    where = f"snapshot {generation}" if generation else "no catalog yet (workers load the first ingest)"
    print(f"catalog in {settings.qdrant_path}: {where}; each worker holds its own copy in memory", file=sys.stderr)
    return None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `serve` to the lorag command line."""
    serve = sub.add_parser("serve", help="run the OpenAI-compatible gateway (settings: LORAG_* env, .env)")
    serve.add_argument("--host", help="listen address (LORAG_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (LORAG_PORT, default 8000)")
    serve.add_argument("--assistants", type=Path, help="assistants manifest YAML (LORAG_ASSISTANTS)")
    serve.add_argument("--upstream-url", help="vLLM server, e.g. http://127.0.0.1:8001 (LORAG_UPSTREAM_URL)")
    serve.add_argument("--qdrant-url", help="Qdrant server URL (LORAG_QDRANT_URL)")
    serve.add_argument("--qdrant-path", type=Path, help="local-mode store directory (LORAG_QDRANT_PATH)")
    serve.add_argument("--collection", help="catalog collection (LORAG_COLLECTION)")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--no-access-log", action="store_true", help="no per-request log line (LORAG_ACCESS_LOG)")
    serve.set_defaults(func=_serve)
