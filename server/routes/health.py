"""/health (the process answers), /ready (it can serve) and /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from server.deps import IsAdminDep, MetricsDep, ReadinessDep
from server.errors import UpstreamUnavailable
from server.readiness import OK
from server.telemetry import CONTENT_TYPE

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: answers while the event loop runs."""
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(readiness: ReadinessDep, admin: IsAdminDep) -> JSONResponse:
    """Readiness: 200 when vLLM serves every assistant's model and the catalog is there, else 503. Each check
    says "ok" or "failing"; what failed (engine addresses, missing models) only with the admin key."""
    checks = await readiness.check()
    failed = {name: problem for name, problem in checks.items() if problem != OK}
    if not admin:
        checks = {name: OK if problem == OK else "failing" for name, problem in checks.items()}
    if not failed:
        return JSONResponse({"status": "ready", "checks": checks})
    detail = "; ".join(f"{k}: {v}" for k, v in failed.items()) if admin else ", ".join(failed)
    error = UpstreamUnavailable(f"not ready: {detail}", code="not_ready")
    return JSONResponse({**error.body(), "checks": checks}, status_code=error.status)


@router.get("/metrics")
async def metrics(registry: MetricsDep) -> Response:
    """Prometheus text exposition."""
    return Response(registry.render(), media_type=CONTENT_TYPE)
