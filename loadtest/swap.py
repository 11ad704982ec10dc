"""Swap latency under load: from the swap call to the first answer served by the new adapter version.

    python -m loadtest.swap --gateway http://127.0.0.1:8000 --admin-key KEY --adapter support-agent \\
        --assistant support-agent --versions build/demo-kit/versions/support-agent-v2,boot --swaps 5

Clients stream without pause through the gateway for the whole run (`--clients`, over `--load-models`). Each swap
alternates over `--versions` (adapter directories, or registered versions such as `boot`); the gateway's
`x-lorag-served-model` header tells which version answered each request. For each swap it reports the swap call
(validation, load, warm-up, switch) and the time from the call to the first token of the first answer that the
new version served. With `--engine URL` the same run also times vLLM alone doing the same: load the adapter under
a new name with `/v1/load_lora_adapter`, then the first token of a request to it (no warm-up, no switch), under
the same load. Failed requests are counted over the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx


@dataclass
class Sample:
    model: str
    started: float
    first_token: float | None = None
    served: str | None = None
    error: str | None = None


@dataclass
class SwapResult:
    index: int
    version: str
    served_name: str
    call_s: float
    validate_s: float
    load_s: float
    warm_s: float
    first_answer_s: float | None
    direct_load_s: float | None = None
    direct_first_token_s: float | None = None


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


def _payload(model: str, args: argparse.Namespace) -> dict[str, Any]:
    prompt = "Tell me about the product. " + "please " * args.prompt_words
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": args.max_tokens,
        "stream": True,
        "temperature": 0,
    }


async def _one(client: httpx.AsyncClient, url: str, payload: dict[str, Any], sample: Sample) -> None:
    try:
        async with client.stream("POST", url, json=payload) as response:
            sample.served = response.headers.get("x-lorag-served-model")
            if response.status_code != 200:
                sample.error = f"HTTP {response.status_code}"
                await response.aread()
                return
            done = False
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                elif '"error"' in data[:20]:
                    sample.error = "stream error event"
                elif sample.first_token is None and '"content"' in data:
                    sample.first_token = time.perf_counter()
            if not done and sample.error is None:
                sample.error = "no [DONE]"
    except httpx.HTTPError as exc:
        sample.error = type(exc).__name__


async def _client(client: httpx.AsyncClient, args: argparse.Namespace, run: Run, index: int) -> None:
    models = args.load_models.split(",")
    n = index
    while not run.stop.is_set():
        model = models[n % len(models)]
        n += 1
        sample = Sample(model, time.perf_counter())
        run.samples.append(sample)
        await _one(client, f"{args.gateway}/v1/chat/completions", _payload(model, args), sample)


def _first_answer(run: Run, served: str, since: float) -> float | None:
    times = [s.first_token for s in run.samples if s.served == served and s.first_token and s.started >= since]
    return min(times) - since if times else None


async def _direct(engine: str, path: str, name: str, args: argparse.Namespace) -> tuple[float, float | None]:
    """vLLM alone: load under `name`, stream one request to it, unload."""
    async with httpx.AsyncClient(base_url=engine, timeout=300) as client:
        began = time.perf_counter()
        loaded = await client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})
        loaded.raise_for_status()
        load_s = time.perf_counter() - began
        sample = Sample(name, time.perf_counter())
        await _one(client, f"{engine}/v1/chat/completions", _payload(name, args), sample)
        await client.post("/v1/unload_lora_adapter", json={"lora_name": name})
    return load_s, (sample.first_token - began) if sample.first_token else None


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    run = Run()
    versions = args.versions.split(",")
    headers = {"authorization": f"Bearer {args.admin_key}"}
    results: list[SwapResult] = []
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=args.clients + 8)) as client:
        load = [asyncio.create_task(_client(client, args, run, i)) for i in range(args.clients)]
        await asyncio.sleep(args.pause)
        for i in range(args.swaps):
            version = versions[i % len(versions)]
            body = {"path": version} if "/" in version else {"version": version}
            began = time.perf_counter()
            response = await client.post(
                f"{args.gateway}/admin/adapters/{args.adapter}/swap", json=body, headers=headers
            )
            call_s = time.perf_counter() - began
            if response.status_code != 200:
                raise SystemExit(f"swap {i} failed: {response.status_code} {response.text}")
            report = response.json()
            deadline = time.monotonic() + args.answer_timeout
            first = None
            while first is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                first = _first_answer(run, report["served_name"], began)
            result = SwapResult(
                i,
                report["active"],
                report["served_name"],
                call_s,
                report["validate_s"],
                report["load_s"],
                report["warm_s"],
                first,
            )
            if args.engine and "/" in version:
                result.direct_load_s, result.direct_first_token_s = await _direct(
                    args.engine, version, f"direct-probe-{i}", args
                )
            results.append(result)
            print(
                f"swap {i}: {report['served_name']}: call {call_s * 1000:.0f} ms, first answer {first * 1000:.0f} ms"
                if first is not None
                else f"swap {i}: no answer from the new version",
                file=sys.stderr,
                flush=True,
            )
            await asyncio.sleep(args.pause)
        run.stop.set()
        await asyncio.gather(*load)
    failures = [s for s in run.samples if s.error]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "args": {k: v for k, v in vars(args).items() if k not in ("admin_key", "func")},
        "requests": len(run.samples),
        "failed": len(failures),
        "errors": sorted({str(s.error) for s in failures}),
        "swaps": [asdict(r) for r in results],
    }


def markdown(result: dict[str, Any]) -> str:
    rows = [
        "| swap | version | call ms (validate / load / warm) | first answer ms "
        "| vLLM alone: load ms / first token ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in result["swaps"]:
        first = f"{s['first_answer_s'] * 1000:.0f}" if s["first_answer_s"] is not None else "none"
        direct = "-"
        if s["direct_load_s"] is not None:
            token = s["direct_first_token_s"]
            direct = f"{s['direct_load_s'] * 1000:.0f} / {token * 1000:.0f}" if token else "failed"
        rows.append(
            f"| {s['index']} | {s['served_name']} | {s['call_s'] * 1000:.0f} ({s['validate_s'] * 1000:.0f} / "
            f"{s['load_s'] * 1000:.0f} / {s['warm_s'] * 1000:.0f}) | {first} | {direct} |"
        )
    answers = [s["first_answer_s"] for s in result["swaps"] if s["first_answer_s"] is not None]
    if answers:
        rows.append(
            f"\nfirst answer after the swap call: median {statistics.median(answers) * 1000:.0f} ms, max "
            f"{max(answers) * 1000:.0f} ms; requests {result['requests']}, failed {result['failed']}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="http://127.0.0.1:8000")
    parser.add_argument("--admin-key", required=True)
    parser.add_argument("--adapter", required=True, help="the adapter to swap")
    parser.add_argument("--versions", required=True, help="comma-separated adapter paths or versions, alternated")
    parser.add_argument("--load-models", required=True, help="comma-separated assistants the clients ask")
    parser.add_argument("--swaps", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--prompt-words", type=int, default=64)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds of load before, between and after swaps")
    parser.add_argument("--answer-timeout", type=float, default=120.0)
    parser.add_argument("--engine", help="a vLLM URL: also time vLLM alone loading and serving the same adapter")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    args.gateway = args.gateway.rstrip("/")
    result = asyncio.run(bench(args))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(markdown(result))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
