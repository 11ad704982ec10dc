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
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from loadtest import stubrun
from loadtest.http1 import Connection
from loadtest.stubrun import HOST, STUB_MODEL, Samples, cpu_seconds, manifest, percentile, stub_command


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
    bodies = {path: stubrun.bodies(models[path], stream, questions, tokens) for path in models}
    samples = {path: Samples() for path in models}
    per_block = max(concurrency, requests // rounds)
    try:
        for path in models:
            await stubrun.block(pools[path], bodies[path], min(per_block, 4 * concurrency + 20), stream, None)
        for i in range(rounds):
            order = ("direct", "gateway") if i % 2 == 0 else ("gateway", "direct")
            for path in order:
                before = cpu_seconds(pids[path])
                await stubrun.block(pools[path], bodies[path], per_block, stream, samples[path])
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
    ports = {"direct": stubrun.free_port(), "gateway": stubrun.free_port()}
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
            "direct": stack.enter_context(
                stubrun.process(stub, work / "stub.log", f"http://{HOST}:{ports['direct']}/health")
            )
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
            stubrun.process(gateway, work / "gateway.log", f"http://{HOST}:{ports['gateway']}/ready")
        )
        questions = stubrun.questions()
        for retrieval in retrievals:
            for stream in streams:
                for concurrency in levels:
                    case = {"concurrency": concurrency, "stream": stream, "retrieval": retrieval}
                    with stubrun.runner() as runner:
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
