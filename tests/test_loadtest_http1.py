"""The load generator's own HTTP/1.1 client (loadtest/http1.py), which the overhead figures rest on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractContextManager

from starlette.types import ASGIApp

from loadtest.http1 import Answer, Connection
from tests.stub_upstream import Stub, StubConfig

Serve = Callable[[ASGIApp], AbstractContextManager[str]]
CHAT = "/v1/chat/completions"


def _body(stream: bool) -> bytes:
    return json.dumps(
        {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": stream}
    ).encode()


def test_json_and_chunked_answers_on_one_kept_alive_connection(serve_app: Serve) -> None:
    stub = Stub(StubConfig(tokens=5))

    async def run(port: int) -> tuple[Answer, Answer]:
        connection = Connection("127.0.0.1", port)
        try:
            return await connection.post(CHAT, _body(False)), await connection.post(CHAT, _body(True))
        finally:
            await connection.close()

    with serve_app(stub.app) as url:
        plain, streamed = asyncio.run(run(int(url.rsplit(":", 1)[1])))
    assert plain.status == 200 and "content-length" in plain.headers
    assert json.loads(plain.body)["usage"]["completion_tokens"] == 5
    assert streamed.status == 200 and streamed.headers["transfer-encoding"] == "chunked"
    events = [line for line in streamed.body.decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and len(events) >= 7  # role chunk, 5 tokens, finish, [DONE]
    assert 0 < streamed.first_byte <= streamed.total and 0 < plain.first_byte <= plain.total
    assert stub.completed == 2


def test_a_kept_alive_connection_the_server_closed_is_reopened_and_the_request_sent_again() -> None:
    served: list[bytes] = []

    async def one_answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(await reader.readuntil(b"\r\n\r\n"))
        body = b'{"ok": true}'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()  # as uvicorn does with an idle kept-alive connection, without saying so first

    async def run() -> list[Answer]:
        server = await asyncio.start_server(one_answer_then_close, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = Connection("127.0.0.1", port)
        try:
            first = await connection.post("/x", b"{}")
            await asyncio.sleep(0.05)  # the close reaches the client before it reuses the connection
            return [first, await connection.post("/x", b"{}")]
        finally:
            await connection.close()
            server.close()
            await server.wait_closed()

    answers = asyncio.run(run())
    assert [a.status for a in answers] == [200, 200] and answers[1].body == b'{"ok": true}'
    assert len(served) == 2
