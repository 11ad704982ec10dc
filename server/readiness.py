"""What /ready checks: vLLM answers and serves every assistant's model, and the catalog is searchable."""

from __future__ import annotations

import anyio.to_thread

from retrieval.retriever import Retriever
from retrieval.store import StoreError
from server.assistants import Registry
from server.errors import GatewayError
from server.upstream import Upstream

OK = "ok"


class Readiness:
    """Runs the readiness checks; each reports "ok" or what is wrong."""

    def __init__(self, registry: Registry, upstream: Upstream, retriever: Retriever | None) -> None:
        self.registry = registry
        self.upstream = upstream
        self.retriever = retriever

    async def check(self) -> dict[str, str]:
        """Check name -> "ok" or the problem; ready when every value is "ok"."""
        checks = {"vllm": await self._vllm()}
        if self.retriever is not None:
            checks["qdrant"] = await self._qdrant(self.retriever)
        return checks

    async def _vllm(self) -> str:
        try:
            served = set(await self.upstream.models())
        except GatewayError as exc:
            return exc.message
        missing = sorted(self.registry.served_names() - served)
        return f"vLLM does not serve: {', '.join(missing)}" if missing else OK

    async def _qdrant(self, retriever: Retriever) -> str:
        try:
            exists = await anyio.to_thread.run_sync(retriever.store.exists)
        except StoreError as exc:
            return str(exc)
        if not exists:
            return f"no collection {retriever.store.collection!r}: run `lorag catalog ingest` first"
        return OK
