"""Dependency aliases: what a route may ask for, read from the lifespan's state and the request context.

The accessors are `async def` on purpose: FastAPI runs plain `def` dependencies in a worker thread, a hop
that costs more than everything else these do.
"""

from __future__ import annotations

import secrets
from typing import Annotated, cast

from fastapi import Depends, Request

from server.assistants import Registry
from server.chat import ChatService
from server.errors import Forbidden, Unauthorized
from server.hotswap import AdapterService
from server.keys import KeyRecord
from server.limits import Gate
from server.readiness import Readiness
from server.reconciler import Reconciler
from server.telemetry import Metrics


async def _chat(request: Request) -> ChatService:
    return cast(ChatService, request.state.chat)


async def _registry(request: Request) -> Registry:
    return cast(Registry, request.state.registry)


async def _adapters(request: Request) -> AdapterService:
    return cast(AdapterService, request.state.adapters)


async def _reconciler(request: Request) -> Reconciler:
    return cast(Reconciler, request.state.reconciler)


async def _admin(request: Request) -> None:
    """The admin API needs `Authorization: Bearer <LORAG_ADMIN_KEY>`; without a configured key it is off."""
    key = request.state.settings.admin_key
    if key is None:
        raise Forbidden("the admin API is off: set LORAG_ADMIN_KEY to use it")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), key.get_secret_value().encode()):
        raise Unauthorized("invalid or missing admin key (Authorization: Bearer <LORAG_ADMIN_KEY>)")


async def _is_admin(request: Request) -> bool:
    """Whether the request carries the admin key (routes open to all show admins more detail)."""
    try:
        await _admin(request)
    except (Forbidden, Unauthorized):
        return False
    return True


async def _gate(request: Request) -> Gate:
    return cast(Gate, request.state.gate)


async def _key(request: Request) -> KeyRecord | None:
    """The chat API key the request carries (401 without a valid one); None when no keys are configured."""
    return cast(Gate, request.state.gate).authenticate(request.headers.get("authorization", ""))


async def _metrics(request: Request) -> Metrics:
    return cast(Metrics, request.state.metrics)


async def _readiness(request: Request) -> Readiness:
    return cast(Readiness, request.state.readiness)


async def _request_id(request: Request) -> str:
    return cast(str, request.state.request_id)


async def _started(request: Request) -> float:
    return cast(float, request.state.started)


AdaptersDep = Annotated[AdapterService, Depends(_adapters)]
ReconcilerDep = Annotated[Reconciler, Depends(_reconciler)]
AdminDep = Depends(_admin)
IsAdminDep = Annotated[bool, Depends(_is_admin)]
GateDep = Annotated[Gate, Depends(_gate)]
KeyDep = Annotated[KeyRecord | None, Depends(_key)]
ChatDep = Annotated[ChatService, Depends(_chat)]
RegistryDep = Annotated[Registry, Depends(_registry)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
ReadinessDep = Annotated[Readiness, Depends(_readiness)]
RequestIdDep = Annotated[str, Depends(_request_id)]
StartedDep = Annotated[float, Depends(_started)]
