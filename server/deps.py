"""Dependency aliases: what a route may ask for, read from the lifespan's state and the request context.

The accessors are `async def` on purpose: FastAPI runs plain `def` dependencies in a worker thread, a hop
that costs more than everything else these do.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from server.assistants import Registry
from server.chat import ChatService
from server.metrics import Metrics
from server.readiness import Readiness


async def _chat(request: Request) -> ChatService:
    return cast(ChatService, request.state.chat)


async def _registry(request: Request) -> Registry:
    return cast(Registry, request.state.registry)


async def _metrics(request: Request) -> Metrics:
    return cast(Metrics, request.state.metrics)


async def _readiness(request: Request) -> Readiness:
    return cast(Readiness, request.state.readiness)


async def _request_id(request: Request) -> str:
    return cast(str, request.state.request_id)


async def _started(request: Request) -> float:
    return cast(float, request.state.started)


ChatDep = Annotated[ChatService, Depends(_chat)]
RegistryDep = Annotated[Registry, Depends(_registry)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
ReadinessDep = Annotated[Readiness, Depends(_readiness)]
RequestIdDep = Annotated[str, Depends(_request_id)]
StartedDep = Annotated[float, Depends(_started)]
