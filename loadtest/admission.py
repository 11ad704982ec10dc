"""Admission control under a burst: N clients send one request each at the same moment, as an outside probe did.

    python -m loadtest.admission --url http://127.0.0.1:8000 --clients 64 --rounds 3

Against a running gateway (`make demo`; `LORAG_ADMISSION_MAX_WAIT=0` turns admission control off for the
comparison). Each round fires the burst and waits for every answer; later rounds meet an engine whose completion
rate the gateway has measured. Reports per round: requests answered 200 (admitted) with their latency p50/p99 and
max, refused (503 `overloaded`) with the share and how fast the refusal came, client timeouts and other errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from retrieval.scores import percentile


async def _one(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[str, float]:
    began = time.perf_counter()
    try:
        response = await client.post("/v1/chat/completions", json=body)
    except httpx.TimeoutException:
        return "timeout", time.perf_counter() - began
    except httpx.TransportError as exc:
        return type(exc).__name__, time.perf_counter() - began
    seconds = time.perf_counter() - began
    if response.status_code == 503 and response.json().get("error", {}).get("code") == "overloaded":
        return "refused", seconds
    return str(response.status_code), seconds


async def burst(url: str, clients: int, model: str, max_tokens: int, timeout: float) -> dict[str, Any]:
    """One burst of `clients` simultaneous requests; the outcome counts and latency figures in seconds."""
    body = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": "How much is the Vellora Crema V-520?"}],
    }
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        began = time.perf_counter()
        results = await asyncio.gather(*(_one(client, body) for _ in range(clients)))
        wall = time.perf_counter() - began
    outcomes = Counter(kind for kind, _ in results)
    admitted = [s for kind, s in results if kind == "200"]
    refused = [s for kind, s in results if kind == "refused"]
    return {
        "clients": clients,
        "outcomes": dict(outcomes),
        "refused_share": len(refused) / clients,
        "admitted_p50_s": percentile(admitted, 50) if admitted else None,
        "admitted_p99_s": percentile(admitted, 99) if admitted else None,
        "admitted_max_s": max(admitted, default=None),
        "refusal_p99_ms": percentile(refused, 99) * 1000 if refused else None,
        "wall_s": wall,
    }


def _row(n: int, r: dict[str, Any]) -> str:
    def f(value: float | None, unit: str = "s") -> str:
        return "-" if value is None else f"{value:.1f} {unit}"

    o = r["outcomes"]
    return (
        f"| {n} | {o.get('200', 0)} | {f(r['admitted_p50_s'])} | {f(r['admitted_p99_s'])} | {o.get('refused', 0)} "
        f"({r['refused_share']:.0%}) | {f(r['refusal_p99_ms'], 'ms')} | {o.get('timeout', 0)} "
        f"| {sum(v for k, v in o.items() if k not in ('200', 'refused', 'timeout'))} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="support-agent")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=120.0, help="each client's timeout, seconds")
    parser.add_argument("--out", type=Path, help="write the rounds as JSON here")
    args = parser.parse_args(argv)

    rounds = []
    print("| round | admitted | p50 | p99 | refused | refusal p99 | timed out | other |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in range(1, args.rounds + 1):
        result = asyncio.run(burst(args.url, args.clients, args.model, args.max_tokens, args.timeout))
        rounds.append(result)
        print(_row(n, result), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"options": vars(args) | {"out": str(args.out)}, "rounds": rounds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
