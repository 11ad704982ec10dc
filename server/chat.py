"""The chat service: one request through assistant → retrieval → prompt → vLLM → the client.

Retrieval is synchronous and CPU-bound (embedding), so it runs in worker threads behind a capacity limiter and
never blocks the event loop. Qdrant and embedder failures are translated here into RetrievalUnavailable, and so is
a retrieval that outlives the gateway's own deadline (LORAG_RETRIEVAL_TIMEOUT): a thread cannot be stopped, so the
request leaves it behind, and while as many abandoned retrievals still run as there are slots, new ones are
refused at once rather than piling up threads on a store that hangs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import httpx

from retrieval.embedder import EmbedderError
from retrieval.retriever import Hit, Retriever
from retrieval.store import StoreError
from server.assistants import Assistant, Registry
from server.engines import EngineNode, EnginePool, Lease
from server.errors import GatewayError, RetrievalUnavailable, UpstreamError, UpstreamUnavailable, sse_error
from server.grounding import Facts
from server.guard import Verdict, guard_completion, request_facts
from server.holdback import StreamGuard
from server.hotswap import AdapterService
from server.prompt import facts_block, retrieval_query, shown_hits, sources, upstream_messages
from server.protocol import ChatCompletionRequest, ChatMessage, Source
from server.relay import StreamRelay
from server.telemetry import UNKNOWN, Metrics
from server.upstream import ENGINE_RETRY_AFTER_S

log = logging.getLogger(__name__)

DONE_EVENT = b"data: [DONE]\n\n"


@dataclass
class Prepared:
    """A request ready for vLLM: the assistant, the upstream payload and what the answer is grounded on."""

    assistant: Assistant
    served_name: str
    payload: dict[str, Any]
    sources: list[Source]
    request_id: str
    started: float
    stream: bool
    client_wants_usage: bool
    retrieval_seconds: float | None
    on_done: Callable[[], None] | None = field(default=None, repr=False)
    on_usage: Callable[[Any], None] | None = field(default=None, repr=False)  # vLLM's usage, for token limits
    retrieval_skipped: bool = False  # the store failed and the assistant's policy is to answer without facts
    facts: Facts | None = None  # what the answer is checked against (None: unchecked)
    grounding: str | None = None  # the guard's verdict on a non-streamed answer, for x-lorag-grounding

    def done(self) -> None:
        """The request is over (answered, failed or abandoned): it no longer holds its adapter version."""
        if self.on_done is not None:
            on_done, self.on_done = self.on_done, None
            on_done()

    def usage(self, usage: Any) -> None:
        """vLLM's token counts of the answer, once known."""
        if self.on_usage is not None:
            self.on_usage(usage)


def _retryable(exc: GatewayError) -> bool:
    """Whether another engine may take a request this error stopped before anything reached the client: the
    engine is down or full, or it lacks the adapter (its restart lost it)."""
    return isinstance(exc, UpstreamUnavailable) or (
        isinstance(exc, UpstreamError) and exc.code == "upstream_model_not_found"
    )


def _count_usage(metrics: Metrics, name: str, prepared: Prepared, usage: Any) -> None:
    metrics.usage(name, usage)
    prepared.usage(usage)


def _count_verdict(metrics: Metrics, name: str, verdict: Verdict) -> None:
    metrics.grounded(name, bool(verdict.findings), bool(verdict.corrected), verdict.blocked)


