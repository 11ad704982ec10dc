"""The gateway application: `create_app(settings)` and the lifespan that owns every client.

The lifespan opens, in order, the assistant registry (the manifest), the httpx client to vLLM, and, when any
assistant retrieves, the Qdrant client and the embedding model; it closes them in reverse. Handlers reach them
through the typed state it yields (see server.deps); nothing lives in module globals.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TypedDict

import anyio.to_thread
import httpx
from fastapi import FastAPI

from retrieval.embedder import Embedder
from retrieval.retriever import Retriever
from retrieval.store import build_client
from server.assistants import Registry
from server.chat import ChatService
from server.errors import install_handlers
from server.metrics import Metrics
from server.middleware import RequestContext
from server.readiness import Readiness
from server.routes import chat, health, models
from server.settings import GatewaySettings
from server.upstream import Upstream

log = logging.getLogger(__name__)


class State(TypedDict):
    """What the lifespan yields; Starlette copies it into every request's state."""

    settings: GatewaySettings
    registry: Registry
    upstream: Upstream
    metrics: Metrics
    retriever: Retriever | None
    chat: ChatService
    readiness: Readiness


def _lifespan(
    settings: GatewaySettings, transport: httpx.AsyncBaseTransport | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[State]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        registry = Registry.from_file(settings.assistants)
        metrics = Metrics()
        async with AsyncExitStack() as stack:
            upstream = Upstream.from_settings(settings, transport)
            stack.push_async_callback(upstream.aclose)
            retriever = None
            if registry.needs_retrieval:
                client = build_client(settings)
                stack.callback(client.close)
                # Loading the model takes seconds of CPU: off the event loop.
                embedder = await anyio.to_thread.run_sync(Embedder.from_settings, settings)
                retriever = Retriever.from_settings(settings, client, embedder)
                if not await anyio.to_thread.run_sync(retriever.store.exists):
                    log.warning("collection %r does not exist: run `lorag catalog ingest`", settings.collection)
            service = ChatService(registry, upstream, metrics, retriever, settings.retrieval_concurrency)
            log.info(
                "gateway up: %d assistants over %s at %s", len(registry), registry.base_model, settings.upstream_url
            )
            yield State(
                settings=settings,
                registry=registry,
                upstream=upstream,
                metrics=metrics,
                retriever=retriever,
                chat=service,
                readiness=Readiness(registry, upstream, retriever),
            )

    return lifespan


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
    for router in (chat.router, models.router, health.router):
        app.include_router(router)
    return app
