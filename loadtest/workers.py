"""Requests per second with retrieval on for 1, 2, 4 ... gateway workers on one machine, without a Qdrant server.

    lorag bench workers --workers 1,2,4 --concurrency 32 --requests 400

It ingests the demo catalog into a local-mode store (which publishes a snapshot), starts the stub upstream
(tests/stub_upstream.py: answers at once, so only the gateway's work is measured) and, for each worker count,
`lorag serve --workers N` with one retrieving assistant (MiniLM on the CPU, one torch thread per worker). It waits
until every worker has started, warms up, then sends `--requests` questions about catalog products at a fixed
concurrency (closed loop) and reports requests/s, latency, the retrieval step's own p50/p99 (from the gateway's
Server-Timing header), CPU per request of the whole process tree and each worker's resident memory.

`--memory-sizes` also measures what one worker's copy of the catalog costs: a store of that many products
(synthetic vectors, demo payloads) is published and opened in a fresh process, whose resident memory is read
before and after.
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
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from loadtest import stubrun
from loadtest.http1 import Connection
from loadtest.peer import tree_cpu_seconds
from loadtest.stubrun import HOST, STUB_MODEL, Samples, manifest, percentile, stub_command

STARTED = "Application startup complete."


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB (VmRSS in /proc/<pid>/status), or None where it cannot be read."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def worker_pids(pid: int) -> list[int]:
    """uvicorn's worker processes under `lorag serve` (its children, less multiprocessing's resource tracker)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    workers = []
    for child in children:
        try:
            if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(int(child))
        except OSError:
            continue
    return workers


def _wait_started(log: Path, workers: int, timeout: float = 600) -> None:
    """Until `workers` processes have logged the end of their start-up (the model loaded, the catalog open)."""
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count(STARTED) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers not started after {timeout:.0f} s:\n{log.read_text()[-2000:]}")
        time.sleep(0.25)


async def measure(port: int, pid: int, concurrency: int, requests: int, warmup: int) -> Samples:
    """Warm-up, then `requests` retrieving requests at `concurrency`, non-streamed; CPU of `pid`'s tree in
    the measured part."""
    pool = [Connection(HOST, port) for _ in range(concurrency)]
    bodies = stubrun.bodies("bench-on", False, stubrun.questions(), 16)
    samples = Samples()
    try:
        await stubrun.block(pool, bodies, warmup, False, None)
        before = tree_cpu_seconds(pid)
        await stubrun.block(pool, bodies, requests, False, samples)
        after = tree_cpu_seconds(pid)
        if before is not None and after is not None:
            samples.cpu = after - before
    finally:
        await asyncio.gather(*(c.close() for c in pool))
    return samples


def summarise(workers: int, samples: Samples, rss: list[float]) -> dict[str, object]:
    """One worker count's row: requests/s, latency and retrieval percentiles, CPU per request, memory."""
    n = len(samples.total)
    row: dict[str, object] = {
        "workers": workers,
        "n": n,
        "errors": samples.errors,
        "rps": n / samples.busy if samples.busy else 0.0,
        "p50_ms": percentile(samples.total, 50) * 1000,
        "p99_ms": percentile(samples.total, 99) * 1000,
        "retrieval_p50_ms": percentile(samples.retrieval, 50) * 1000,
        "retrieval_p99_ms": percentile(samples.retrieval, 99) * 1000,
        "rss_mib_per_worker": [round(r, 1) for r in rss],
    }
    if samples.cpu is not None and n:
        row["cpu_ms_per_request"] = samples.cpu / n * 1000
    if samples.first_error:
        row["first_error"] = samples.first_error
    return row


