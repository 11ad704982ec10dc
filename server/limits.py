"""The gate in front of the chat service: which key calls, which assistants its tenant sees, its rate limits and
the assistant's caps on one request.

Rate limits are per key and per minute, counted with the `limits` library (fixed windows that start at a key's
first request) in this process's memory, or in Redis where LORAG_REDIS_URL is set, so that every replica counts
against the same windows: requests are counted as they arrive; tokens (prompt + completion, as vLLM
reports them in `usage`) are counted once an answer has ended, so a key is refused once it has used its minute's
tokens, not before a request that would go over. Concurrent streams are a plain counter per key in each process:
with several replicas a key may hold that many streams on each.

A tenant's key sees only its assistants: another tenant's assistant is a 404 with the very message an unknown
name gets, so a client cannot learn which other assistants exist.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Protocol

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, Storage
from limits.strategies import FixedWindowRateLimiter

from server.assistants import Assistant, Registry
from server.errors import BodyTooLarge, InvalidRequest, ModelNotFound, RateLimited
from server.keys import KeyRecord, KeyRing
from server.protocol import ChatCompletionRequest
from server.telemetry import UNKNOWN, Metrics


class Finishable(Protocol):
    """What a ticket hooks into: the chat service's prepared request (server.chat.Prepared)."""

    on_done: Any
    on_usage: Any


class Ticket:
    """One admitted request's hold on its key: a stream slot until it ends, and its tokens when counted."""

    def __init__(self, gate: Gate, key: KeyRecord | None, stream: bool) -> None:
        self.gate, self.key, self.stream = gate, key, stream
        self._open = stream and key is not None
        if self._open and key is not None:
            gate.streams[key.id] += 1

    def usage(self, usage: Any) -> None:
        """Count vLLM's usage of this request against the key's tokens per minute."""
        if self.key is None or not self.key.limits.tokens_per_minute or not isinstance(usage, dict):
            return
        tokens = usage.get("total_tokens")
        if not isinstance(tokens, int):
            counts = (usage.get("prompt_tokens"), usage.get("completion_tokens"))
            tokens = sum(v for v in counts if isinstance(v, int))
        if tokens > 0:
            item = RateLimitItemPerMinute(self.key.limits.tokens_per_minute)
            self.gate.window.hit(item, self.key.id, "tokens", cost=tokens)

    def close(self) -> None:
        """The request is over: give the stream slot back (idempotent)."""
        if self._open and self.key is not None:
            self._open = False
            self.gate.streams[self.key.id] -= 1
            if self.gate.streams[self.key.id] <= 0:
                del self.gate.streams[self.key.id]

    def attach(self, prepared: Finishable) -> None:
        """Close with the prepared request and count its usage; it calls `on_done` however it ends."""
        previous = prepared.on_done

        def done() -> None:
            self.close()
            if previous is not None:
                previous()

        prepared.on_done = done
        prepared.on_usage = self.usage


