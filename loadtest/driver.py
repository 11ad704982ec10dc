"""The load driver: scenario requests sent with httpx, in closed-loop or open-loop blocks, targets interleaved.

Closed loop: N clients, each sending its next request when its last one has ended. Open loop: arrivals of a
Poisson process at a rate (exponential gaps, as `vllm bench serve --request-rate`), however many are in flight,
optionally capped (`max_concurrency`: an arrival then waits for a slot, as vLLM's `--max-concurrency`). Both stop
starting requests at a request count or a deadline, whichever comes first, and wait for those in flight.

With two targets (the gateway, and vLLM directly), each load level runs in alternating blocks, gateway first in
one round and direct first in the next, so that drift in the machine's load falls on both alike; both get the
same request sequence.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from loadtest.record import (
    BAD_RESPONSE,
    CONNECT,
    CONNECTION_LOST,
    HTTP,
    TIMEOUT,
    Clock,
    RequestRecord,
    StreamRecorder,
    record_body,
)
from loadtest.scenario import RequestSpec, Scenario, requests

CHAT = "/v1/chat/completions"
OnDone = Callable[[RequestRecord], None]


@dataclass(frozen=True)
class Target:
    """Where requests go: the gateway (addressed by assistant name) or vLLM (by served name, through `models`)."""

    name: str
    url: str
    models: dict[str, str] | None = None
    api_key: str | None = None

    def model(self, assistant: str) -> str:
        """The `model` field for an assistant's request."""
        if self.models is None:
            return assistant
        if assistant not in self.models:
            raise KeyError(f"{self.name}: no served name for assistant {assistant!r}")
        return self.models[assistant]


@dataclass(frozen=True)
class Load:
    """One load level: `level` clients (closed) or arrivals per second (open)."""

    mode: str
    level: float
    max_concurrency: int | None = None

    @property
    def label(self) -> str:
        return f"c={self.level:g}" if self.mode == "closed" else f"{self.level:g} req/s"

    @property
    def connections(self) -> int | None:
        """How many connections a client pool may need (None: no limit)."""
        return int(self.level) if self.mode == "closed" else self.max_concurrency


@dataclass
class Measured:
    """One target's records at one level, the seconds its measured blocks ran, and how many blocks."""

    records: list[RequestRecord] = field(default_factory=list)
    busy: float = 0.0
    blocks: int = 0


async def send(client: httpx.AsyncClient, target: Target, spec: RequestSpec, clock: Clock) -> RequestRecord:
    """Send one request and record its timings; failures end up in the record, never raised."""
    body = json.dumps(spec.body(target.model(spec.assistant))).encode()
    headers = {"content-type": "application/json"}
    if target.api_key:
        headers["authorization"] = f"Bearer {target.api_key}"
    record = RequestRecord(spec.assistant, target.name, spec.stream, clock())
    try:
        async with client.stream("POST", target.url.rstrip("/") + CHAT, content=body, headers=headers) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                record.fail(HTTP.format(status=response.status_code), text)
                return record
            if not spec.stream:
                return record_body(record, await response.aread(), clock())
            recorder = StreamRecorder(record, clock)
            async for piece in response.aiter_bytes():
                recorder.feed(piece)
            return recorder.finish()
    except httpx.TimeoutException as exc:
        record.fail(TIMEOUT, repr(exc))
    except httpx.ConnectError as exc:
        record.fail(CONNECT, repr(exc))
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        record.fail(CONNECTION_LOST, repr(exc))
    except httpx.HTTPError as exc:
        record.fail(f"http_error:{type(exc).__name__}", repr(exc))
    except UnicodeDecodeError as exc:
        record.fail(BAD_RESPONSE, repr(exc))
    return record