def table(rows: list[dict[str, object]]) -> str:
    """The markdown table of the worker counts."""
    lines = [
        "| workers | req/s | latency p50 / p99 ms | retrieval p50 / p99 ms | CPU ms/req "
        "| RSS per worker MiB | errors |",
        "|" + "---|" * 7,
    ]
    for r in rows:
        rss = r["rss_mib_per_worker"]
        assert isinstance(rss, list)
        cells = [
            str(r["workers"]),
            f"{r['rps']:.1f}",
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}",
            f"{r['retrieval_p50_ms']:.1f} / {r['retrieval_p99_ms']:.1f}",
            f"{r['cpu_ms_per_request']:.1f}" if "cpu_ms_per_request" in r else "-",
            ", ".join(f"{m:.0f}" for m in rss) or "-",
            str(r["errors"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Run in a fresh process: resident memory before and after one reader opens the published store.
_OPEN = """
import json, sys
from pathlib import Path
from loadtest.workers import rss_mib
import os
import qdrant_client.local.qdrant_local  # the library's own memory is not the catalog's
from retrieval.snapshots import SnapshotStore
before = rss_mib(os.getpid())
store = SnapshotStore(Path(sys.argv[1]))
count = store.count()
after = rss_mib(os.getpid())
store.close()
print(json.dumps({"points": count, "before_mib": before, "after_mib": after}))
"""


def catalog_memory(root: Path, size: int) -> dict[str, object]:
    """What one reader's copy of a `size`-product catalog costs: resident MiB and the copy's size on disk."""
    import numpy as np
    from qdrant_client import QdrantClient

    from retrieval.catalog import Product
    from retrieval.demo_catalog import demo_catalog
    from retrieval.qdrant_store import CatalogStore
    from retrieval.snapshots import SNAPSHOTS, current, publish
    from retrieval.store import PointData

    dimension = 384  # all-MiniLM-L6-v2's
    base = demo_catalog()
    rng = np.random.default_rng(0)
    client = QdrantClient(path=str(root))
    try:
        store = CatalogStore(client)
        store.ensure_collection(dimension)
        store.prepare_ingest()
        for start in range(0, size, 1000):
            points = []
            for i in range(start, min(size, start + 1000)):
                product = Product.model_validate(base[i % len(base)].model_dump() | {"id": f"SYN-{i}"})
                dense = rng.standard_normal(dimension).astype(np.float32)
                terms = sorted(rng.choice(30000, 24, replace=False).tolist())
                points.append(PointData(product, dense / np.linalg.norm(dense), (terms, [1.0] * 24), "x"))
            store.upsert(points)
        publish(root)
    finally:
        client.close()
    generation = root / SNAPSHOTS / str(current(root))
    disk = sum(p.stat().st_size for p in generation.rglob("*") if p.is_file())
    out = subprocess.run(
        [sys.executable, "-c", _OPEN, str(root)], capture_output=True, text=True, check=True, env=_env()
    )
    measured = json.loads(out.stdout)
    return {
        "products": measured["points"],
        "rss_mib": measured["after_mib"] - measured["before_mib"],
        "disk_mib": disk / 2**20,
    }


def _env(**extra: str) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{root}:{path}" if path else root, **extra}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `lorag bench workers`."""
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (closed loop)")
    parser.add_argument("--requests", type=int, default=400, help="measured requests per worker count")
    parser.add_argument("--warmup", type=int, default=64, help="requests sent first, not measured")
    parser.add_argument("--embedding-threads", type=int, default=1, help="torch threads of each worker")
    parser.add_argument("--memory-sizes", default="300", help="catalog sizes whose per-worker memory to measure")
    parser.add_argument("--json-out", type=Path)


def run(args: argparse.Namespace) -> int:
    """Ingest, start the stub, measure each worker count, then the catalog's memory; 1 if any request failed."""
    from retrieval.demo_catalog import write_demo_catalog

    python = sys.executable
    rows: list[dict[str, object]] = []
    copies: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="lorag-workers-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        (work / "assistants.yaml").write_text(manifest(True))
        store = work / "qdrant"
        catalog = write_demo_catalog(work / "catalog.jsonl")
        ingest = [python, "-m", "lorag", "catalog", "ingest", str(catalog), "--qdrant-path", str(store), "--quiet"]
        subprocess.run(ingest, check=True, stdout=subprocess.DEVNULL, env=_env())
        stub_port = stubrun.free_port()
        stub = [*stub_command(python), "--port", str(stub_port), "--model", STUB_MODEL, "--tokens", "16"]
        stack.enter_context(stubrun.process(stub, work / "stub.log", f"http://{HOST}:{stub_port}/health"))
        for workers in [int(w) for w in args.workers.split(",")]:
            port = stubrun.free_port()
            log = work / f"gateway-{workers}.log"
            serve = [python, "-m", "lorag", "serve", "--workers", str(workers), "--host", HOST, "--port", str(port)]
            serve += ["--upstream-url", f"http://{HOST}:{stub_port}", "--assistants", str(work / "assistants.yaml")]
            serve += ["--qdrant-path", str(store), "--no-access-log", "--log-level", "info"]
            env = _env(LORAG_EMBEDDING_THREADS=str(args.embedding_threads))
            with stubrun.process(serve, log, f"http://{HOST}:{port}/ready", timeout=600, env=env) as pid:
                _wait_started(log, workers)
                with stubrun.runner() as runner:
                    samples = runner.run(measure(port, pid, args.concurrency, args.requests, args.warmup))
                # One worker is served in-process by `lorag serve` itself; several are its children.
                serving = worker_pids(pid) if workers > 1 else [pid]
                rss = [m for w in serving if (m := rss_mib(w)) is not None]
            rows.append(summarise(workers, samples, rss))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        for size in [int(s) for s in args.memory_sizes.split(",") if s]:
            copies.append(catalog_memory(work / f"memory-{size}", size))
            print(json.dumps(copies[-1]), file=sys.stderr, flush=True)
    load = os.getloadavg()
    header = (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end; demo catalog (300 products), MiniLM on the CPU with "
        f"{args.embedding_threads} torch thread(s) per worker; {args.requests} requests at concurrency "
        f"{args.concurrency} after {args.warmup} warm-up; stub upstream answers at once"
    )
    print(header)
    print(table(rows))
    for c in copies:
        print(
            f"catalog copy of {c['products']} products: {c['rss_mib']:.1f} MiB resident, {c['disk_mib']:.1f} MiB disk"
        )
    if args.json_out:
        record = {"run": header, "args": vars(args) | {"json_out": str(args.json_out)}, "rows": rows, "memory": copies}
        args.json_out.write_text(json.dumps(record, indent=2, default=str))
    return 1 if any(r["errors"] for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
