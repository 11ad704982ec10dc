"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from server.chat import ChatService, Prepared
from server.deps import ChatDep, GateDep, KeyDep, RequestIdDep, StartedDep
from server.errors import GatewayError
from server.protocol import ChatCompletionRequest
from server.streaming import EventStream

router = APIRouter()

# nginx's code for "the client closed the request": nobody reads it, but logs and metrics do.
CLIENT_GONE = 499


def _headers(prepared: Prepared) -> dict[str, str]:
    # Which adapter version answered: what an operator checks after a swap (and the swap benchmark times).
    headers = {"x-lorag-served-model": prepared.served_name}
    # Server-Timing is the standard place for it, and lets a load test read retrieval's share per request.
    if prepared.retrieval_seconds is not None:
        headers["server-timing"] = f"retrieval;dur={prepared.retrieval_seconds * 1000:.2f}"
    if prepared.retrieval_skipped:  # the store failed and the assistant answers without facts (on_failure: degrade)
        headers["x-lorag-retrieval"] = "skipped"
    if prepared.grounding is not None:  # the truthfulness guard's verdict (streams carry it in `grounding`)
        headers["x-lorag-grounding"] = prepared.grounding
    return headers


async def _complete_unless_gone(request: Request, chat: ChatService, prepared: Prepared) -> dict[str, Any] | None:
    """The whole answer, or None when the client left first: then the request to vLLM is cancelled (its
    connection closed), so the engine stops generating for nobody. Streams get the same from the relay."""
    answer: dict[str, Any] | None = None
    error: GatewayError | None = None
    async with anyio.create_task_group() as group:

        async def complete() -> None:
            nonlocal answer, error
            try:
                answer = await chat.complete(prepared)
            except GatewayError as exc:
                error = exc  # raised below: a task group would wrap it in an exception group
            finally:
                group.cancel_scope.cancel()

        async def watch() -> None:
            # The body has been read, so the next message is the disconnect (or nothing until we answer).
            while (await request.receive())["type"] != "http.disconnect":
                continue
            chat.metrics.disconnects.labels(prepared.assistant.name).inc()
            group.cancel_scope.cancel()

        group.start_soon(watch)
        group.start_soon(complete)
    if error is not None:
        raise error
    return answer


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    chat: ChatDep,
    gate: GateDep,
    key: KeyDep,
    request_id: RequestIdDep,
    started: StartedDep,
) -> Response:
    """A chat completion from the assistant named in `model`, grounded on catalog facts."""
    ticket = gate.admit(key, body, len(await request.body()))
    try:
        prepared = await chat.prepare(body, request_id, started)
    except BaseException:
        ticket.close()
        raise
    ticket.attach(prepared)  # from here the request's end, however it comes, closes the ticket
    if prepared.stream:
        relay = chat.stream(prepared)
        await anext(relay)  # opens vLLM's stream: errors until here are still plain HTTP errors
        return EventStream(relay, headers=_headers(prepared))
    answer = await _complete_unless_gone(request, chat, prepared)
    if answer is None:
        return Response(status_code=CLIENT_GONE)
    return JSONResponse(answer, headers=_headers(prepared))
