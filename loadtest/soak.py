"""Soak: the gateway under a steady load for minutes with API keys and per-key limits on.

    python -m loadtest.soak --minutes 5 --concurrency 32 --out results/2026-12-02-soak   # or: lorag bench soak

It starts the stub upstream (tests/stub_upstream.py) and one gateway (`lorag serve`, access log off) whose keys
file `lorag keys create` writes: four keys of two tenants, each with limits. The clients are spread over the keys
in turn; each sends one request at a time, its next one `--interval` after the last was sent (at once when the
answer took longer), streamed and not in turn. The load stays under every limit but one: the last key's
requests per minute, which its clients exceed, so its 429s follow from arithmetic (fixed one-minute windows that
start at the key's first request). A warm-up on the first key comes first, outside the counts.

Reported: every outcome per key; unexpected errors (anything but a 200 that ends well, or a 429
`rate_limit_exceeded` with Retry-After from the key that is over its limit); that key's 429s against the count
its windows predict from the times its requests were sent; the gateway's resident memory (RSS) at the start and
the end of the measured run; and per minute the requests, 429s, unexpected errors, p50 / p99 latency of the 200s
and the RSS, to show growth or drift.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from loadtest import stubrun
from loadtest.http1 import Answer, Connection
from loadtest.soak_report import KeySpec, Record, classify, markdown, offered_per_minute, report
from loadtest.stubrun import HOST, STUB_MODEL, stub_command

ASSISTANTS = ("soak-a", "soak-b", "soak-c")
CHAT = "/v1/chat/completions"


def keys(limited_rpm: int, streams: int) -> list[KeySpec]:
    """The soak's keys: two tenants; generous limits on the first three, the last one's requests per minute low."""
    return [
        KeySpec("acme-web", "acme", ("soak-a", "soak-b"), rpm=100_000, tpm=50_000_000, streams=streams),
        KeySpec("acme-staff", "acme", ("soak-a",), rpm=None, tpm=50_000_000, streams=streams),
        KeySpec("globex-web", "globex", ("soak-c",), rpm=100_000, tpm=None, streams=streams),
        KeySpec("globex-batch", "globex", ("soak-c",), rpm=limited_rpm, tpm=None, streams=None),
    ]


def manifest() -> str:
    lines = [f"base_model: {STUB_MODEL}", "assistants:"]
    lines += [
        f"  - {{name: {name}, adapter: null, retrieval: {{enabled: false}}, max_tokens: 64}}" for name in ASSISTANTS
    ]
    return "\n".join(lines) + "\n"


def create_keys(python: str, path: Path, specs: list[KeySpec]) -> list[str]:
    """Write the keys file with `lorag keys create`; the keys, each printed once."""
    tokens = []
    for spec in specs:
        cmd = [python, "-m", "lorag", "keys", "create", "--file", str(path), "--tenant", spec.tenant]
        cmd += ["--assistants", ",".join(spec.assistants), "--name", spec.name]
        for flag, value in (("--rpm", spec.rpm), ("--tpm", spec.tpm), ("--streams", spec.streams)):
            if value is not None:
                cmd += [flag, str(value)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        tokens.append(out.strip().splitlines()[-1])
    return tokens


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process (Linux /proc), KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


@dataclass
class Load:
    """One phase of load: who sends, how often, until when, and where outcomes go (None: not recorded)."""

    specs: list[KeySpec]
    tokens: list[str]
    port: int
    interval: float
    max_tokens: int
    limited: set[int]

    async def run(self, clients: int, seconds: float, keys_used: list[int], records: list[Record] | None) -> float:
        """Run `clients` clients over `keys_used` for `seconds`; the start time the records count from."""
        began = time.perf_counter()
        deadline = began + seconds
        await asyncio.gather(
            *(self._client(i, keys_used[i % len(keys_used)], began, deadline, records) for i in range(clients))
        )
        return began

    async def _client(self, index: int, key: int, t0: float, deadline: float, records: list[Record] | None) -> None:
        spec, connection = self.specs[key], Connection(HOST, self.port)
        headers = {"authorization": f"Bearer {self.tokens[key]}"}
        n = index
        try:
            while (sent := time.perf_counter()) < deadline:
                stream = n % 2 == 1
                body = {
                    "model": spec.assistants[n % len(spec.assistants)],
                    "messages": [{"role": "user", "content": f"soak question {n}"}],
                    "max_tokens": self.max_tokens,
                    "stream": stream,
                }
                n += 1
                answer: Answer | None = None
                problem = ""
                try:
                    answer = await connection.post(CHAT, json.dumps(body).encode(), headers)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    problem = f"transport: {exc!r}"
                    await connection.close()
                took = time.perf_counter() - sent
                if records is not None:
                    status, problem = (0, problem) if answer is None else classify(answer, stream, key in self.limited)
                    records.append(Record(sent - t0, key, status, took, problem))
                if (pause := self.interval - took) > 0:
                    await asyncio.sleep(pause)
        finally:
            await connection.close()


async def _sample_rss(pid: int, t0: float, every: float, samples: list[tuple[float, int]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        if (rss := rss_kib(pid)) is not None:
            samples.append((time.perf_counter() - t0, rss))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


async def soak(load: Load, pid: int, args: argparse.Namespace) -> tuple[list[Record], list[tuple[float, int]]]:
    """Warm-up on the first key, then the measured run over every key, sampling the gateway's RSS."""
    await load.run(args.concurrency, args.warmup, [0], None)
    records: list[Record] = []
    rss: list[tuple[float, int]] = []
    stop = asyncio.Event()
    t0 = time.perf_counter()
    sampler = asyncio.create_task(_sample_rss(pid, t0, 5.0, rss, stop))
    await load.run(args.concurrency, args.minutes * 60, list(range(len(load.specs))), records)
    stop.set()
    await sampler
    if (last := rss_kib(pid)) is not None:
        rss.append((time.perf_counter() - t0, last))
    return records, rss


