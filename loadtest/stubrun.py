"""What the CPU benchmarks share: the stub upstream and gateway processes, and requests sent over raw connections.

The benchmarks (overhead, peer, workers, soak, guard cost, local) each start the stub upstream
(tests/stub_upstream.py) and the gateway as processes of their own and drive them with `block`.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path

from loadtest.http1 import Answer, Connection
from retrieval.scores import percentile as shared_percentile

HOST = "127.0.0.1"
STUB_MODEL = "stub-model"
# The stub upstream is a test fixture (tests/stub_upstream.py); the benchmarks run it from a checkout as a script.
STUB_SCRIPT = Path(__file__).resolve().parents[1] / "tests" / "stub_upstream.py"
CHAT = "/v1/chat/completions"


def manifest(retrieval: bool) -> str:
    """The benchmark's assistants: both on the stub's base model, one retrieving (only when measured)."""
    lines = [
        f"base_model: {STUB_MODEL}",
        "assistants:",
        "  - {name: bench-off, adapter: null, retrieval: {enabled: false}, max_tokens: 64}",
    ]
    if retrieval:
        lines.append("  - {name: bench-on, adapter: null, retrieval: {enabled: true, top_k: 4}, max_tokens: 64}")
    return "\n".join(lines) + "\n"


@dataclass
class Samples:
    """What one path measured in one case."""

    total: list[float] = field(default_factory=list)
    first_byte: list[float] = field(default_factory=list)
    retrieval: list[float] = field(default_factory=list)
    errors: int = 0
    busy: float = 0.0
    cpu: float | None = None  # CPU seconds the server process used during the measured blocks
    first_error: str = ""


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100); NaN for no values (a case with no successful request still prints)."""
    return shared_percentile(values, q) if values else float("nan")


def stub_command(python: str) -> list[str]:
    """The command that starts the stub upstream (options follow)."""
    if not STUB_SCRIPT.is_file():
        raise SystemExit(f"the stub upstream is not here ({STUB_SCRIPT}): run the benchmark from a lorag checkout")
    return [python, str(STUB_SCRIPT)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def process(
    cmd: list[str], log: Path, ready_url: str, timeout: float = 300, env: dict[str, str] | None = None
) -> Iterator[int]:
    """Run a server process until the block ends; wait for `ready_url` to answer 200 first."""
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{cmd[2]} exited with {process.returncode}:\n{log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ready_url} not ready after {timeout:.0f} s:\n{log.read_text()[-2000:]}")
            time.sleep(0.25)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check(answer: Answer, stream: bool) -> str:
    if answer.status != 200:
        return f"status {answer.status}: {answer.body[:200]!r}"
    if stream and not answer.body.endswith(b"data: [DONE]\n\n"):
        return f"stream did not end with [DONE]: {answer.body[-200:]!r}"
    if not stream and b'"choices"' not in answer.body:
        return f"no choices: {answer.body[:200]!r}"
    return ""


def retrieval_ms(answer: Answer) -> float | None:
    timing = answer.headers.get("server-timing", "")
    for metric in timing.split(","):
        name, _, params = metric.strip().partition(";")
        if name == "retrieval" and params.startswith("dur="):
            return float(params[4:])
    return None


async def block(
    pool: list[Connection], bodies: Iterator[bytes], count: int, stream: bool, samples: Samples | None
) -> None:
    """`count` requests over the pool's connections, each connection one request at a time."""
    left = count

    async def worker(connection: Connection) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            answer = await connection.post(CHAT, next(bodies))
            if samples is None:
                continue
            problem = check(answer, stream)
            if problem:
                samples.errors += 1
                samples.first_error = samples.first_error or problem
                continue
            samples.total.append(answer.total)
            samples.first_byte.append(answer.first_byte)
            if (ms := retrieval_ms(answer)) is not None:
                samples.retrieval.append(ms / 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in pool))
    if samples is not None:
        samples.busy += time.perf_counter() - started


def bodies(model: str, stream: bool, questions: list[str], tokens: int) -> Iterator[bytes]:
    for question in cycle(questions):
        body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": tokens}
        if stream:
            body["stream"] = True
        yield json.dumps(body).encode()


def runner() -> asyncio.Runner:
    # uvloop, when installed, keeps the load generator's own CPU cost down.
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def questions() -> list[str]:
    from retrieval.demo_catalog import demo_catalog

    return [f"How much is the {p.name}?" for p in demo_catalog()]
