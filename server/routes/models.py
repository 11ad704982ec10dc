"""GET /v1/models and /v1/models/{model}: the assistants, each with the base model as parent."""

from __future__ import annotations

from fastapi import APIRouter

from server.assistants import Assistant, Registry
from server.deps import RegistryDep
from server.protocol import ModelCard, ModelList

router = APIRouter()


def _card(registry: Registry, assistant: Assistant) -> ModelCard:
    return ModelCard(id=assistant.name, root=registry.served_name(assistant), parent=registry.base_model)


@router.get("/v1/models")
async def list_models(registry: RegistryDep) -> ModelList:
    """Every assistant a client can name in `model`."""
    return ModelList(data=[_card(registry, a) for a in registry])


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, registry: RegistryDep) -> ModelCard:
    """One assistant, or a 404 in OpenAI's shape."""
    return _card(registry, registry.resolve(model))
