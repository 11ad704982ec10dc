"""The vLLM engines behind the gateway, what each one serves, and which one takes a request.

A request goes to an engine that holds its model (adapter version or base), the one with the fewest requests
outstanding from this gateway, if admission control lets that engine take one more (server.admission). What each
engine holds is observed from its `/v1/models` by the reconciler and updated by every load and unload the gateway
makes. An engine that refuses connections is marked down and skipped until it answers `/v1/models` again; the
chat service then tries the next engine, which is safe because nothing has been sent to the client yet.

The pool owns this routing state: a request takes a `Lease` on an engine (`admit`), gives it back when its
answer has ended (`Lease.release`) and reports a failed send (`failed`); nothing else edits the counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from server.admission import AdmissionPolicy, CompletionRate, admits, retry_after
from server.errors import GatewayError, Overloaded
from server.settings import GatewaySettings
from server.upstream import Upstream

log = logging.getLogger(__name__)


@dataclass(eq=False)
class EngineNode:
    """One vLLM server as the gateway sees it."""

    upstream: Upstream
    served: set[str] = field(default_factory=set)
    roots: dict[str, str] = field(default_factory=dict)  # served name -> path or hub id, from /v1/models
    base_roots: set[str] = field(default_factory=set)
    outstanding: int = 0  # requests sent by this gateway and not yet ended; changed only through a Lease
    up: bool = True
    observed_at: float | None = None
    rate: CompletionRate = field(default_factory=CompletionRate)

    @property
    def url(self) -> str:
        return self.upstream.url

    def observe(self, cards: list[dict[str, Any]]) -> None:
        """Record what `/v1/models` said the engine serves."""
        self.served = {str(c["id"]) for c in cards}
        self.roots = {str(c["id"]): str(c.get("root") or "") for c in cards}
        self.base_roots = {str(c.get("root") or c["id"]) for c in cards if not c.get("parent")}
        self.up = True
        self.observed_at = time.time()

    async def load(self, name: str, path: str) -> None:
        """Load an adapter under `name` and record that this engine holds it (errors: GatewayError)."""
        await self.upstream.load_lora(name, path)
        self.served.add(name)
        self.roots[name] = path

    async def unload(self, name: str) -> None:
        """Unload `name` and record that this engine no longer holds it (errors: GatewayError)."""
        await self.upstream.unload_lora(name)
        self.served.discard(name)
        self.roots.pop(name, None)

    def mark_down(self, why: str) -> None:
        if self.up:
            log.warning("engine %s marked down: %s", self.url, why)
        self.up = False


class Lease:
    """One request's hold on one engine, from admission until its answer has ended (or failed)."""

    def __init__(self, node: EngineNode) -> None:
        self.node = node
        self._held = True
        node.rate.started(node.outstanding)
        node.outstanding += 1

    def release(self, completed: bool = True) -> None:
        """Give the engine's slot back (idempotent); `completed`: the engine did the work (it counts towards the
        engine's measured rate), as opposed to refusing the request."""
        if self._held:
            self._held = False
            self.node.outstanding -= 1
            self.node.rate.finished(self.node.outstanding, completed)


class EnginePool:
    """Every engine, with routing by model and load, and admission control per engine."""

    def __init__(self, nodes: list[EngineNode], policy: AdmissionPolicy | None = None) -> None:
        if not nodes:
            raise ValueError("at least one engine is needed")
        self.nodes = nodes
        self.policy = policy or AdmissionPolicy(max_wait=0)
        # Set when a request finds an engine failing: the reconciler then looks at once instead of at its next pass.
        self.wake = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: GatewaySettings, transport: httpx.AsyncBaseTransport | None = None) -> EnginePool:
        urls = settings.engine_urls()
        policy = AdmissionPolicy(
            settings.admission_max_wait, settings.admission_min_inflight, settings.admission_max_inflight
        )
        return cls([EngineNode(Upstream.from_settings(settings, transport, url=url)) for url in urls], policy)

    def admit(self, model: str, tried: set[EngineNode]) -> Lease | None:
        """A lease on the best engine for `model` not yet `tried` that admits one more request; None when every
        candidate has been tried; Overloaded (503, Retry-After) when the untried ones are all full."""
        candidates = [n for n in self.route(model) if n not in tried]
        if not candidates:
            return None
        for node in candidates:
            if admits(self.policy, node.outstanding, node.rate.per_second()):
                return Lease(node)
        raise self._overloaded(model, candidates)

    def _overloaded(self, model: str, candidates: list[EngineNode]) -> Overloaded:
        wait = min(retry_after(self.policy, n.outstanding, n.rate.per_second()) for n in candidates)
        return Overloaded(
            f"every engine serving {model!r} is at capacity: the request was not queued; retry later",
            retry_after=wait,
        )

    def check(self, model: str) -> None:
        """Overloaded when no engine for `model` would admit a request now; takes nothing. The chat service asks
        before retrieval, so a refusal costs no embedding and comes in milliseconds; `admit` decides for real."""
        candidates = self.route(model)
        if not any(admits(self.policy, n.outstanding, n.rate.per_second()) for n in candidates):
            raise self._overloaded(model, candidates)

    def failed(self, lease: Lease, model: str, exc: GatewayError) -> None:
        """A send through `lease` failed before anything reached the client: free the slot and learn from why."""
        lease.release(completed=False)
        if exc.code == "upstream_unavailable":  # refused the connection: down until it answers again
            lease.node.mark_down(exc.message)
            self.wake.set()
        elif exc.code == "upstream_model_not_found":  # lost the adapter (a restart): the reconciler reloads it
            lease.node.served.discard(model)
            self.wake.set()

    def suspect(self, node: EngineNode, exc: GatewayError) -> None:
        """A stream from `node` broke off (the engine may have died): have the reconciler look at it now."""
        log.warning("engine %s: a stream broke off: %s", node.url, exc.message)
        self.wake.set()

    async def aclose(self) -> None:
        for node in self.nodes:
            await node.upstream.aclose()

    def __iter__(self) -> Iterator[EngineNode]:
        return iter(self.nodes)

    @property
    def primary(self) -> Upstream:
        return self.nodes[0].upstream

    def route(self, model: str) -> list[EngineNode]:
        """Engines to try for `model`, best first: up engines known to hold it, by outstanding requests; where
        none is known to (nothing observed yet), every up engine; where none is up, all of them (one may be back)."""
        up = [n for n in self.nodes if n.up]
        holding = [n for n in up if model in n.served]
        if not holding and any(n.observed_at is not None and model in n.served for n in self.nodes):
            holding = [n for n in self.nodes if model in n.served]  # its holders are all down: try them anyway
        candidates = holding or [n for n in up if n.observed_at is None] or up or self.nodes
        return sorted(candidates, key=lambda n: n.outstanding)

    def holders(self, model: str) -> list[EngineNode]:
        """Engines observed to hold `model`."""
        return [n for n in self.nodes if model in n.served]

    def find(self, url: str) -> EngineNode | None:
        return next((n for n in self.nodes if n.url == url.rstrip("/")), None)

    def base_roots(self) -> set[str]:
        """The base model paths or hub ids the engines report."""
        return {root for n in self.nodes for root in n.base_roots}
