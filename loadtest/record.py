"""One request's timings, read from its SSE stream (or its JSON body) as it arrives, against an injectable clock.

The timings follow `vllm bench serve`'s chat client (vllm/benchmarks/lib/endpoint_request_func.py,
`async_request_openai_chat_completions`): the clock starts just before the request is sent; TTFT is the time to
the first chunk carrying text; each later text chunk adds one inter-token latency (ITL), the gap since the one
before; the end-to-end latency stops at the last chunk with choices (the usage chunk and `[DONE]` carry no token);
output tokens come from the usage chunk (`stream_options.include_usage`), else from the number of text chunks.

One deliberate difference: vLLM's client starts TTFT at the first chunk with choices, which from vLLM itself is
the role chunk sent with the first token. A proxy may send its role chunk before the model has produced anything,
so here the first chunk must carry text (`content`, or `reasoning_content` from a reasoning model).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Clock = Callable[[], float]

# Error types a record can end with (the summary counts them by type).
HTTP = "http_{status}"  # the server answered with this status
STREAM_ERROR = "stream_error"  # an in-band `data: {"error": ...}` event after the 200
INCOMPLETE = "incomplete"  # the stream ended without `data: [DONE]`
NO_CONTENT = "no_content"  # the answer carried no text at all
BAD_RESPONSE = "bad_response"  # a body or event that is not the JSON expected
TIMEOUT = "timeout"
CONNECT = "connect"  # the connection could not be opened
CONNECTION_LOST = "connection_lost"  # the server closed the connection mid-answer


@dataclass
class RequestRecord:
    """What one request measured; times in seconds, `error` None when it succeeded."""

    assistant: str
    target: str
    stream: bool
    start: float
    ttft: float | None = None
    latency: float | None = None
    itl: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int | None = None
    text_chunks: int = 0
    error: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: (latency - TTFT) / (output tokens - 1).

        None below two tokens and for answers not streamed (their tokens all arrive at once).
        """
        if not self.ok or not self.stream or self.ttft is None or self.latency is None or self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)

    def fail(self, error: str, detail: str = "") -> None:
        """Mark the request failed; the first error wins."""
        if self.error is None:
            self.error, self.detail = error, detail[:300]


def _text(delta: dict[str, Any]) -> str:
    return str(delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning") or "")


class StreamRecorder:
    """Parse an SSE byte stream piece by piece, timing events with `clock` when their bytes arrive."""

    def __init__(self, record: RequestRecord, clock: Clock = time.perf_counter) -> None:
        self.record = record
        self.clock = clock
        self.done = False
        self._buffer = b""
        self._last_text: float | None = None
        self._last_choice: float | None = None
        self._usage_tokens: int | None = None

    def feed(self, data: bytes) -> None:
        """Take the next bytes read; every event they complete is timed at this moment."""
        now = self.clock()
        # Normalise CRLF on the whole buffer so a CR and LF split across two reads still pair up.
        self._buffer = (self._buffer + data).replace(b"\r\n", b"\n")
        while (end := self._buffer.find(b"\n\n")) >= 0:
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            payload = "\n".join(
                line[5:].removeprefix(" ") for line in event.decode().split("\n") if line.startswith("data:")
            )
            if payload:  # comments (": ping") and events without data carry nothing to time
                self._event(payload, now)

    def _event(self, payload: str, now: float) -> None:
        record = self.record
        if payload == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            record.fail(BAD_RESPONSE, f"event is not JSON: {payload[:200]}")
            return
        if not isinstance(chunk, dict):
            record.fail(BAD_RESPONSE, f"event is not an object: {payload[:200]}")
            return
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message", "") if isinstance(error, dict) else str(error)
            record.fail(STREAM_ERROR, str(message))
            return
        if choices := chunk.get("choices"):
            self._last_choice = now
            if _text(choices[0].get("delta") or {}):
                if record.ttft is None:
                    record.ttft = now - record.start
                elif self._last_text is not None:
                    record.itl.append(now - self._last_text)
                self._last_text = now
                record.text_chunks += 1
        if usage := chunk.get("usage"):
            self._usage_tokens = usage.get("completion_tokens")
            record.prompt_tokens = usage.get("prompt_tokens")

    def finish(self) -> RequestRecord:
        """Close the record once the body has ended: latency, output tokens, and whether it succeeded."""
        record = self.record
        if self._buffer.strip():
            record.fail(INCOMPLETE, f"stream ended inside an event: {self._buffer[:200]!r}")
        if not self.done:
            record.fail(INCOMPLETE, "the stream ended without data: [DONE]")
        if record.ttft is None:
            record.fail(NO_CONTENT, "no chunk carried text")
        if self._last_choice is not None:
            record.latency = self._last_choice - record.start
        record.output_tokens = self._usage_tokens if self._usage_tokens is not None else record.text_chunks
        return record


def record_body(record: RequestRecord, body: bytes, now: float) -> RequestRecord:
    """Close a record from a whole (not streamed) JSON answer received at `now`.

    The client sees every token at once, so TTFT is the latency and there are no inter-token gaps.
    """
    try:
        answer = json.loads(body)
        message = answer["choices"][0]["message"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        record.fail(BAD_RESPONSE, f"not a chat completion: {body[:200]!r}")
        return record
    record.latency = record.ttft = now - record.start
    text = str(message.get("content") or message.get("reasoning_content") or "")
    record.text_chunks = 1 if text else 0
    usage = answer.get("usage") or {}
    record.output_tokens = usage.get("completion_tokens") or record.text_chunks
    record.prompt_tokens = usage.get("prompt_tokens")
    if not text:
        record.fail(NO_CONTENT, "the answer carried no text")
    return record