def machine() -> dict[str, object]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {"nproc": os.cpu_count(), "cpu": model, "load_average": os.getloadavg()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The soak's options (`python -m loadtest.soak` and `lorag bench soak`)."""
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the measured run")
    parser.add_argument("--concurrency", type=int, default=32, help="clients, spread over the keys in turn")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between one client's requests")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of warm-up on the first key")
    parser.add_argument("--limited-rpm", type=int, default=1200, help="requests per minute of the last key")
    parser.add_argument("--tokens", type=int, default=16, help="completion tokens the stub sends")
    parser.add_argument("--ttft-ms", type=float, default=20.0, help="the stub's time to first token")
    parser.add_argument("--out", type=Path, help="write soak.json and soak.md here")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the soak; 1 when any error was unexpected."""
    python = sys.executable
    specs = keys(args.limited_rpm, streams=args.concurrency)
    clients = [sum(1 for i in range(args.concurrency) if i % len(specs) == k) for k in range(len(specs))]
    # A 429 is expected only from a key whose clients can send more than its requests per minute.
    limited = {k for k, s in enumerate(specs) if s.rpm and offered_per_minute(clients[k], args.interval) > s.rpm}
    ports = {"stub": stubrun.free_port(), "gateway": stubrun.free_port()}
    started = datetime.now(UTC)
    before = machine()
    with tempfile.TemporaryDirectory(prefix="lorag-soak-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        (work / "assistants.yaml").write_text(manifest())
        tokens = create_keys(python, work / "keys.json", specs)
        stub = [*stub_command(python), "--port", str(ports["stub"]), "--model", STUB_MODEL]
        stub += ["--tokens", str(args.tokens), "--ttft-ms", str(args.ttft_ms)]
        stack.enter_context(stubrun.process(stub, work / "stub.log", f"http://{HOST}:{ports['stub']}/health"))
        gateway = [python, "-m", "lorag", "serve", "--host", HOST, "--port", str(ports["gateway"])]
        gateway += ["--upstream-url", f"http://{HOST}:{ports['stub']}", "--assistants", str(work / "assistants.yaml")]
        gateway += ["--no-access-log", "--log-level", "warning"]
        env = {
            **os.environ,
            "LORAG_API_KEYS_FILE": str(work / "keys.json"),
            "LORAG_STATE_FILE": str(work / "state.json"),
        }
        env.pop("LORAG_ADMIN_KEY", None)
        pid = stack.enter_context(
            stubrun.process(gateway, work / "gateway.log", f"http://{HOST}:{ports['gateway']}/ready", env=env)
        )
        load = Load(specs, tokens, ports["gateway"], args.interval, args.tokens, limited)
        records, rss = asyncio.run(soak(load, pid, args))
    result = report(records, rss, specs, clients, limited, args.minutes)
    result["run"] = {
        "started": f"{started:%Y-%m-%d %H:%M} UTC",
        "ended": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": before | {"load_average_end": os.getloadavg()},
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "keys": [asdict(s) for s in specs],
    }
    text = markdown(result)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "soak.json").write_text(json.dumps(result, indent=1))
        (args.out / "soak.md").write_text(text + "\n")
    return 1 if result["unexpected"] else 0


if __name__ == "__main__":
    sys.exit(main())
