"""Per-request plumbing as plain ASGI (no per-request task, unlike BaseHTTPMiddleware): the request id and
start time, and the request-size limit.

Every response, errors and streams included, carries `x-request-id`: the client's own when it sent a sane one,
else a fresh one. The same id goes to vLLM, so one request can be followed through both logs.
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import BodyTooLarge, error_response

REQUEST_ID = "x-request-id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContext:
    """Stamps request id and start time into the request state; refuses bodies over `max_body_bytes`."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        incoming = headers.get(REQUEST_ID.encode(), b"").decode("latin-1")
        request_id = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"], state["started"] = request_id, started
        id_header = (REQUEST_ID.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        limit = self.max_body_bytes
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            response = error_response(BodyTooLarge(f"the request body is {int(length)} bytes; the limit is {limit}"))
            await response(scope, receive, send_with_id)
            return
        received = 0

        async def limited_receive() -> Message:
            # A chunked body has no content-length: count as it arrives. FastAPI passes HTTPException through.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"the request body is over the limit of {limit} bytes")
            return message

        await self.app(scope, limited_receive, send_with_id)
