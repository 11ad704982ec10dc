"""What /ready checks: the engines answer and serve every assistant's model, and the catalog is searchable.

A probe only reads: it asks each engine for its model list but leaves the routing state (what each engine holds,
whether it is up) to the reconciler and the request path, so probing never changes where requests go. The
problems it finds name engine addresses and collections: the route shows them only to an admin.
"""

from __future__ import annotations

import anyio
import anyio.to_thread

from retrieval.retriever import Retriever
from retrieval.store import StoreError
from server.chat import ChatService
from server.errors import GatewayError

OK = "ok"


class Readiness:
    """Runs the readiness checks; each reports "ok" or what is wrong."""

    def __init__(self, chat: ChatService, retriever: Retriever | None) -> None:
        self.chat = chat
        self.retriever = retriever

    async def check(self) -> dict[str, str]:
        """Check name -> "ok" or the problem; ready when every value is "ok"."""
        checks = {"vllm": await self._vllm()}
        if self.retriever is not None:
            checks["qdrant"] = await self._qdrant(self.retriever)
        return checks

    async def _vllm(self) -> str:
        """Every engine is asked; ready when each assistant's current model is served by at least one."""
        served: set[str] = set()
        problems: list[str] = []
        for node in self.chat.pool:
            try:
                cards = await node.upstream.model_cards()
            except GatewayError as exc:
                problems.append(f"{node.url}: {exc.message}")
                continue
            served |= {str(card["id"]) for card in cards}
        wanted: set[str] = set()
        for assistant in self.chat.registry:
            try:
                wanted.add(self.chat.current_served_name(assistant))
            except GatewayError:
                continue  # retired: it answers 404 by design
        missing = sorted(wanted - served)
        if not missing:
            return OK  # an engine may be down, but another serves everything
        problems.append(f"vLLM does not serve: {', '.join(missing)}")
        return "; ".join(problems)

    async def _qdrant(self, retriever: Retriever) -> str:
        # The same deadline as a request's retrieval: a probe must not hang on a store that does.
        timeout = self.chat.retrieval_timeout
        try:
            with anyio.fail_after(timeout):
                exists = await anyio.to_thread.run_sync(retriever.store.exists, abandon_on_cancel=True)
        except StoreError as exc:
            return str(exc)
        except TimeoutError:
            return f"the catalog store did not answer within {timeout:g} s (LORAG_RETRIEVAL_TIMEOUT)"
        if not exists:
            return f"no collection {retriever.store.collection!r}: run `lorag catalog ingest` first"
        return OK
