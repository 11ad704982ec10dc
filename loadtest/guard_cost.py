"""The truthfulness guard's cost to a streamed answer: the same requests through one gateway to assistants that
differ only in guard policy (off, annotate, correct, block), side by side.

    lorag bench guard --tokens-per-s 50 --requests 120 --rounds 6

The stub upstream (tests/stub_upstream.py) streams one answer about a demo-catalog product, with its catalog price
and stock, in pieces of at most 4 characters at a model's pace; the gateway (`lorag serve`, one worker, retrieval
on over the demo catalog in a temporary local Qdrant) checks it as each assistant's policy says. Under `correct`
and `block` the last `holdback_chars` characters wait until what follows shows that no figure is cut, so the
first content token comes later and the gaps between tokens change; under `annotate` the answer is relayed as it
comes and checked at the end. Each policy gets the same question; the policies take turns in blocks (the order
rotating every round) so drift in the machine's load falls on all alike. Reported per policy: time to the first
content token (TTFT), inter-token latency (ITL) and end-to-end latency, p50 and p99, and TTFT's difference to `off`.
Before measuring, one answer per policy is read whole: it must be the stub's text, verdict `supported`.
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
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from itertools import cycle
from pathlib import Path
from typing import Any

import httpx

from loadtest import stubrun
from loadtest.driver import Load, Target, block
from loadtest.record import RequestRecord
from loadtest.scenario import RequestSpec
from loadtest.stubrun import HOST, STUB_MODEL, percentile, stub_command
from retrieval.catalog import Product
from retrieval.demo_catalog import demo_catalog
from retrieval.facts import format_price, format_stock

POLICIES = ("off", "annotate", "correct", "block")
PRODUCT = "SCL-1128"  # Vellora Crema V-415, $174.00, in stock: a price and a stock figure to hold back


def answer_text(product: Product) -> str:
    """What the stub says: the product's catalog price and stock, then a few sentences with no figure."""
    return (
        f"The {product.name} is {format_price(product.price, product.currency)} and "
        f"{format_stock(product.stock)}. It is a {product.category} built for everyday home brewing, easy to "
        "clean and sturdy. Would you like me to compare it with another model or check anything else for you?"
    )


def manifest(holdback: int) -> str:
    """One assistant per policy, all on the stub's base model, all retrieving."""
    lines = [f"base_model: {STUB_MODEL}", "assistants:"]
    for policy in POLICIES:
        lines.append(
            f"  - {{name: guard-{policy}, adapter: null, retrieval: {{enabled: true, top_k: 4}}, max_tokens: 512, "
            f'guard: {{policy: "{policy}", holdback_chars: {holdback}}}}}'
        )
    return "\n".join(lines) + "\n"


async def read_whole(url: str, model: str, question: str) -> tuple[str, dict[str, Any] | None]:
    """One streamed answer's content and the `grounding` its finishing chunk carried."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "stream": True}
    text, grounding = "", None
    async with (
        httpx.AsyncClient(timeout=60) as client,
        client.stream("POST", f"{url}/v1/chat/completions", json=body) as r,
    ):
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
            grounding = chunk.get("grounding", grounding)
    return text, grounding


def summarise(policy: str, records: list[RequestRecord], base: dict[str, float] | None) -> dict[str, Any]:
    """Percentiles (ms) of one policy's records; with `base` (off's row), TTFT added."""
    ok = [r for r in records if r.ok]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    itl = [gap for r in ok for gap in r.itl]
    latency = [r.latency for r in ok if r.latency is not None]
    row: dict[str, Any] = {"policy": policy, "n": len(ok), "errors": len(records) - len(ok)}
    for name, values in (("ttft", ttft), ("itl", itl), ("latency", latency)):
        row[f"{name}_p50_ms"] = percentile(values, 50) * 1000
        row[f"{name}_p99_ms"] = percentile(values, 99) * 1000
    row["chunks_per_answer"] = sum(r.text_chunks for r in ok) / len(ok) if ok else 0.0
    if base is not None:
        row["ttft_added_p50_ms"] = row["ttft_p50_ms"] - base["ttft_p50_ms"]
        row["ttft_added_p99_ms"] = row["ttft_p99_ms"] - base["ttft_p99_ms"]
    if first := next((r for r in records if not r.ok), None):
        row["first_error"] = f"{first.error}: {first.detail}"
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the policies."""
    lines = [
        "| guard | TTFT p50 / p99 ms | TTFT added p50 / p99 ms | ITL p50 / p99 ms | end-to-end p50 / p99 ms "
        "| chunks/answer | answers (errors) |",
        "|" + "---|" * 7,
    ]
    for r in rows:
        added = f"{r['ttft_added_p50_ms']:+.1f} / {r['ttft_added_p99_ms']:+.1f}" if "ttft_added_p50_ms" in r else "–"
        lines.append(
            f"| {r['policy']} | {r['ttft_p50_ms']:.1f} / {r['ttft_p99_ms']:.1f} | {added} "
            f"| {r['itl_p50_ms']:.1f} / {r['itl_p99_ms']:.1f} | {r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f} "
            f"| {r['chunks_per_answer']:.1f} | {r['n']} ({r['errors']}) |"
        )
    return "\n".join(lines)


