"""A fast OpenAI-compatible stand-in for vLLM: /v1/chat/completions (streamed and not), /v1/models, /health.

Answers take a configurable time to first token and token rate (both zero by default), so a load test measures
the gateway rather than a model. Chunks are shaped as vLLM sends them (compact JSON, a role chunk first, the
finish reason on the last choice chunk, a usage chunk when asked, then [DONE]). Tests can also make it fail
(an error status, or a connection dropped mid-stream) and read what it received and which streams the client
abandoned.

    python tests/stub_upstream.py --port 8101 --ttft-ms 0 --tokens 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class DroppedConnection(RuntimeError):
    """Raised mid-stream on purpose: the server then cuts the connection without finishing the body."""


@dataclass
class StubConfig:
    """How the stub answers; tests change it between requests."""

    base_model: str = "stub-model"
    adapters: list[str] = field(default_factory=list)
    ttft: float = 0.0  # seconds before the first token
    tokens_per_s: float = 0.0  # 0: no pause between tokens
    tokens: int = 16  # completion length, unless max tokens is lower
    status: int | None = None  # answer chat requests with this error status
    fail_after: int | None = None  # streams: drop the connection after this many content chunks
    error_event_after: int | None = None  # streams: send a vLLM-style error event after this many chunks
    error_param: str | None = None  # the `param` of the error answer sent with `status`
    replay: list[bytes] | None = None  # streams: send these SSE payloads (a recorded vLLM stream) instead
    answer: str | None = None  # say this, in pieces of at most 4 characters (about a tokenizer's), not "tokN"


class Stub:
    """The stub's app, configuration and what it saw."""

    def __init__(self, config: StubConfig | None = None, history: int = 64) -> None:
        self.config = config or StubConfig()
        self.requests: deque[dict[str, Any]] = deque(maxlen=history)
        self.headers: deque[dict[str, str]] = deque(maxlen=history)
        self.cancelled = 0  # streams the client left before the end
        self.completed = 0
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/models", self.models),
                Route("/health", self.health),
            ]
        )

    async def health(self, request: Request) -> Response:
        return Response(b"")

    async def models(self, request: Request) -> JSONResponse:
        base = self.config.base_model
        cards = [{"id": base, "object": "model", "owned_by": "stub", "root": base, "parent": None}]
        cards += [
            {"id": a, "object": "model", "owned_by": "stub", "root": a, "parent": base} for a in self.config.adapters
        ]
        return JSONResponse({"object": "list", "data": cards})

    async def chat(self, request: Request) -> Response:
        payload = json.loads(await request.body())
        self.requests.append(payload)
        self.headers.append(dict(request.headers))
        config = self.config
        if config.status is not None:
            error = {"message": f"stub failure {config.status}", "type": "BadRequestError", "param": config.error_param}
            return JSONResponse({"error": {**error, "code": config.status}}, status_code=config.status)
        model = str(payload.get("model", config.base_model))
        if model not in {config.base_model, *config.adapters}:
            error = {"message": f"The model `{model}` does not exist.", "type": "NotFoundError", "param": "model"}
            return JSONResponse({"error": {**error, "code": 404}}, status_code=404)
        limit = payload.get("max_completion_tokens") or payload.get("max_tokens") or config.tokens
        if config.answer is not None:
            tokens = re.findall(r"\s?\S{1,4}", config.answer)[: int(limit)]
        else:
            tokens = [f"[{model}]"] + [f" tok{i}" for i in range(1, min(config.tokens, int(limit)))]
        if payload.get("stream") and config.replay is not None:
            events = (b"data: " + data + b"\n\n" for data in config.replay)
            return StreamingResponse(events, media_type="text/event-stream")
        if payload.get("stream"):
            usage = bool((payload.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self._stream(model, tokens, usage), media_type="text/event-stream")
        await asyncio.sleep(config.ttft + (len(tokens) / config.tokens_per_s if config.tokens_per_s else 0))
        if config.ttft and await request.is_disconnected():
            self.cancelled += 1  # the client closed the connection while the "model" worked
            return Response(status_code=499)
        self.completed += 1
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens)},
                        "logprobs": None,
                        "finish_reason": "length" if len(tokens) >= int(limit) else "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": len(tokens), "total_tokens": 10 + len(tokens)},
            }
        )

    async def _stream(self, model: str, tokens: list[str], usage: bool) -> AsyncIterator[bytes]:
        config = self.config
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time())}
        head_json = json.dumps({**head, "model": model}, separators=(",", ":"))[:-1]
        pause = 1 / config.tokens_per_s if config.tokens_per_s else 0.0

        def chunk(choice: dict[str, Any]) -> bytes:
            return f'data: {head_json},"choices":[{json.dumps(choice, separators=(",", ":"))}]}}\n\n'.encode()

        try:
            if config.ttft:
                await asyncio.sleep(config.ttft)
            yield chunk(
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            )
            for i, token in enumerate(tokens):
                if config.fail_after is not None and i >= config.fail_after:
                    raise DroppedConnection("stub: dropping the connection mid-stream")
                if config.error_event_after is not None and i >= config.error_event_after:
                    error = {"message": "stub: generation failed", "type": "InternalServerError", "param": None}
                    yield f"data: {json.dumps({'error': {**error, 'code': 500}})}\n\n".encode()
                    yield b"data: [DONE]\n\n"
                    return
                if pause and i:
                    await asyncio.sleep(pause)
                last = i == len(tokens) - 1
                yield chunk(
                    {
                        "index": 0,
                        "delta": {"content": token},
                        "logprobs": None,
                        "finish_reason": "stop" if last else None,
                    }
                )
            if usage:
                counts = {"prompt_tokens": 10, "completion_tokens": len(tokens), "total_tokens": 10 + len(tokens)}
                body = json.dumps({**head, "model": model, "choices": [], "usage": counts}, separators=(",", ":"))
                yield f"data: {body}\n\n".encode()
            yield b"data: [DONE]\n\n"
            self.completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--model", default="stub-model", help="the base model's served name")
    parser.add_argument("--adapter", action="append", default=[], help="an adapter name it also serves")
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-s", type=float, default=0.0, help="0: no pause between tokens")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--answer", help="answer this text (in pieces of at most 4 characters) instead of tokN")
    args = parser.parse_args(argv)
    config = StubConfig(args.model, args.adapter, args.ttft_ms / 1000, args.tokens_per_s, args.tokens)
    config.answer = args.answer
    uvicorn.run(Stub(config, history=1).app, host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
