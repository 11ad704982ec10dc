"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from server.chat import Prepared
from server.deps import ChatDep, RequestIdDep, StartedDep
from server.protocol import ChatCompletionRequest
from server.streaming import EventStream

router = APIRouter()


def _headers(prepared: Prepared) -> dict[str, str]:
    # Which adapter version answered: what an operator checks after a swap (and the swap benchmark times).
    headers = {"x-lorag-served-model": prepared.served_name}
    # Server-Timing is the standard place for it, and lets a load test read retrieval's share per request.
    if prepared.retrieval_seconds is not None:
        headers["server-timing"] = f"retrieval;dur={prepared.retrieval_seconds * 1000:.2f}"
    return headers


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, chat: ChatDep, request_id: RequestIdDep, started: StartedDep
) -> Response:
    """A chat completion from the assistant named in `model`, grounded on catalog facts."""
    prepared = await chat.prepare(body, request_id, started)
    if prepared.stream:
        relay = chat.stream(prepared)
        await anext(relay)  # opens vLLM's stream: errors until here are still plain HTTP errors
        return EventStream(relay, headers=_headers(prepared))
    return JSONResponse(await chat.complete(prepared), headers=_headers(prepared))
