"""The HTTP client to vLLM's OpenAI server: the one boundary where its failures become gateway errors.

Transport failures map by exception type (`TRANSPORT_ERRORS`, tested to cover every httpx request error);
vLLM's own error answers map by status, their message kept and their shape normalised. Streams are read as
raw bytes and split into SSE events here, so the relay sees complete `data:` payloads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import httpx

from server.errors import (
    AdapterRefused,
    BodyTooLarge,
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from server.settings import GatewaySettings

log = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
DONE = b"[DONE]"

# Most specific first is not needed: lookup walks the raised exception's MRO.
TRANSPORT_ERRORS: dict[type[httpx.RequestError], type[GatewayError]] = {
    httpx.RequestError: UpstreamError,
    httpx.TransportError: UpstreamError,
    httpx.TimeoutException: UpstreamTimeout,
    httpx.ConnectTimeout: UpstreamUnavailable,  # nothing was sent: the server is down or unreachable
    httpx.PoolTimeout: UpstreamUnavailable,  # every pooled connection busy: the gateway is saturated
    httpx.ReadTimeout: UpstreamTimeout,
    httpx.WriteTimeout: UpstreamTimeout,
    httpx.NetworkError: UpstreamError,
    httpx.ConnectError: UpstreamUnavailable,
    httpx.ReadError: UpstreamError,
    httpx.WriteError: UpstreamError,
    httpx.CloseError: UpstreamError,
    httpx.ProtocolError: UpstreamError,
    httpx.LocalProtocolError: UpstreamError,
    httpx.RemoteProtocolError: UpstreamError,
    httpx.ProxyError: UpstreamUnavailable,
    httpx.UnsupportedProtocol: UpstreamUnavailable,  # a misconfigured LORAG_UPSTREAM_URL
    httpx.DecodingError: UpstreamError,
    httpx.TooManyRedirects: UpstreamError,
}

# Retry-After of a 503 when an engine cannot be reached or says it is busy or starting. The gateway probes an engine
# it found down every second (server.reconciler) and routes to it again as soon as it answers; how long a restart
# takes it cannot know, so it names a short wait and leaves longer back-off to the client's retries.
ENGINE_RETRY_AFTER_S = 2
# Seconds an idle pooled connection to vLLM is kept. vLLM's server (uvicorn) closes a connection idle for 5 s; with
# httpx's default of 5 s too, a request could go out on a connection the server was closing that very moment and
# fail with a reset (seen once in 80,000 requests of the soak benchmark). Expiring first closes that race.
UPSTREAM_KEEPALIVE_S = 2.0

_TRANSPORT_MESSAGES: dict[type[GatewayError], str] = {
    UpstreamUnavailable: "the model server is unavailable",
    UpstreamTimeout: "the model server did not answer in time",
    UpstreamError: "the model server failed",
}


def from_transport(exc: httpx.RequestError) -> GatewayError:
    """The gateway error for a failure to talk to vLLM (the message names the kind, not internal addresses)."""
    kind = next(TRANSPORT_ERRORS[c] for c in type(exc).__mro__ if c in TRANSPORT_ERRORS)
    log.warning("upstream %s: %r", type(exc).__name__, exc)
    # A full pool is the gateway's own limit, not the engine refusing: routing must not take the engine for down.
    code = "upstream_pool_full" if isinstance(exc, httpx.PoolTimeout) else None
    message = f"{_TRANSPORT_MESSAGES[kind]} ({type(exc).__name__})"
    if kind is UpstreamUnavailable:
        return UpstreamUnavailable(message, code=code, retry_after=ENGINE_RETRY_AFTER_S)
    return kind(message, code=code)


def upstream_message(body: bytes) -> tuple[str, str | None]:
    """The message and param of an error answer: vLLM's `{"error": {...}}`, FastAPI's `{"detail": ...}` or text."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()[:500] or "no message", None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or json.dumps(error)[:500]
            param = error.get("param")
            # vLLM names a field it could not parse from the root of the body ("body.top_k"); clients name it
            # from the body they wrote, as the gateway's own 400s do.
            return str(message), str(param).removeprefix("body.") if param else None
        if isinstance(error, str):
            return error, None
    return json.dumps(data)[:500], None


# Answers to a LoRA load or unload that mean "busy" or "slow", not "this adapter cannot be served".
_NOT_A_REFUSAL = frozenset({408, 429, 503, 504})