class ChatService:
    """Runs chat completions; one instance per app, built by the lifespan."""

    def __init__(
        self,
        registry: Registry,
        pool: EnginePool,
        metrics: Metrics,
        retriever: Retriever | None = None,
        retrieval_concurrency: int = 4,
        adapters: AdapterService | None = None,
        retrieval_timeout: float = 10.0,
    ) -> None:
        self.registry = registry
        self.pool = pool
        self.adapters = adapters
        self.metrics = metrics
        self.retriever = retriever
        self.limiter = anyio.CapacityLimiter(retrieval_concurrency)
        self.retrieval_timeout = retrieval_timeout
        self._running = 0  # retrieval threads running, abandoned ones included
        self._running_lock = threading.Lock()

    async def prepare(self, request: ChatCompletionRequest, request_id: str, started: float) -> Prepared:
        """Resolve the assistant, retrieve facts and build vLLM's payload (errors: 404, 503)."""
        stream = "true" if request.stream else "false"
        try:
            assistant = self.registry.resolve(request.model)
        except GatewayError as exc:
            self.metrics.requests.labels(UNKNOWN, stream).inc()
            self.metrics.errors.labels(UNKNOWN, str(exc.status)).inc()
            raise
        self.metrics.requests.labels(assistant.name, stream).inc()
        try:
            # Admission first: a request no engine would take is refused before retrieval spends CPU on it.
            self.pool.check(self.current_served_name(assistant))
            # The assistant's engine options first: a request it refuses costs no retrieval.
            payload = assistant.engine_fields(request.forwarded(), request.requested_max_tokens())
            skipped = False
            try:
                facts, hits, seconds = await self._retrieve(assistant, request.messages)
            except RetrievalUnavailable:
                if assistant.retrieval.on_failure != "degrade":
                    raise
                # An empty facts block, not none: the adapters were trained to refuse what the block lacks.
                facts, hits, seconds, skipped = facts_block([], unknown=False), [], None, True
        except GatewayError as exc:
            self.metrics.errors.labels(assistant.name, str(exc.status)).inc()
            raise
        payload["messages"] = upstream_messages(request.messages, persona=assistant.persona, facts=facts)
        client_wants_usage = False
        if request.stream:
            options = request.stream_options.model_dump(exclude_none=True) if request.stream_options else {}
            client_wants_usage = bool(options.get("include_usage"))
            if not client_wants_usage:
                options.pop("continuous_usage_stats", None)  # usage on every chunk, for a client that wants none
            # Always asked for, so token metrics work; dropped again when the client did not ask.
            payload["stream"] = True
            payload["stream_options"] = {**options, "include_usage": True}
        # No await from here on: the version resolved is the one counted as in use, so a swap that switches
        # after this point waits for this request before unloading it.
        served = self.current_served_name(assistant)
        payload["model"] = served
        prepared = Prepared(
            assistant, served, payload, sources(hits), request_id, started, request.stream, client_wants_usage, seconds
        )
        prepared.retrieval_skipped = skipped
        if assistant.guard.policy != "off":
            users = [m.text() for m in request.messages if m.role == "user"]
            prepared.facts = request_facts(facts, hits, users)
        if self.adapters is not None and assistant.adapter is not None:
            self.adapters.acquire(served)
            prepared.on_done = partial(self.adapters.release, served)
        return prepared

    def current_served_name(self, assistant: Assistant) -> str:
        """The model vLLM serves this assistant under now: its adapter's active version, or the base model."""
        if assistant.adapter is None or self.adapters is None:
            return self.registry.boot_served_name(assistant)
        return self.adapters.served_for(assistant.adapter)

    async def _send(self, prepared: Prepared) -> tuple[httpx.Response, Lease]:
        """Send to the best engine for the model that admits it; on an engine that is down, full or lacks the
        adapter, the next one (nothing has reached the client yet). The caller releases the lease."""
        error: GatewayError | None = None
        tried: set[EngineNode] = set()
        while (lease := self.pool.admit(prepared.served_name, tried)) is not None:
            tried.add(lease.node)
            was_down = not lease.node.up
            try:
                return await lease.node.upstream.send(prepared.payload, prepared.request_id), lease
            except GatewayError as exc:
                self.pool.failed(lease, prepared.served_name, exc)
                if not _retryable(exc):
                    raise
                error = exc
                if was_down and exc.code == "upstream_model_not_found":
                    # An engine that was down answers again without the adapter: it restarted, and the reconciler
                    # (woken by `failed`) is loading the adapter back. A short wait, not the gateway's fault.
                    error = UpstreamUnavailable(
                        "the model server has restarted and this assistant's adapter is being loaded again",
                        code="adapter_restoring",
                        retry_after=ENGINE_RETRY_AFTER_S,
                    )
        assert error is not None  # route() always names an engine, so the first admit leased or raised
        raise error

    async def _retrieve(
        self, assistant: Assistant, messages: list[ChatMessage]
    ) -> tuple[str | None, list[Hit], float | None]:
        """The facts block (None when the assistant does not retrieve), the hits shown and the time taken."""
        config = assistant.retrieval
        if not config.enabled:
            return None, [], None
        query = retrieval_query(messages, config.context_turns)
        if self.retriever is None or not query:
            # No retriever only when no assistant retrieves (see the lifespan); no query: nothing to look up.
            return facts_block([], unknown=False), [], None
        began = time.perf_counter()
        retrieve = partial(self.retriever.retrieve, query, top_k=config.top_k, filters=config.filters)
        try:
            with anyio.fail_after(self.retrieval_timeout):
                result = await self._in_thread(retrieve)
        except (StoreError, EmbedderError) as exc:
            log.warning("retrieval failed: %s", exc)
            raise RetrievalUnavailable("the product catalog is unavailable; try again shortly") from exc
        except TimeoutError as exc:
            log.warning("retrieval over its %.1f s deadline (LORAG_RETRIEVAL_TIMEOUT)", self.retrieval_timeout)
            raise RetrievalUnavailable("the product catalog did not answer in time; try again shortly") from exc
        seconds = time.perf_counter() - began
        self.metrics.retrieval.labels(assistant.name).observe(seconds)
        hits, unknown = shown_hits(result, config)
        return facts_block(hits, unknown), hits, seconds

    async def _in_thread(self, retrieve: Callable[[], Any]) -> Any:
        """Run `retrieve` in a worker thread, abandoned (left running) if the caller's deadline passes first."""
        if self._running - self.limiter.borrowed_tokens >= self.limiter.total_tokens:
            raise RetrievalUnavailable("the product catalog is not answering; try again shortly")

        def run() -> Any:
            with self._running_lock:
                self._running += 1
            try:
                return retrieve()
            finally:
                with self._running_lock:
                    self._running -= 1

        return await anyio.to_thread.run_sync(run, limiter=self.limiter, abandon_on_cancel=True)

    async def complete(self, prepared: Prepared) -> dict[str, Any]:
        """A non-streamed answer: vLLM's JSON with the assistant's name and `sources`."""
        name = prepared.assistant.name
        try:
            response, lease = await self._send(prepared)
            try:
                answer = await lease.node.upstream.read_json(response)
            finally:
                lease.release()
        except GatewayError as exc:
            self.metrics.errors.labels(name, str(exc.status)).inc()
            raise
        finally:
            prepared.done()
        answer["model"] = name
        answer["sources"] = prepared.sources
        if prepared.facts is not None:
            verdict = guard_completion(answer, prepared.facts, prepared.assistant.guard)
            prepared.grounding = verdict.header
            _count_verdict(self.metrics, name, verdict)
        self.metrics.usage(name, answer.get("usage"))
        prepared.usage(answer.get("usage"))
        self.metrics.latency.labels(name, "false").observe(time.perf_counter() - prepared.started)
        return answer

    async def stream(self, prepared: Prepared) -> AsyncGenerator[bytes, None]:
        """The SSE relay. Its first item, b"", comes once vLLM accepted the request: a failure to open raises
        before then, so the route still answers it with an HTTP error instead of an in-band one."""
        name = prepared.assistant.name
        try:
            response, lease = await self._send(prepared)
        except GatewayError as exc:
            self.metrics.errors.labels(name, str(exc.status)).inc()
            prepared.done()
            raise
        relay = StreamRelay(
            assistant=name,
            served_name=prepared.served_name,
            sources=prepared.sources,
            choices=int(prepared.payload.get("n") or 1),
            client_wants_usage=prepared.client_wants_usage,
            on_usage=partial(_count_usage, self.metrics, name, prepared),
        )
        guard = None if prepared.facts is None else StreamGuard(prepared.facts, prepared.assistant.guard)
        first = True
        try:
            yield b""
            async with aclosing(lease.node.upstream.events(response)) as events:
                async for data in events:
                    checked = data if guard is None else guard.process(data)  # held back: None
                    if checked is None:
                        continue
                    out = relay.process(checked)
                    if out is None:
                        continue
                    if first:
                        self.metrics.ttft.labels(name).observe(time.perf_counter() - prepared.started)
                        first = False
                    yield b"data: " + out + b"\n\n"
        except GatewayError as exc:  # the stream broke off (the engine died, or timed out): in-band, then [DONE]
            relay.error = exc
            self.pool.suspect(lease.node, exc)
            yield sse_error(exc)
        except (anyio.get_cancelled_exc_class(), GeneratorExit):
            # The client went away; closing vLLM's stream (below) is what cancels the generation there.
            self.metrics.disconnects.labels(name).inc()
            raise
        finally:
            lease.release()
            prepared.done()
            with anyio.CancelScope(shield=True):
                await response.aclose()
        if relay.error is not None:
            self.metrics.errors.labels(name, str(relay.error.status)).inc()
        elif guard is not None:
            _count_verdict(self.metrics, name, guard.verdict)
        self.metrics.latency.labels(name, "true").observe(time.perf_counter() - prepared.started)
        yield DONE_EVENT