class Gate:
    """Authentication, tenant visibility, per-key limits and per-assistant caps; one per app."""

    def __init__(
        self, keys: KeyRing, registry: Registry, metrics: Metrics | None = None, storage: Storage | None = None
    ) -> None:
        self.keys = keys
        self.registry = registry
        self.metrics = metrics
        self.window = FixedWindowRateLimiter(storage or MemoryStorage())
        self.streams: Counter[str] = Counter()

    def authenticate(self, authorization: str) -> KeyRecord | None:
        """The caller's key; None when no keys are configured (the open demo). Unauthorized (401) otherwise."""
        if not self.keys.enabled:
            return None
        return self.keys.authenticate(authorization)

    def visible(self, key: KeyRecord | None) -> list[Assistant]:
        """The assistants this key's tenant may use."""
        return [a for a in self.registry if key is None or key.allows(a.name)]

    def resolve(self, key: KeyRecord | None, name: str) -> Assistant:
        """The assistant `name`, or the same 404 for one that does not exist and one the key may not use."""
        if key is None:
            return self.registry.resolve(name)
        visible = self.visible(key)
        for assistant in visible:
            if assistant.name == name:
                return assistant
        known = ", ".join(sorted(a.name for a in visible))
        raise ModelNotFound(f"The model {name!r} does not exist; available: {known}", param="model")

    def admit(self, key: KeyRecord | None, body: ChatCompletionRequest, size: int) -> Ticket:
        """Check the assistant's caps and the key's limits; the ticket must be attached or closed."""
        try:
            assistant = self.resolve(key, body.model)
        except ModelNotFound:
            if self.metrics is not None:  # counted as the chat service counts an unknown model
                self.metrics.requests.labels(UNKNOWN, "true" if body.stream else "false").inc()
                self.metrics.errors.labels(UNKNOWN, "404").inc()
            raise
        check_caps(assistant, body, size)
        if key is not None:
            self._check_limits(key, bool(body.stream))
        return Ticket(self, key, bool(body.stream))

    def _retry_after(self, item: RateLimitItemPerMinute, key: KeyRecord, kind: str) -> float:
        return self.window.get_window_stats(item, key.id, kind).reset_time - time.time()

    def _check_limits(self, key: KeyRecord, stream: bool) -> None:
        limits = key.limits
        if limits.tokens_per_minute:
            item = RateLimitItemPerMinute(limits.tokens_per_minute)
            if not self.window.test(item, key.id, "tokens"):
                raise RateLimited(
                    f"this key used its {limits.tokens_per_minute} tokens per minute (limits.tokens_per_minute)",
                    retry_after=self._retry_after(item, key, "tokens"),
                    code="tokens_rate_limit_exceeded",
                )
        if stream and limits.concurrent_streams and self.streams[key.id] >= limits.concurrent_streams:
            raise RateLimited(
                f"this key has {limits.concurrent_streams} streams open, its limit (limits.concurrent_streams)",
                retry_after=1,
                code="concurrency_limit_exceeded",
            )
        if limits.requests_per_minute:
            item = RateLimitItemPerMinute(limits.requests_per_minute)
            if not self.window.hit(item, key.id, "requests"):
                raise RateLimited(
                    f"this key made its {limits.requests_per_minute} requests per minute (limits.requests_per_minute)",
                    retry_after=self._retry_after(item, key, "requests"),
                )


def check_caps(assistant: Assistant, body: ChatCompletionRequest, size: int) -> None:
    """The assistant's caps on one request: 413 for the body, 400 naming the field for the rest."""
    caps, name = assistant.limits, assistant.name
    if caps.max_body_bytes is not None and size > caps.max_body_bytes:
        raise BodyTooLarge(
            f"the request body is {size} bytes; {name!r} accepts at most {caps.max_body_bytes} (limits.max_body_bytes)"
        )
    if caps.max_messages is not None and len(body.messages) > caps.max_messages:
        raise InvalidRequest(
            f"messages: {len(body.messages)} messages; {name!r} accepts at most {caps.max_messages} "
            "(limits.max_messages)",
            param="messages",
            code="limit_exceeded",
        )
    if caps.max_message_chars is not None:
        for index, message in enumerate(body.messages):
            if len(message.text()) > caps.max_message_chars:
                raise InvalidRequest(
                    f"messages.{index}.content: {len(message.text())} characters; {name!r} accepts at most "
                    f"{caps.max_message_chars} per message (limits.max_message_chars)",
                    param=f"messages.{index}.content",
                    code="limit_exceeded",
                )
    wanted = body.requested_max_tokens()
    if caps.max_tokens is not None and wanted is not None and wanted > caps.max_tokens:
        raise InvalidRequest(
            f"max_tokens: {wanted}; {name!r} answers with at most {caps.max_tokens} tokens (limits.max_tokens)",
            param="max_tokens",
            code="limit_exceeded",
        )