def from_status(status: int, body: bytes) -> GatewayError:
    """The gateway error for vLLM's error answer to a chat request."""
    message, param = upstream_message(body)
    if status in (400, 422):
        return InvalidRequest(message, param=param)
    if status == 413:
        return BodyTooLarge(message)
    if status == 404:
        # The assistant exists in the manifest, so a 404 here means vLLM lacks its adapter: a gateway fault.
        return UpstreamError(
            f"the model server does not serve this assistant's model: {message}", code="upstream_model_not_found"
        )
    if status in (429, 503):
        return UpstreamUnavailable(
            f"the model server is overloaded or starting: {message}",
            code="upstream_overloaded",
            retry_after=ENGINE_RETRY_AFTER_S,
        )
    if status in (408, 504):
        return UpstreamTimeout(f"the model server timed out: {message}")
    return UpstreamError(f"the model server answered {status}: {message}")


class Upstream:
    """vLLM's OpenAI API over one httpx connection pool (owned by the app's lifespan).

    Chat requests go straight to the pool's transport: the client layers above it (URL merging, cookie jar,
    auth and redirect flows) cost about 0.3-0.6 ms of CPU per request and do nothing a gateway wants; a
    cookie jar shared by every client's requests is even wrong. The client serves the light calls.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        transport: httpx.AsyncBaseTransport,
        timeout: httpx.Timeout,
        headers: dict[str, str],
    ) -> None:
        self.client = client
        self.transport = transport
        self._chat_url = client.base_url.join(CHAT_PATH)
        self._timeout = timeout.as_dict()
        self._headers = {"content-type": "application/json", **headers}

    @classmethod
    def from_settings(
        cls, settings: GatewaySettings, transport: httpx.AsyncBaseTransport | None = None, url: str | None = None
    ) -> Upstream:
        """A pool for `url` (default settings.upstream_url) with the configured timeouts and size (`transport`
        replaces it)."""
        headers = {}
        if settings.upstream_api_key is not None:
            headers["authorization"] = f"Bearer {settings.upstream_api_key.get_secret_value()}"
        pool = transport or ShardedTransport.sized(settings.upstream_max_connections)
        timeout = httpx.Timeout(
            connect=settings.upstream_connect_timeout,
            read=settings.upstream_read_timeout,
            write=settings.upstream_connect_timeout,
            pool=settings.upstream_connect_timeout,
        )
        client = httpx.AsyncClient(
            base_url=url or settings.upstream_url, headers=headers, timeout=timeout, transport=pool
        )
        return cls(client, pool, timeout, headers)

    async def aclose(self) -> None:
        await self.client.aclose()  # closes the transport too

    @property
    def url(self) -> str:
        return str(self.client.base_url).rstrip("/")

    async def send(self, payload: dict[str, Any], request_id: str) -> httpx.Response:
        """Send a chat request; return once vLLM answered 200 (its body unread), else raise. Nothing has reached
        the client yet when this raises, so the caller may still try another engine."""
        request = httpx.Request(
            "POST",
            self._chat_url,
            content=json.dumps(payload).encode(),
            headers={**self._headers, "x-request-id": request_id},
            extensions={"timeout": self._timeout},
        )
        try:
            response = await self.transport.handle_async_request(request)
        except httpx.RequestError as exc:
            raise from_transport(exc) from exc
        if response.status_code != 200:
            raise from_status(response.status_code, await _read(response))
        return response

    async def chat(self, payload: dict[str, Any], request_id: str) -> dict[str, Any]:
        """A non-streamed chat completion, as vLLM's JSON."""
        return await self.read_json(await self.send(payload, request_id))

    async def read_json(self, response: httpx.Response) -> dict[str, Any]:
        """The JSON object of a non-streamed answer opened by `send`."""
        body = await _read(response)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise UpstreamError("the model server answered with invalid JSON") from exc
        if not isinstance(data, dict):
            raise UpstreamError("the model server answered with JSON that is not an object")
        return data

    async def events(self, response: httpx.Response) -> AsyncGenerator[bytes, None]:
        """The `data:` payloads of an open stream up to [DONE]; closes the response whatever happens."""
        buffer = b""
        done = False
        try:
            async for chunk in _stream(response):
                if done:
                    continue  # read to the end of the body: only a fully read connection goes back to the pool
                buffer += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
                while (end := buffer.find(b"\n\n")) >= 0:
                    event, buffer = buffer[:end], buffer[end + 2 :]
                    data = _data(event)
                    if data == DONE:
                        done = True
                        break
                    if data is not None:
                        yield data
            if done:
                return
        except httpx.RequestError as exc:
            raise from_transport(exc) from exc
        finally:
            # Shielded: when the client has gone, this close is what tells vLLM to stop generating.
            with anyio.CancelScope(shield=True):
                await response.aclose()
        raise UpstreamError("the model server ended the stream before [DONE]")

    async def models(self, timeout: float = 5.0) -> list[str]:
        """The model ids vLLM serves (base model and loaded adapters)."""
        return [str(card["id"]) for card in await self.model_cards(timeout)]

    async def model_cards(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """vLLM's model cards: id, root (the model or adapter path) and parent (None for the base model)."""
        response = await self._call("GET", "/v1/models", None, timeout)
        try:
            cards = response.json()["data"]
            if all(isinstance(card, dict) and "id" in card for card in cards):
                return list(cards)
        except (ValueError, KeyError, TypeError):
            pass
        raise UpstreamError("the model server's model list is malformed")

    async def load_lora(self, name: str, path: str, timeout: float = 120.0) -> None:
        """Load an adapter under `name` (vLLM's runtime LoRA API; VLLM_ALLOW_RUNTIME_LORA_UPDATING must be on)."""
        body = {"lora_name": name, "lora_path": path}
        await self._call("POST", "/v1/load_lora_adapter", body, timeout, refusal=f"load {name!r}")

    async def unload_lora(self, name: str, timeout: float = 30.0) -> None:
        await self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name}, timeout, refusal=f"unload {name!r}")

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None, timeout: float, refusal: str | None = None
    ) -> httpx.Response:
        """A light JSON call through the client; errors translated like a chat request's. With `refusal` (what
        the call does to an adapter), an error answer other than busy or slow is the engine refusing that
        adapter: vLLM says so with 400, 404 or 500, and its message carries the adapter's absolute path and
        internals, so it goes to the log and the client gets a 400 naming the adapter."""
        try:
            response = await self.client.request(method, path, json=body, timeout=timeout)
        except httpx.RequestError as exc:
            raise from_transport(exc) from exc
        status = response.status_code
        if status == 200:
            return response
        if refusal is not None and status not in _NOT_A_REFUSAL:
            log.warning(
                "engine %s refused to %s: %s %s", self.url, refusal, status, upstream_message(response.content)[0]
            )
            raise AdapterRefused(
                f"the model server refused to {refusal} (HTTP {status}): the adapter does not fit the engine's model "
                "or LoRA settings; the gateway's log has the engine's reason",
                param="path",
            )
        raise from_status(status, response.content)


