"""The retrieval step alone, with and without micro-batching of query embeddings, side by side in one process.

    python -m loadtest.retrieval_batching --concurrency 1,16 --seconds 6 --rounds 4

The demo catalog is ingested into a temporary local store; one Retriever per variant (query batching off, on
without a wait, on with a 2 ms wait; LORAG_EMBEDDING_* otherwise) answers the demo questions from `concurrency`
threads, at most `--workers` of them retrieving at once as the gateway's limiter allows (LORAG_RETRIEVAL_CONCURRENCY,
4). Variants alternate block by block, so drift in machine load falls on all alike. Per variant and level: the
process's CPU ms per retrieval, retrievals per second, the step's latency p50/p99 and the mean batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from retrieval.demo_catalog import demo_catalog, write_demo_catalog
from retrieval.embedder import Embedder
from retrieval.retriever import Retriever
from retrieval.scores import percentile
from retrieval.settings import RetrievalSettings
from retrieval.store import open_store

VARIANTS = {"off": (False, 0.0), "on-wait0": (True, 0.0), "on-wait2ms": (True, 0.002)}


@dataclass
class Tally:
    latency: list[float] = field(default_factory=list)
    cpu: float = 0.0
    busy: float = 0.0


def _block(
    retriever: Retriever, questions: list[str], clients: int, workers: int, seconds: float, tally: Tally
) -> None:
    """`clients` closed-loop callers for `seconds`, at most `workers` inside retrieve() at once."""
    gate = threading.Semaphore(workers)
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(i: int) -> None:
        n = i
        while time.monotonic() < stop:
            question = questions[n % len(questions)]
            n += clients
            began = time.perf_counter()
            with gate:
                retriever.retrieve(question, top_k=4)
            with lock:
                tally.latency.append(time.perf_counter() - began)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    tally.cpu += time.process_time() - cpu0
    tally.busy += time.perf_counter() - wall0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--workers", type=int, default=4, help="retrievals at once (the gateway's limiter)")
    parser.add_argument("--seconds", type=float, default=6.0, help="per block")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    names = args.variants.split(",")
    questions = [f"How much is the {p.name}?" for p in demo_catalog()]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="lorag-batching-") as tmp:
        work = Path(tmp)
        catalog = write_demo_catalog(work / "catalog.jsonl")
        ingest = [sys.executable, "-m", "lorag", "catalog", "ingest", str(catalog), "--qdrant-path", str(work / "q"),
                  "--quiet"]  # fmt: skip
        subprocess.run(ingest, check=True, stdout=subprocess.DEVNULL)
        settings = RetrievalSettings(qdrant_path=work / "q")
        store, close = open_store(settings)
        try:
            retrievers = {}
            for name in names:
                batching, wait = VARIANTS[name]
                embedder = Embedder(
                    settings.embedding_model,
                    threads=settings.embedding_threads,
                    device=settings.embedding_device,
                    batching=batching,
                    max_batch=settings.embedding_max_batch,
                    batch_wait=wait,
                )
                retrievers[name] = Retriever.from_settings(settings, store, embedder)
                for q in questions[:8]:  # warm-up
                    retrievers[name].retrieve(q)
            for clients in levels:
                tallies = {name: Tally() for name in names}
                passes0 = {n: _stats(r) for n, r in retrievers.items()}
                for i in range(args.rounds):
                    order = names if i % 2 == 0 else names[::-1]
                    for name in order:
                        _block(retrievers[name], questions, clients, args.workers, args.seconds, tallies[name])
                for name in names:
                    t, (p1, t1) = tallies[name], _stats(retrievers[name])
                    p0, t0 = passes0[name]
                    n = len(t.latency)
                    row = {
                        "variant": name,
                        "concurrency": clients,
                        "workers": args.workers,
                        "retrievals": n,
                        "cpu_ms_per_retrieval": t.cpu / n * 1000,
                        "retrievals_per_s": n / t.busy,
                        "p50_ms": percentile(t.latency, 50) * 1000,
                        "p99_ms": percentile(t.latency, 99) * 1000,
                        "mean_batch": (t1 - t0) / (p1 - p0) if p1 > p0 else 1.0,
                    }
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
        finally:
            close()
    load = os.getloadavg()
    header = (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} at the end; embedder {settings.embedding_model} on {settings.embedding_device}, "
        f"{settings.embedding_threads or 'default'} torch threads; {args.rounds} alternating blocks of "
        f"{args.seconds:g} s per variant"
    )
    print(header)
    print("| c | batching | retrievals/s | CPU ms per retrieval | p50 / p99 ms | mean batch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['concurrency']} | {r['variant']} | {r['retrievals_per_s']:.1f} | {r['cpu_ms_per_retrieval']:.1f} "
            f"| {r['p50_ms']:.1f} / {r['p99_ms']:.1f} | {r['mean_batch']:.2f} |"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps({"run": header, "rows": rows}, indent=2) + "\n")
    return 0


def _stats(retriever: Retriever) -> tuple[int, int]:
    """Forward passes and texts the retriever's batcher ran so far (one pass per query when batching is off)."""
    batcher = retriever.embedder.batcher
    return (batcher.stats.passes, batcher.stats.texts) if batcher else (0, 0)


if __name__ == "__main__":
    sys.exit(main())
