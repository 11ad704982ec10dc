"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from server.chat import Prepared
from server.deps import ChatDep, RequestIdDep, StartedDep
from server.protocol import ChatCompletionRequest
from server.streaming import EventStream

router = APIRouter()


def _timing(prepared: Prepared) -> dict[str, str]:
    # Server-Timing is the standard place for it, and lets a load test read retrieval's share per request.
    if prepared.retrieval_seconds is None:
        return {}
    return {"server-timing": f"retrieval;dur={prepared.retrieval_seconds * 1000:.2f}"}


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, chat: ChatDep, request_id: RequestIdDep, started: StartedDep
) -> Response:
    """A chat completion from the assistant named in `model`, grounded on catalog facts."""
    prepared = await chat.prepare(body, request_id, started)
    if prepared.stream:
        relay = chat.stream(prepared)
        await anext(relay)  # opens vLLM's stream: errors until here are still plain HTTP errors
        return EventStream(relay, headers=_timing(prepared))
    return JSONResponse(await chat.complete(prepared), headers=_timing(prepared))
