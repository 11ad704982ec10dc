"""Gateway overhead: the same requests sent to the stub upstream directly and through the gateway, side by side.

    python -m loadtest.overhead --concurrency 1,16,64 --requests 600

It starts the stub upstream (tests/stub_upstream.py: answers at once, so model time hides nothing) and the
gateway (`lorag serve`, one uvicorn worker, access log off) as processes of their own; with retrieval on it
first ingests the demo catalog into a temporary local Qdrant. For each case (concurrency x streamed or not x
retrieval off or on) it alternates blocks of requests to the two paths, so drift in machine load falls on both
alike, and reports each path's latency percentiles, the gateway's added latency (gateway percentile minus
direct percentile), requests per second of the one gateway worker, and, with retrieval on, the retrieval
step's own time as the gateway reports it in its Server-Timing header.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def _process(
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


def _check(answer: Answer, stream: bool) -> str:
    if answer.status != 200:
        return f"status {answer.status}: {answer.body[:200]!r}"
    if stream and not answer.body.endswith(b"data: [DONE]\n\n"):
        return f"stream did not end with [DONE]: {answer.body[-200:]!r}"
    if not stream and b'"choices"' not in answer.body:
        return f"no choices: {answer.body[:200]!r}"
    return ""


def _retrieval_ms(answer: Answer) -> float | None:
    timing = answer.headers.get("server-timing", "")
    for metric in timing.split(","):
        name, _, params = metric.strip().partition(";")
        if name == "retrieval" and params.startswith("dur="):
            return float(params[4:])
    return None


async def _block(
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
            problem = _check(answer, stream)
            if problem:
                samples.errors += 1
                samples.first_error = samples.first_error or problem
                continue
            samples.total.append(answer.total)
            samples.first_byte.append(answer.first_byte)
            if (ms := _retrieval_ms(answer)) is not None:
                samples.retrieval.append(ms / 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in pool))
    if samples is not None:
        samples.busy += time.perf_counter() - started


def _bodies(model: str, stream: bool, questions: list[str], tokens: int) -> Iterator[bytes]:
    for question in cycle(questions):
        body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": tokens}
        if stream:
            body["stream"] = True
        yield json.dumps(body).encode()


async def run_case(
    ports: dict[str, int],
    pids: dict[str, int],
    concurrency: int,
    stream: bool,
    retrieval: bool,
    requests: int,
    rounds: int,
    questions: list[str],
    tokens: int,
) -> dict[str, Samples]:
    """One case: warm-up, then `rounds` alternating blocks per path."""
    models = {"direct": STUB_MODEL, "gateway": "bench-on" if retrieval else "bench-off"}
    pools = {path: [Connection(HOST, ports[path]) for _ in range(concurrency)] for path in models}
    bodies = {path: _bodies(models[path], stream, questions, tokens) for path in models}
    samples = {path: Samples() for path in models}
    per_block = max(concurrency, requests // rounds)
    try:
        for path in models:
            await _block(pools[path], bodies[path], min(per_block, 4 * concurrency + 20), stream, None)
        for i in range(rounds):
            order = ("direct", "gateway") if i % 2 == 0 else ("gateway", "direct")
            for path in order:
                before = cpu_seconds(pids[path])
                await _block(pools[path], bodies[path], per_block, stream, samples[path])
                after = cpu_seconds(pids[path])
                if before is not None and after is not None:
                    samples[path].cpu = (samples[path].cpu or 0.0) + after - before
    finally:
        for pool in pools.values():
            await asyncio.gather(*(c.close() for c in pool))
    return samples


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def summarise(case: dict[str, object], samples: dict[str, Samples]) -> dict[str, object]:
    """Percentiles and the gateway's added latency for one case."""
    direct, gateway = samples["direct"], samples["gateway"]
    row: dict[str, object] = dict(case)
    for name, s in samples.items():
        row[f"{name}_n"] = len(s.total)
        row[f"{name}_errors"] = s.errors
        row[f"{name}_p50_ms"] = percentile(s.total, 50) * 1000
        row[f"{name}_p99_ms"] = percentile(s.total, 99) * 1000
        row[f"{name}_first_byte_p99_ms"] = percentile(s.first_byte, 99) * 1000
        row[f"{name}_rps"] = len(s.total) / s.busy if s.busy else 0.0
        if s.cpu is not None and s.total:
            row[f"{name}_cpu_ms_per_request"] = s.cpu / len(s.total) * 1000
        if s.first_error:
            row[f"{name}_first_error"] = s.first_error
    row["added_p50_ms"] = (percentile(gateway.total, 50) - percentile(direct.total, 50)) * 1000
    row["added_p99_ms"] = (percentile(gateway.total, 99) - percentile(direct.total, 99)) * 1000
    row["added_first_byte_p99_ms"] = (percentile(gateway.first_byte, 99) - percentile(direct.first_byte, 99)) * 1000
    if gateway.retrieval:
        row["retrieval_p50_ms"] = percentile(gateway.retrieval, 50) * 1000
        row["retrieval_p99_ms"] = percentile(gateway.retrieval, 99) * 1000
    return row


