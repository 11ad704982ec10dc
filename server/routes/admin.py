"""The admin API under /admin: adapter versions (register, swap, roll back, retire) and reconciliation.

Every route needs the admin key. Errors are the gateway's usual OpenAI-shaped ones: a version that fails
validation is a 400 naming the problem, with nothing changed.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.deps import AdaptersDep, AdminDep, ReconcilerDep
from server.protocol import reject_lone_surrogates

router = APIRouter(prefix="/admin", dependencies=[AdminDep], tags=["admin"])


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="The adapter directory, inside one of LORAG_ADAPTER_ROOTS.")
    load: bool = Field(default=True, description="Load it on the adapter's engines now (ready for a fast swap).")

    _valid_unicode = model_validator(mode="before")(reject_lone_surrogates)  # a path is encoded for the OS


class SwapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(default=None, description="A registered version (short hash, or 'boot').")
    path: str | None = Field(default=None, description="Or a new version's directory: registered first.")

    _valid_unicode = model_validator(mode="before")(reject_lone_surrogates)

    @model_validator(mode="after")
    def _one(self) -> SwapRequest:
        if (self.version is None) == (self.path is None):
            raise ValueError("give exactly one of version and path")
        return self


@router.get("/adapters")
async def list_adapters(adapters: AdaptersDep) -> dict[str, Any]:
    """Every adapter: versions, served names, state, engines, load time, requests served and in flight."""
    return {"object": "list", "data": adapters.describe()}


@router.post("/adapters/{name}/versions", status_code=201)
async def register_version(name: str, body: RegisterRequest, adapters: AdaptersDep) -> dict[str, Any]:
    """Validate a new version and (by default) load it, without making it active."""
    version, validate_s, load_s = await adapters.register(name, body.path, load=body.load)
    return {**version.model_dump(), "validate_s": validate_s, "load_s": load_s}


@router.post("/adapters/{name}/swap")
async def swap(name: str, body: SwapRequest, adapters: AdaptersDep) -> dict[str, Any]:
    """Load, warm and switch to a version; the old one drains, then unloads."""
    return asdict(await adapters.swap(name, version=body.version, path=body.path))


@router.post("/adapters/{name}/rollback")
async def rollback(name: str, adapters: AdaptersDep) -> dict[str, Any]:
    """Switch back to the version that was active before."""
    return asdict(await adapters.rollback(name))


@router.post("/adapters/{name}/retire")
async def retire(name: str, adapters: AdaptersDep) -> dict[str, Any]:
    """New requests for its assistants get 404; running ones finish; then it is unloaded."""
    return await adapters.retire(name)


@router.post("/reconcile")
async def reconcile(reconciler: ReconcilerDep) -> dict[str, Any]:
    """Compare every engine with the desired state now and restore what is missing."""
    return asdict(await reconciler.run_once())
