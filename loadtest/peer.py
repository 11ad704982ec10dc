"""lorag beside LiteLLM's proxy: the same requests to the stub upstream directly, through lorag, through LiteLLM.

    lorag bench peer --litellm build/litellm-venv/bin/litellm --concurrency 1,16,64 --requests 600

It starts the stub upstream (tests/stub_upstream.py: answers at once), lorag (`lorag serve`, one worker, retrieval
off, access log off) and LiteLLM's proxy (`litellm --config`, one worker, from its own virtualenv) in front of it.
For each concurrency it alternates blocks of requests to the three paths, rotating their order, so drift in
machine load falls on all alike, and reports each gateway's added latency (its percentile minus the direct
percentile), requests per second, CPU seconds per request of the gateway's processes (from /proc, threads and
children included) and the ratio of lorag's added p99 to LiteLLM's. Both gateways run open (no API keys), with
LiteLLM's logging at ERROR, so neither pays for an auth check or a log line per request; lorag's admission
control is off (LORAG_ADMISSION_MAX_WAIT=0), so both pass on every request.
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
from loadtest.stubrun import HOST, STUB_MODEL, Samples, manifest, percentile, stub_command

PATHS = ("direct", "lorag", "litellm")
GATEWAYS = ("lorag", "litellm")


def litellm_config(stub_url: str) -> str:
    """LiteLLM's proxy config: one model, the stub's, through its OpenAI-compatible provider."""
    return (
        "model_list:\n"
        f"  - model_name: {STUB_MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{STUB_MODEL}\n"
        f"      api_base: {stub_url}/v1\n"
        "      api_key: none\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )


def stat_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/<pid>/stat (the command name may hold spaces)."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its live descendants; None where /proc cannot be read."""
    total, stack, seen = 0, [pid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            total += stat_ticks(Path(f"/proc/{current}/stat").read_text())
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError, IndexError):
            if current == pid:
                return None
    return total / os.sysconf("SC_CLK_TCK")


def _order(round_index: int) -> tuple[str, ...]:
    """The paths' order in one round: rotated each round, so none is always first or last."""
    shift = round_index % len(PATHS)
    return PATHS[shift:] + PATHS[:shift]


