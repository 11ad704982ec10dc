"""The SSE response: a StreamingResponse that always closes its generator, however the stream ends.

Starlette cancels the stream when the client disconnects, but a generator cancelled while suspended at a
`yield` is only closed when garbage-collected. Closing it here, shielded, runs its `finally` at once, and that
is what closes vLLM's stream and stops the generation.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class EventStream(StreamingResponse):
    """text/event-stream over an async generator of ready-made SSE events."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(events, headers={**SSE_HEADERS, **(headers or {})})
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._events.aclose()
