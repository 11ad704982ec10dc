"""GET /v1/models and /v1/models/{model}: the assistants, each with the base model as parent."""

from __future__ import annotations

from fastapi import APIRouter

from server.assistants import Assistant
from server.chat import ChatService
from server.deps import ChatDep, GateDep, KeyDep
from server.errors import GatewayError
from server.protocol import ModelCard, ModelList

router = APIRouter()


def _card(chat: ChatService, assistant: Assistant) -> ModelCard:
    # root: the model vLLM serves the assistant under now (an adapter version's name after a swap).
    return ModelCard(id=assistant.name, root=chat.current_served_name(assistant), parent=chat.registry.base_model)


@router.get("/v1/models")
async def list_models(chat: ChatDep, gate: GateDep, key: KeyDep) -> ModelList:
    """Every assistant the caller's key can name in `model` (retired ones are gone)."""
    cards = []
    for assistant in gate.visible(key):
        try:
            cards.append(_card(chat, assistant))
        except GatewayError:
            continue
    return ModelList(data=cards)


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, chat: ChatDep, gate: GateDep, key: KeyDep) -> ModelCard:
    """One assistant, or a 404 in OpenAI's shape (also for another tenant's)."""
    return _card(chat, gate.resolve(key, model))
