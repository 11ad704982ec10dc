"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for load generation.

A general client (httpx, aiohttp) costs far more CPU per request than the gateway's overhead being measured,
and on a small machine that CPU comes out of the servers' share. This one does only what the benchmark needs:
POST a JSON body on a kept-alive connection and read a content-length or chunked answer, timing the first body
byte and the last.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """One response: status, headers (lowercased names), body, and seconds to first body byte and to the end."""

    status: int
    headers: dict[str, str]
    body: bytes
    first_byte: float
    total: float


class Connection:
    """One kept-alive connection; requests on it run one at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._reader, self._writer = self._writer, None, None
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass  # already reset by the server

    async def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> Answer:
        """POST a JSON body (with extra `headers`, e.g. authorization) and read the whole answer."""
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        request = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\ncontent-type: application/json\r\n{extra}"
            f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        reused = self._writer is not None
        reader, writer = await self._open()
        started = time.perf_counter()
        writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            partial = exc.partial if isinstance(exc, asyncio.IncompleteReadError) else b""
            if not reused or partial:
                raise
            # The server closed the idle kept-alive connection (uvicorn does after 5 s): reconnect, send again.
            await self.close()
            reader, writer = await self._open()
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        first_byte = 0.0
        if headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
                if not first_byte:
                    first_byte = time.perf_counter() - started
            data = b"".join(parts)
        else:
            data = await reader.readexactly(int(headers.get("content-length", "0")))
            first_byte = time.perf_counter() - started
        total = time.perf_counter() - started
        if headers.get("connection") == "close":
            await self.close()
        return Answer(status, headers, data, first_byte, total)