async def measure(
    url: str, question: str, concurrency: int, requests: int, rounds: int
) -> dict[str, list[RequestRecord]]:
    """Warm-up, then `rounds` blocks per policy, the order rotating each round."""
    spec = RequestSpec("", [{"role": "user", "content": question}], max_tokens=512, stream=True)
    targets = {p: Target(p, url) for p in POLICIES}
    specs: dict[str, Iterator[RequestSpec]] = {p: cycle([_for(spec, p)]) for p in POLICIES}
    load = Load("closed", concurrency)
    records: dict[str, list[RequestRecord]] = {p: [] for p in POLICIES}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=4.0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        for p in POLICIES:
            await block(client, targets[p], specs[p], load, 2 * concurrency + 4, None)
        per_block = max(concurrency, requests // rounds)
        for i in range(rounds):
            order = POLICIES[i % len(POLICIES) :] + POLICIES[: i % len(POLICIES)]
            for p in order:
                done, _ = await block(client, targets[p], specs[p], load, per_block, None, seed=i)
                records[p] += done
    return records


def _for(spec: RequestSpec, policy: str) -> RequestSpec:
    return RequestSpec(f"guard-{policy}", spec.messages, spec.max_tokens, spec.stream)


def run(args: argparse.Namespace) -> int:
    """Start the stub and the gateway, check one answer per policy, measure, print (and write) the table."""
    product = {p.id: p for p in demo_catalog()}[PRODUCT]
    question = f"How much is the {product.name}, and is it in stock?"
    answer = answer_text(product)
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="lorag-guard-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        (work / "assistants.yaml").write_text(manifest(args.holdback))
        from retrieval.demo_catalog import write_demo_catalog

        catalog = write_demo_catalog(work / "catalog.jsonl")
        qdrant = work / "qdrant"
        ingest = [python, "-m", "lorag", "catalog", "ingest", str(catalog), "--qdrant-path", str(qdrant), "--quiet"]
        subprocess.run(ingest, check=True, stdout=subprocess.DEVNULL)
        ports = {"stub": stubrun.free_port(), "gateway": stubrun.free_port()}
        stub = [*stub_command(python), "--port", str(ports["stub"]), "--model", STUB_MODEL, "--answer", answer]
        stub += ["--ttft-ms", str(args.ttft_ms), "--tokens-per-s", str(args.tokens_per_s)]
        stub_url, url = f"http://{HOST}:{ports['stub']}", f"http://{HOST}:{ports['gateway']}"
        stack.enter_context(stubrun.process(stub, work / "stub.log", f"{stub_url}/health"))
        gateway = [python, "-m", "lorag", "serve", "--host", HOST, "--port", str(ports["gateway"])]
        gateway += ["--upstream-url", stub_url, "--assistants", str(work / "assistants.yaml")]
        gateway += ["--qdrant-path", str(qdrant), "--no-access-log", "--log-level", "warning"]
        env = {**os.environ, "LORAG_EMBEDDING_THREADS": "1", "LORAG_STATE_FILE": str(work / "adapters.json")}
        stack.enter_context(stubrun.process(gateway, work / "gateway.log", f"{url}/ready", env=env))
        for policy in POLICIES:
            text, grounding = asyncio.run(read_whole(url, f"guard-{policy}", question))
            verdict = (grounding or {}).get("verdict")
            if text != answer or (policy != "off") != (verdict == "supported"):
                raise SystemExit(f"guard-{policy} answered {text!r} with grounding {grounding}; expected the stub's")
        records = asyncio.run(measure(url, question, args.concurrency, args.requests, args.rounds))
    rows: list[dict[str, Any]] = []
    for policy in POLICIES:
        rows.append(summarise(policy, records[policy], rows[0] if rows else None))
    load = os.getloadavg()
    header = (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} at the end; concurrency {args.concurrency}, {args.requests} streamed requests per policy in "
        f"{args.rounds} rotating blocks; stub: {len(answer)}-character answer in pieces of <= 4 characters, "
        f"{args.tokens_per_s:g} pieces/s after {args.ttft_ms:g} ms; holdback {args.holdback} characters"
    )
    print(header)
    print(table(rows))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        run_args = vars(args) | {"json_out": str(args.json_out), "func": None}
        args.json_out.write_text(json.dumps({"run": header, "args": run_args, "rows": rows}, indent=2))
    return 1 if any(r["errors"] for r in rows) else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--tokens-per-s", type=float, default=50.0, help="the stub's pace (0: all at once)")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="the stub's time to its first piece")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=120, help="measured streamed requests per policy")
    parser.add_argument("--rounds", type=int, default=6, help="blocks per policy")
    parser.add_argument("--holdback", type=int, default=32, help="holdback_chars of correct and block")
    parser.add_argument("--json-out", type=Path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
