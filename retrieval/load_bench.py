"""`lorag bench retrieval --latency / --ingest`: embed + search latency per concurrency and ingest throughput.

Each catalog size gets a fresh local store (the demo catalog, or a synthetic one beyond its 300 products); the
re-ingest of the same rows must find every one unchanged.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from retrieval import lexical
from retrieval.catalog import Product
from retrieval.demo_catalog import synthetic_catalog
from retrieval.embedder import Embedder
from retrieval.ingest import filled_store, ingest
from retrieval.loaders import Row
from retrieval.retriever import Retriever
from retrieval.scores import percentile
from retrieval.settings import RetrievalSettings


def _timed_runs(call: Callable[[int], object], count: int, concurrency: int) -> dict[str, float]:
    """p50/p99 (ms) and throughput of `count` calls of call(i) from `concurrency` threads."""

    def timed(i: int) -> float:
        start = time.perf_counter()
        call(i)
        return (time.perf_counter() - start) * 1000

    for i in range(5):  # warm-up: first calls pay for lazy initialisation
        call(i)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        times = list(pool.map(timed, range(count)))
    wall = time.perf_counter() - started
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99), "qps": count / wall}


def latency(retriever: Retriever, queries: list[str], concurrency: int, count: int) -> dict[str, float]:
    """Retriever.retrieve end to end: embed + hybrid search + unknown check."""
    return _timed_runs(lambda i: retriever.retrieve(queries[i % len(queries)]), count, concurrency)


def search_latency(retriever: Retriever, queries: list[str], concurrency: int, count: int) -> dict[str, float]:
    """The store's share: the fused search alone, with the query vectors computed beforehand."""
    dense = retriever.embedder.embed(queries)
    sparse = [lexical.query_vector(q) for q in queries]

    def call(i: int) -> object:
        j = i % len(queries)
        return retriever.store.search(
            dense[j],
            sparse[j],
            method=retriever.fusion,
            limit=10,
            prefetch_limit=retriever.prefetch_limit,
            with_dense=True,
        )

    return _timed_runs(call, count, concurrency)


def load_runs(
    args: argparse.Namespace,
    settings: RetrievalSettings,
    embedder: Embedder,
    root: Path,
    catalog: list[Product],
    texts: list[str],
) -> dict[str, Any]:
    """Ingest (and with --latency, query) each of --sizes; one JSON row per size, printed as it is measured."""
    out: dict[str, Any] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        products = catalog if size <= len(catalog) else synthetic_catalog(size)
        store, close, report = filled_store(
            products[:size], embedder, root / f"load-{size}", settings.store, progress=True
        )
        try:
            row: dict[str, Any] = {
                "products": size,
                "ingest_s": report.seconds,
                "ingest_per_s": report.written / report.seconds,
            }
            started = time.perf_counter()
            again = ingest((Row(i + 1, p) for i, p in enumerate(products[:size])), store, embedder, progress=False)
            row["reingest_unchanged_s"] = time.perf_counter() - started
            assert again.unchanged == size, again.summary()
            print(
                f"ingest {size} products: {report.summary()}; re-ingest unchanged {row['reingest_unchanged_s']:.1f} s"
            )
            if args.latency:
                retriever = Retriever(store, embedder, fusion=settings.fusion, prefetch_limit=settings.prefetch_limit)
                for c in (int(x) for x in args.concurrency.split(",")):
                    for what, measure in (("embed+search", latency), ("search only", search_latency)):
                        stats = measure(retriever, texts, c, args.queries)
                        row[f"{what} c{c}"] = stats
                        print(
                            f"latency {size} products, {what}, concurrency {c}: p50 "
                            f"{stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms, "
                            f"{stats['qps']:.1f} queries/s"
                        )
        finally:
            close()
        out[f"load:{size}"] = row
    return out
