"""What the gateway changes in a relayed stream, one SSE payload at a time, without holding any back.

Most chunks pass through as the bytes vLLM sent. Only three kinds are parsed: a chunk that finishes the last
choice (it gets `sources` unless a usage chunk follows), the usage chunk (its counts feed the metrics; it gets
`sources`, or is dropped when the client did not ask for usage: the gateway always asks vLLM for it), and an
error event (normalised to the gateway's error shape). A byte search decides which chunks need parsing: JSON
escapes every quote inside a string, so `"error"` or `"usage"` in the bytes can only be a key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from server.errors import GatewayError
from server.protocol import Source
from server.upstream import from_status

_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')


class StreamRelay:
    """The per-stream state: how many choices have finished, and whether `sources` went out yet."""

    def __init__(
        self,
        *,
        assistant: str,
        served_name: str,
        sources: list[Source],
        choices: int,
        client_wants_usage: bool,
        on_usage: Callable[[Any], None],
    ) -> None:
        self.assistant = assistant
        self.sources = sources
        self.choices = choices
        self.client_wants_usage = client_wants_usage
        self.on_usage = on_usage
        self.finished = 0
        self.error: GatewayError | None = None
        # vLLM names the served model (an adapter or the base); clients see the assistant they asked for.
        self._rename = None if served_name == assistant else (_model_key(served_name), _model_key(assistant))

    def process(self, data: bytes) -> bytes | None:
        """The payload to send for one upstream payload, or None to drop it."""
        if b'"error"' in data:
            return self._error(data)
        if b'"usage"' not in data and not _FINISHED.search(data):
            return data.replace(*self._rename) if self._rename else data
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            return data
        usage = chunk.get("usage")
        choices = chunk.get("choices") or []
        if usage and not choices:  # the usage chunk: always the last one
            self.on_usage(usage)
            if not self.client_wants_usage:
                return None
            return self._final(chunk)
        self.finished += sum(1 for c in choices if isinstance(c, dict) and c.get("finish_reason"))
        if self.finished >= self.choices and not self.client_wants_usage:
            return self._final(chunk)
        chunk["model"] = self.assistant
        return json.dumps(chunk, separators=(",", ":")).encode()

    def _final(self, chunk: dict[str, Any]) -> bytes:
        chunk["model"] = self.assistant
        chunk["sources"] = self.sources
        return json.dumps(chunk, separators=(",", ":")).encode()

    def _error(self, data: bytes) -> bytes:
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        if not isinstance(event, dict) or "error" not in event:
            return data.replace(*self._rename) if self._rename else data
        error = event["error"]
        code = error.get("code") if isinstance(error, dict) else None
        # vLLM puts the HTTP status it would have answered in `code`; a generation failure has none.
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        self.error = from_status(status, data)
        return json.dumps(self.error.body()).encode()


def _model_key(name: str) -> bytes:
    return b'"model":' + json.dumps(name).encode()