class ShardedTransport(httpx.AsyncBaseTransport):
    """Several httpcore pools used in turn. httpcore's pool walks every one of its connections (an expiry check
    that polls the socket) on each request; at tens of concurrent requests that walk was ~13 % of the gateway's
    CPU (BENCHMARKS.md). Smaller pools make each walk shorter; the connection limit is split between them."""

    def __init__(self, shards: list[httpx.AsyncHTTPTransport]) -> None:
        self.shards = shards
        self._next = 0

    @classmethod
    def sized(cls, max_connections: int, per_shard: int = 16) -> ShardedTransport:
        count = max(1, min(8, max_connections // per_shard))
        size = max(1, max_connections // count)
        limits = httpx.Limits(
            max_connections=size, max_keepalive_connections=size, keepalive_expiry=UPSTREAM_KEEPALIVE_S
        )
        return cls([httpx.AsyncHTTPTransport(limits=limits) for _ in range(count)])

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = self.shards[self._next]
        self._next = (self._next + 1) % len(self.shards)
        return await shard.handle_async_request(request)

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()


def _stream(response: httpx.Response) -> httpx.AsyncByteStream:
    # The transport's raw byte stream: no decoding layers (vLLM does not compress its answers).
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    return stream


async def _read(response: httpx.Response) -> bytes:
    """The whole body of a transport-level response, which is then closed."""
    try:
        return b"".join([chunk async for chunk in _stream(response)])
    except httpx.RequestError as exc:
        raise from_transport(exc) from exc
    finally:
        await response.aclose()


def _data(event: bytes) -> bytes | None:
    """The data of one SSE event (several data lines joined), or None for comments and empty events."""
    if event.startswith(b"data: ") and b"\n" not in event:
        return event[6:]  # the common case: one line
    lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None