def table(rows: list[dict[str, object]]) -> str:
    """The markdown table of all cases."""
    head = (
        "| c | stream | retrieval | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 / p99 ms "
        "| added first-byte p99 ms | gateway req/s (1 worker) | direct req/s | gateway CPU ms/req "
        "| retrieval p50 / p99 ms | errors |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:

        def pair(name: str, row: dict[str, object] = r) -> str:
            return f"{row[name + '_p50_ms']:.2f} / {row[name + '_p99_ms']:.2f}" if name + "_p50_ms" in row else "-"

        cells = [
            str(r["concurrency"]),
            "yes" if r["stream"] else "no",
            "on" if r["retrieval"] else "off",
            pair("direct"),
            pair("gateway"),
            pair("added"),
            f"{r['added_first_byte_p99_ms']:.2f}",
            f"{r['gateway_rps']:.0f}",
            f"{r['direct_rps']:.0f}",
            f"{r['gateway_cpu_ms_per_request']:.2f}" if "gateway_cpu_ms_per_request" in r else "-",
            pair("retrieval"),
            f"{r['direct_errors']}+{r['gateway_errors']}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _runner() -> asyncio.Runner:
    # uvloop, when installed, keeps the load generator's own CPU cost down.
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def _questions() -> list[str]:
    from retrieval.demo_catalog import demo_catalog

    return [f"How much is the {p.name}?" for p in demo_catalog()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--stream", default="no,yes", help="which of no,yes to run")
    parser.add_argument("--retrieval", default="off,on", help="which of off,on to run")
    parser.add_argument("--requests", type=int, default=600, help="measured requests per path per case")
    parser.add_argument("--rounds", type=int, default=6, help="alternating blocks per path per case")
    parser.add_argument("--tokens", type=int, default=16, help="completion tokens the stub sends")
    parser.add_argument("--embedding-threads", type=int, default=1, help="the gateway's torch threads")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    streams = [s == "yes" for s in args.stream.split(",")]
    retrievals = [r == "on" for r in args.retrieval.split(",")]
    ports = {"direct": _free_port(), "gateway": _free_port()}
    python = sys.executable
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="lorag-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        assistants = work / "assistants.yaml"
        assistants.write_text(manifest(any(retrievals)))
        qdrant = work / "qdrant"
        if any(retrievals):
            from retrieval.demo_catalog import write_demo_catalog

            catalog = write_demo_catalog(work / "catalog.jsonl")
            ingest = [
                python,
                "-m",
                "lorag",
                "catalog",
                "ingest",
                str(catalog),
                "--qdrant-path",
                str(qdrant),
                "--quiet",
            ]
            subprocess.run(ingest, check=True, stdout=subprocess.DEVNULL)
        stub = [
            *stub_command(python),
            "--port",
            str(ports["direct"]),
            "--model",
            STUB_MODEL,
            "--tokens",
            str(args.tokens),
        ]
        pids = {
            "direct": stack.enter_context(_process(stub, work / "stub.log", f"http://{HOST}:{ports['direct']}/health"))
        }
        gateway = [
            python,
            "-m",
            "lorag",
            "serve",
            "--host",
            HOST,
            "--port",
            str(ports["gateway"]),
            "--upstream-url",
            f"http://{HOST}:{ports['direct']}",
            "--assistants",
            str(assistants),
            "--qdrant-path",
            str(qdrant),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        os.environ["LORAG_EMBEDDING_THREADS"] = str(args.embedding_threads)
        pids["gateway"] = stack.enter_context(
            _process(gateway, work / "gateway.log", f"http://{HOST}:{ports['gateway']}/ready")
        )
        questions = _questions()
        for retrieval in retrievals:
            for stream in streams:
                for concurrency in levels:
                    case = {"concurrency": concurrency, "stream": stream, "retrieval": retrieval}
                    with _runner() as runner:
                        samples = runner.run(
                            run_case(
                                ports,
                                pids,
                                concurrency,
                                stream,
                                retrieval,
                                args.requests,
                                args.rounds,
                                questions,
                                args.tokens,
                            )
                        )
                    rows.append(summarise(case, samples))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    load = os.getloadavg()
    header = (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end; {args.requests} requests per path "
        f"per case in {args.rounds} alternating blocks; stub sends {args.tokens} tokens at once"
    )
    print(header)
    print(table(rows))
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {"run": header, "args": vars(args) | {"json_out": str(args.json_out)}, "rows": rows},
                indent=2,
                default=str,
            )
        )
    return 1 if any(r["direct_errors"] or r["gateway_errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
