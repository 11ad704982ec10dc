"""The gateway's errors, and the one place any error becomes an OpenAI-shaped response.

    GatewayError                   status  type                    code
    ├── InvalidRequest              400    invalid_request_error   invalid_value (or a more precise one)
    │   └── AdapterRefused          400    invalid_request_error   adapter_refused
    ├── Unauthorized                401    authentication_error    invalid_api_key
    ├── Forbidden                   403    permission_error        admin_disabled
    ├── ModelNotFound               404    invalid_request_error   model_not_found
    ├── BodyTooLarge                413    invalid_request_error   request_too_large
    ├── RateLimited                 429    rate_limit_error        rate_limit_exceeded, ... (with Retry-After)
    ├── UpstreamError               502    upstream_error          upstream_error
    ├── UpstreamUnavailable         503    service_unavailable     upstream_unavailable (engine down: Retry-After)
    │   ├── RetrievalUnavailable    503    service_unavailable     retrieval_unavailable
    │   ├── Overloaded              503    service_unavailable     overloaded (with Retry-After)
    │   └── StateUnwritable         503    service_unavailable     state_unwritable
    └── UpstreamTimeout             504    timeout_error           upstream_timeout

Lower layers never leak: httpx and vLLM errors are translated in `server.upstream`, Qdrant and embedder errors in
`server.chat`, request validation and routing errors by the handlers below. Every body is
`{"error": {"message", "type", "param", "code"}}`; once a stream has started, the same body travels as an SSE
`data:` event instead.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# How many validation problems one message lists; the rest are counted.
MAX_LISTED = 3


class GatewayError(Exception):
    """An error the client sees with an HTTP status and an OpenAI error body."""

    status = 500
    type = "server_error"
    code: str | None = "internal_error"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        """The OpenAI error body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        """HTTP headers the response carries besides the body."""
        return {}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class AdapterRefused(InvalidRequest):
    """An engine would not load an adapter version that passed validation: the adapter is at fault, and the
    engine's own message (paths, stack details) stays in the gateway's log."""

    code = "adapter_refused"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "admin_disabled"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class BodyTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    """A key went over one of its limits (server.limits); `code` says which, `Retry-After` when to come back."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message, code=code, param=param)
        self.retry_after = max(1, math.ceil(retry_after))

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after)}


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnavailable(GatewayError):
    """Nothing could serve the request now; `retry_after` (whole seconds, at least 1) says when to come back."""

    status = 503
    type = "service_unavailable"
    code = "upstream_unavailable"

    def __init__(
        self, message: str, *, code: str | None = None, param: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code, param=param)
        self.retry_after = None if retry_after is None else max(1, math.ceil(retry_after))

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"retry-after": str(self.retry_after)}


class RetrievalUnavailable(UpstreamUnavailable):
    code = "retrieval_unavailable"


class Overloaded(UpstreamUnavailable):
    """Admission control refused the request: every engine that could take it is full. Refused at once, so the
    client may retry elsewhere or later (`Retry-After`, whole seconds) instead of queueing past its timeout."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)


class StateUnwritable(UpstreamUnavailable):
    """The adapters' state file could not be written (disk full, permissions): the operation was undone."""

    code = "state_unwritable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The HTTP response for a gateway error."""
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def sse_error(exc: GatewayError) -> bytes:
    """The in-band form of an error, for a stream whose 200 has already been sent."""
    return b"data: " + json.dumps(exc.body()).encode() + b"\n\n"


def _field(loc: Sequence[int | str]) -> str:
    # FastAPI prefixes body fields with "body"; the client wrote the body, so it names fields from its root.
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts)


def from_validation(errors: Sequence[Any]) -> InvalidRequest:
    """One 400 naming the offending fields, built from the error list only: inputs and paths never leak."""
    messages: list[str] = []
    params: list[str] = []
    for error in errors:
        field = _field(error.get("loc", ()))
        kind = error.get("type", "")
        if kind == "json_invalid":
            detail = error.get("ctx", {}).get("error", "invalid JSON")
            messages.append(f"the request body is not valid JSON ({detail})")
            continue
        if kind == "missing" and not field:
            messages.append("the request body is missing: send a JSON object")
            continue
        if kind == "invalid_unicode":  # raised for the whole body; the field it found is in the context
            field = str(error.get("ctx", {}).get("field") or field)
        params.append(field)
        if kind == "extra_forbidden":
            messages.append(f"Unrecognized request argument supplied: {field}")
        else:
            messages.append(f"{field or 'body'}: {error.get('msg', 'invalid value')}")
    shown = messages[:MAX_LISTED]
    if len(messages) > MAX_LISTED:
        shown.append(f"and {len(messages) - MAX_LISTED} more")
    return InvalidRequest("; ".join(shown) or "invalid request", param=params[0] if params else None)


def from_http(exc: StarletteHTTPException) -> GatewayError:
    """Starlette's own errors (unknown route, wrong method, body limit) in the gateway's tree."""
    detail, status = str(exc.detail), exc.status_code
    if status == 413:
        return BodyTooLarge(detail)
    if status == 404:
        return InvalidRequest(f"{detail}: no such route (the API is under /v1)", code="not_found", status=404)
    if 400 <= status < 500:
        return InvalidRequest(detail, code=None, status=status)
    return GatewayError(detail, status=status)


async def _on_gateway_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return error_response(exc, headers=exc.headers() or None)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(from_validation(exc.errors()))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(from_http(exc), headers=dict(exc.headers or {}))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    # Starlette answers unhandled errors outside every middleware, so the request id is added here.
    request_id = getattr(request.state, "request_id", None)
    headers = {"x-request-id": request_id} if isinstance(request_id, str) else None
    return error_response(GatewayError("internal error in the gateway"), headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Route every error the app can raise through `error_response`."""
    app.add_exception_handler(GatewayError, _on_gateway_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
