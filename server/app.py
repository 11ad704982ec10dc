"""The gateway application: `create_app(settings)` and the lifespan that owns every client.

The lifespan opens, in order, the assistant registry (the manifest), the adapters' desired state, an httpx
client per vLLM engine, the adapter service and its reconciler (a first pass, then a periodic task), and, when
any assistant retrieves, the Qdrant client and the embedding model; it closes them in reverse. Handlers reach them
through the typed state it yields (see server.deps); nothing lives in module globals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TypedDict

import anyio.to_thread
import httpx
from fastapi import FastAPI
from limits.storage import Storage, storage_from_string

from adapters.state import StateFile, seed_boot_adapters
from adapters.state_store import DesiredStateStore, FileStateStore, StateConflict
from retrieval.embedder import Embedder
from retrieval.retriever import Retriever
from retrieval.store import StoreError, open_store
from server.assistants import Registry
from server.chat import ChatService
from server.engines import EnginePool
from server.errors import install_handlers
from server.hotswap import AdapterService
from server.keys import KeyRing
from server.limits import Gate
from server.middleware import RequestContext
from server.readiness import Readiness
from server.reconciler import Reconciler
from server.routes import admin, chat, health, models
from server.settings import GatewaySettings
from server.telemetry import Metrics

log = logging.getLogger(__name__)


class State(TypedDict):
    """What the lifespan yields; Starlette copies it into every request's state."""

    settings: GatewaySettings
    registry: Registry
    pool: EnginePool
    adapters: AdapterService
    reconciler: Reconciler
    metrics: Metrics
    retriever: Retriever | None
    chat: ChatService
    readiness: Readiness
    gate: Gate


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _lifespan(
    settings: GatewaySettings, transport: httpx.AsyncBaseTransport | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[State]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        registry = Registry.from_file(settings.assistants)
        inline_keys = settings.api_keys.get_secret_value() if settings.api_keys else None
        keys = KeyRing(settings.api_keys_file, inline_keys)
        if not keys.enabled:
            log.warning(
                "NO API KEYS CONFIGURED: the chat API is open to anyone who reaches this port (see LORAG_API_KEYS_FILE)"
            )
        metrics = Metrics()
        async with AsyncExitStack() as stack:
            desired = _state_store(settings)
            stack.push_async_callback(desired.aclose)
            state, revision = await desired.load()
            if seed_boot_adapters(state, sorted({a.adapter for a in registry if a.adapter})):
                try:
                    revision = await desired.save(state, revision)
                except StateConflict:  # another replica seeded (or changed) it first: take its state
                    state, revision = await desired.load()
                    seed_boot_adapters(state, sorted({a.adapter for a in registry if a.adapter}))
            pool = EnginePool.from_settings(settings, transport)
            stack.push_async_callback(pool.aclose)
            adapters = AdapterService(
                desired,
                state,
                pool,
                roots=settings.adapter_roots,
                max_rank=settings.max_lora_rank,
                base_names=[registry.base_model],
                drain_timeout=settings.drain_timeout,
                revision=revision,
            )
            stack.push_async_callback(adapters.aclose)
            reconciler = Reconciler(adapters, settings.reconcile_interval)
            # The first pass learns what each engine holds and restores what an engine restart lost; engines
            # that are down are retried by the periodic pass.
            report = await reconciler.run_once()
            if report.engines_down:
                log.warning("engines down at start-up: %s", ", ".join(report.engines_down))
            task = asyncio.get_running_loop().create_task(reconciler.run_forever())
            stack.push_async_callback(_cancel, task)
            if desired.shared:  # other replicas' swaps: take the new state, then look at what the engines hold
                follow = asyncio.get_running_loop().create_task(adapters.follow(reconciler.observe))
                stack.push_async_callback(_cancel, follow)
            retriever = None
            if registry.needs_retrieval:
                store, close_store = open_store(settings)
                stack.callback(close_store)
                # Loading the model takes seconds of CPU: off the event loop.
                embedder = await anyio.to_thread.run_sync(Embedder.from_settings, settings)
                retriever = Retriever.from_settings(settings, store, embedder)
                try:
                    if not await anyio.to_thread.run_sync(retriever.store.exists):
                        log.warning("collection %r does not exist: run `lorag catalog ingest`", settings.collection)
                except StoreError as exc:
                    # A store that is down must not keep the gateway down: each assistant's on_failure decides.
                    log.warning("catalog store unavailable at start-up: %s", exc)
            service = ChatService(
                registry,
                pool,
                metrics,
                retriever,
                settings.retrieval_concurrency,
                adapters=adapters,
                retrieval_timeout=settings.retrieval_timeout,
            )
            log.info(
                "gateway up: %d assistants over %s at %s",
                len(registry),
                registry.base_model,
                ", ".join(settings.engine_urls()),
            )
            yield State(
                settings=settings,
                registry=registry,
                pool=pool,
                adapters=adapters,
                reconciler=reconciler,
                metrics=metrics,
                retriever=retriever,
                chat=service,
                readiness=Readiness(service, retriever),
                gate=Gate(keys, registry, metrics, storage=_limits_storage(settings)),
            )

    return lifespan


def _state_store(settings: GatewaySettings) -> DesiredStateStore:
    """Redis where LORAG_REDIS_URL is set (several replicas), else the state file (one process)."""
    if settings.redis_url is not None:
        from adapters.state_redis import RedisStateStore

        return RedisStateStore(settings.redis_url.get_secret_value(), prefix=settings.redis_prefix)
    return FileStateStore(StateFile(settings.state_file))


def _limits_storage(settings: GatewaySettings) -> Storage | None:
    """The keys' rate-limit counters: in Redis where LORAG_REDIS_URL is set, else in this process (None)."""
    if settings.redis_url is None:
        return None
    storage = storage_from_string(settings.redis_url.get_secret_value(), key_prefix=f"{settings.redis_prefix}limits")
    assert isinstance(storage, Storage)  # a redis:// URI is the synchronous storage
    return storage


def create_app(
    settings: GatewaySettings | None = None, *, upstream_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The gateway app; settings default to the environment, `upstream_transport` lets tests stand in for vLLM."""
    settings = settings or GatewaySettings()
    app = FastAPI(
        title="lorag gateway",
        summary="OpenAI-compatible chat over LoRA assistants, grounded on catalog facts",
        lifespan=_lifespan(settings, upstream_transport),
    )
    install_handlers(app)
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)
    for router in (chat.router, models.router, health.router, admin.router):
        app.include_router(router)
    return app