async def block(
    client: httpx.AsyncClient,
    target: Target,
    specs: Iterator[RequestSpec],
    load: Load,
    count: int | None,
    seconds: float | None,
    on_done: OnDone | None = None,
    clock: Clock = time.perf_counter,
    seed: int = 0,
) -> tuple[list[RequestRecord], float]:
    """Run one block at `load` until `count` requests have started or `seconds` have passed; (records, seconds)."""
    if count is None and seconds is None:
        raise ValueError("a block needs a request count, a duration, or both")
    records: list[RequestRecord] = []
    started = time.perf_counter()
    deadline = started + seconds if seconds is not None else math.inf
    left = math.inf if count is None else count

    async def one(spec: RequestSpec) -> None:
        record = await send(client, target, spec, clock)
        records.append(record)
        if on_done is not None:
            on_done(record)

    if load.mode == "closed":

        async def worker() -> None:
            nonlocal left
            while left > 0 and time.perf_counter() < deadline:
                left -= 1
                await one(next(specs))

        await asyncio.gather(*(worker() for _ in range(int(load.level))))
    else:
        rng = random.Random(seed)
        slots = asyncio.Semaphore(load.max_concurrency) if load.max_concurrency else None
        tasks: list[asyncio.Task[None]] = []

        async def capped(spec: RequestSpec) -> None:
            if slots is None:
                return await one(spec)
            async with slots:
                return await one(spec)

        arrival = time.perf_counter()
        while left > 0 and time.perf_counter() < deadline:
            left -= 1
            tasks.append(asyncio.create_task(capped(next(specs))))
            # Scheduled from the previous arrival, not from now, so time spent sending does not slow the rate.
            arrival += rng.expovariate(load.level)
            if (pause := arrival - time.perf_counter()) > 0:
                await asyncio.sleep(pause)
        await asyncio.gather(*tasks)
    return records, time.perf_counter() - started


def client_for(target: Target, load: Load, timeout: float) -> httpx.AsyncClient:
    """A connection pool sized for the load level."""
    connections = load.connections
    # uvicorn (the gateway's server and vLLM's) closes a connection idle for 5 s. Reusing one just as it does fails
    # the request (a ReadError), which happens when a target waits out the other's block; closing our side at 4 s
    # costs a new connection instead.
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=4.0)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout, connect=min(timeout, 10)))


async def run_level(
    scenario: Scenario,
    targets: list[Target],
    load: Load,
    count: int | None,
    seconds: float | None,
    rounds: int = 1,
    warmup: bool = True,
    timeout: float = 300.0,
    on_done: OnDone | None = None,
    seed: int | None = None,
) -> dict[str, Measured]:
    """One load level against every target: a warm-up each, then `rounds` alternating blocks per target.

    `count` and `seconds` bound each target's measured requests at this level, split evenly over the rounds.
    """
    rounds = max(1, rounds)
    if count is not None and load.mode == "closed":
        # A closed-loop block should hold several waves of its clients: one of at most N requests measures a burst
        # and its tail, not a steady load. Fewer rounds, then, rather than more requests than asked.
        rounds = max(1, min(rounds, count // (4 * int(load.level))))
    per_seconds = None if seconds is None else seconds / rounds
    specs = {t.name: requests(scenario, seed) for t in targets}  # the same sequence for every target
    measured = {t.name: Measured() for t in targets}
    clients = {t.name: client_for(t, load, timeout) for t in targets}
    try:
        if warmup:
            # Opens the pool's connections and wakes both paths; its requests are not counted.
            warm = Load("closed", load.connections or max(1, math.ceil(load.level)))
            for t in targets:
                await block(clients[t.name], t, requests(scenario, -1), warm, int(warm.level), None)
        for i in range(rounds):
            order = targets if i % 2 == 0 else targets[::-1]
            for t in order:
                done = measured[t.name]
                # What is left of the count, spread over the rounds left, so the total comes out exact.
                n = None if count is None else math.ceil((count - len(done.records)) / (rounds - i))
                if n is not None and n <= 0:
                    continue
                records, busy = await block(clients[t.name], t, specs[t.name], load, n, per_seconds, on_done, seed=i)
                done.records += records
                done.busy += busy
                done.blocks += 1
    finally:
        await asyncio.gather(*(c.aclose() for c in clients.values()))
    return measured