async def run_case(
    ports: dict[str, int], pids: dict[str, int], concurrency: int, stream: bool, args: argparse.Namespace
) -> dict[str, Samples]:
    """One concurrency: warm-up, then `rounds` rotating blocks per path."""
    models = {"direct": STUB_MODEL, "lorag": "bench-off", "litellm": STUB_MODEL}
    questions = stubrun.questions()
    pools = {path: [Connection(HOST, ports[path]) for _ in range(concurrency)] for path in PATHS}
    bodies = {path: stubrun.bodies(models[path], stream, questions, args.tokens) for path in PATHS}
    samples = {path: Samples() for path in PATHS}
    per_block = max(concurrency, args.requests // args.rounds)
    try:
        for path in PATHS:
            await stubrun.block(pools[path], bodies[path], min(per_block, 4 * concurrency + 20), stream, None)
        for i in range(args.rounds):
            for path in _order(i):
                before = tree_cpu_seconds(pids[path])
                await stubrun.block(pools[path], bodies[path], per_block, stream, samples[path])
                after = tree_cpu_seconds(pids[path])
                if before is not None and after is not None:
                    samples[path].cpu = (samples[path].cpu or 0.0) + after - before
    finally:
        for pool in pools.values():
            await asyncio.gather(*(c.close() for c in pool))
    return samples


def summarise(case: dict[str, object], samples: dict[str, Samples]) -> dict[str, object]:
    """Each path's percentiles, each gateway's added latency and CPU per request, and lorag's share of LiteLLM's."""
    row: dict[str, object] = dict(case)
    direct = samples["direct"].total
    for name, s in samples.items():
        row[f"{name}_n"] = len(s.total)
        row[f"{name}_errors"] = s.errors
        row[f"{name}_p50_ms"] = percentile(s.total, 50) * 1000
        row[f"{name}_p99_ms"] = percentile(s.total, 99) * 1000
        row[f"{name}_rps"] = len(s.total) / s.busy if s.busy else 0.0
        if s.cpu is not None and s.total:
            row[f"{name}_cpu_ms_per_request"] = s.cpu / len(s.total) * 1000
        if s.first_error:
            row[f"{name}_first_error"] = s.first_error
    for q in (50, 99):
        added = {g: (percentile(samples[g].total, q) - percentile(direct, q)) * 1000 for g in GATEWAYS}
        for gateway, ms in added.items():
            row[f"{gateway}_added_p{q}_ms"] = ms
        row[f"ratio_added_p{q}"] = added["lorag"] / added["litellm"] if added["litellm"] > 0 else float("nan")
    lorag_cpu, litellm_cpu = row.get("lorag_cpu_ms_per_request"), row.get("litellm_cpu_ms_per_request")
    if isinstance(lorag_cpu, float) and isinstance(litellm_cpu, float) and litellm_cpu > 0:
        row["ratio_cpu"] = lorag_cpu / litellm_cpu
    return row


def table(rows: list[dict[str, object]]) -> str:
    """The markdown table of all cases."""
    lines = [
        "| c | stream | added p50 / p99 ms, lorag | added p50 / p99 ms, LiteLLM | lorag / LiteLLM added p99 "
        "| CPU ms/req lorag / LiteLLM | req/s direct / lorag / LiteLLM | errors |",
        "|" + "---|" * 8,
    ]
    for r in rows:

        def pair(a: str, b: str, row: dict[str, object] = r) -> str:
            return f"{row[a]:.2f} / {row[b]:.2f}" if a in row and b in row else "-"

        cells = [
            str(r["concurrency"]),
            "yes" if r["stream"] else "no",
            pair("lorag_added_p50_ms", "lorag_added_p99_ms"),
            pair("litellm_added_p50_ms", "litellm_added_p99_ms"),
            f"{r['ratio_added_p99']:.3f}",
            pair("lorag_cpu_ms_per_request", "litellm_cpu_ms_per_request"),
            f"{r['direct_rps']:.0f} / {r['lorag_rps']:.0f} / {r['litellm_rps']:.0f}",
            "+".join(str(r[f"{p}_errors"]) for p in PATHS),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `lorag bench peer`."""
    parser.add_argument("--litellm", type=Path, required=True, help="the `litellm` command of its own virtualenv")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--stream", default="no", help="which of no,yes to run")
    parser.add_argument("--requests", type=int, default=600, help="measured requests per path per case")
    parser.add_argument("--rounds", type=int, default=6, help="rotating blocks per path per case")
    parser.add_argument("--tokens", type=int, default=16, help="completion tokens the stub sends")
    parser.add_argument("--json-out", type=Path)


def run(args: argparse.Namespace) -> int:
    """Start the three servers, run every case, print the table (and write JSON); 1 if any request failed."""
    if not os.access(args.litellm, os.X_OK):
        print(f"not an executable: {args.litellm} (install litellm[proxy] in a virtualenv of its own)", file=sys.stderr)
        return 2
    ports = {path: stubrun.free_port() for path in PATHS}
    python = sys.executable
    rows: list[dict[str, object]] = []
    stub_url = f"http://{HOST}:{ports['direct']}"
    with tempfile.TemporaryDirectory(prefix="lorag-peer-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        (work / "assistants.yaml").write_text(manifest(False))
        (work / "litellm.yaml").write_text(litellm_config(stub_url))
        stub = [*stub_command(python), "--port", str(ports["direct"]), "--model", STUB_MODEL]
        stub += ["--tokens", str(args.tokens)]
        pids = {"direct": stack.enter_context(stubrun.process(stub, work / "stub.log", f"{stub_url}/health"))}
        lorag = [python, "-m", "lorag", "serve", "--host", HOST, "--port", str(ports["lorag"])]
        lorag += ["--upstream-url", stub_url, "--assistants", str(work / "assistants.yaml")]
        lorag += ["--no-access-log", "--log-level", "warning"]
        # Admission control off: it refuses what it predicts an engine cannot serve in time, and LiteLLM has
        # nothing like it on by default; this measures what each proxy adds to requests both pass on.
        lorag_env = {**os.environ, "LORAG_ADMISSION_MAX_WAIT": "0"}
        pids["lorag"] = stack.enter_context(
            stubrun.process(lorag, work / "lorag.log", f"http://{HOST}:{ports['lorag']}/ready", env=lorag_env)
        )
        litellm = [str(args.litellm), "--config", str(work / "litellm.yaml"), "--host", HOST]
        litellm += ["--port", str(ports["litellm"]), "--num_workers", "1"]
        # Recent LiteLLM refuses to start without a master key unless told this is a local run; lorag runs
        # open here too, so neither checks a key.
        env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"}
        pids["litellm"] = stack.enter_context(
            stubrun.process(
                litellm, work / "litellm.log", f"http://{HOST}:{ports['litellm']}/health/liveliness", env=env
            )
        )
        for stream in [s == "yes" for s in args.stream.split(",")]:
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                with stubrun.runner() as runner:
                    samples = runner.run(run_case(ports, pids, concurrency, stream, args))
                rows.append(summarise({"concurrency": concurrency, "stream": stream}, samples))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        version = subprocess.run(
            [str(args.litellm.parent / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    load = os.getloadavg()
    header = (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end; LiteLLM {version or '?'}; {args.requests} requests "
        f"per path per case in {args.rounds} rotating blocks; stub sends {args.tokens} tokens at once"
    )
    print(header)
    print(table(rows))
    if args.json_out:
        record = {"run": header, "args": vars(args) | {"json_out": str(args.json_out)}, "rows": rows}
        args.json_out.write_text(json.dumps(record, indent=2, default=str))
    return 1 if any(r[f"{p}_errors"] for r in rows for p in PATHS) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
