"""`lorag bench retrieval`: quality on BEIR-layout sets and the labelled demo set, latency, ingest speed.

Every run builds a fresh local-mode store in a temporary directory, so results do not depend on build/qdrant.
Tables are printed as Markdown, ready for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval import lexical
from retrieval.beir import Dataset, load_beir, wands_to_beir
from retrieval.demo_catalog import demo_catalog
from retrieval.embedder import Embedder
from retrieval.esci import esci_to_beir
from retrieval.fields import field_variant
from retrieval.fusion import sparse_first, weighted_dbsf
from retrieval.ingest import filled_store
from retrieval.load_bench import load_runs
from retrieval.queries import labelled_queries, write_beir
from retrieval.rerank import Reranker
from retrieval.retriever import Retriever
from retrieval.scores import bootstrap_ci, mrr_at, ndcg_at, percentile, recall_at
from retrieval.settings import RetrievalSettings, StoreKind
from retrieval.store import METHODS
from retrieval.unknown_eval import judged_name, unknown_case, unknown_table

PIPELINE = "retrieve"  # the full Retriever.retrieve path: default fusion, price parsing, code promotion
RERANK_TOP = 10  # what the gateway fetches per question: a reranker can only reorder these
RERANKED = f"retrieve + rerank top {RERANK_TOP}"
# Dense weights of the client-side DBSF measured by --fusion-grid (0.5 ranks as the store's DBSF).
DENSE_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SPARSE_FIRST = "sparse-first"


@dataclass
class MethodScores:
    """Per-query metric values of one method on one dataset."""

    ndcg10: list[float] = field(default_factory=list)
    recall10: list[float] = field(default_factory=list)
    recall100: list[float] = field(default_factory=list)
    mrr10: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)


def fusion_methods(grid: bool) -> tuple[str, ...]:
    """Names of the client-side fusions measured beside the store's methods."""
    return (*(f"dbsf w={w:.1f}" for w in DENSE_WEIGHTS), SPARSE_FIRST) if grid else ()


def evaluate(
    dataset: Dataset,
    embedder: Embedder,
    settings: RetrievalSettings,
    root: Path,
    backend: StoreKind = "qdrant",
    *,
    fusion_grid: bool = False,
    reranker: Reranker | None = None,
) -> dict[str, Any]:
    """Metrics per method (dense, sparse, rrf, dbsf, the full pipeline; with `fusion_grid` also DBSF weighted per
    side and sparse-first, fused here from the two top-100 lists; with a `reranker` the full pipeline's top
    RERANK_TOP reordered by it, and its time per query) and the unknown-signal cases."""
    store, close, report = filled_store(dataset.products, embedder, root, backend, progress=True)
    try:
        retriever = Retriever(
            store,
            embedder,
            fusion=settings.fusion,
            prefetch_limit=settings.prefetch_limit,
            unknown_min_similarity=settings.unknown_min_similarity,
        )
        judged = [q for q in dataset.queries if any(g > 0 for g in dataset.qrels.get(q, {}).values())]
        vectors = embedder.embed([dataset.queries[q] for q in judged])
        extra = fusion_methods(fusion_grid)
        reranked = (RERANKED,) if reranker else ()
        scores: dict[str, MethodScores] = {m: MethodScores() for m in (*METHODS, *extra, PIPELINE, *reranked)}
        rerank_ms: list[float] = []
        for qid, dense in zip(judged, vectors, strict=True):
            text, rel = dataset.queries[qid], dataset.qrels[qid]
            kind = str(dataset.query_meta.get(qid, {}).get("kind", "all"))
            sparse = lexical.query_vector(text)
            lists: dict[str, list[tuple[str, float]]] = {}
            similarity: dict[str, float] = {}
            for method in METHODS:
                hits = store.search(dense, sparse, method=method, limit=100, prefetch_limit=100, with_dense=bool(extra))
                lists[method] = [(h.product.id, h.score) for h in hits]
                similarity.update({h.product.id: float(np.dot(dense, h.dense)) for h in hits if h.dense is not None})
                _score(scores[method], [h.product.id for h in hits], rel, kind)
            if extra:
                for w in DENSE_WEIGHTS:
                    fused = weighted_dbsf(lists["dense"], lists["sparse"], w)
                    _score(scores[f"dbsf w={w:.1f}"], fused, rel, kind)
                _score(scores[SPARSE_FIRST], sparse_first(lists["sparse"], lists["dense"], similarity), rel, kind)
            result = retriever.retrieve(text, top_k=100)
            _score(scores[PIPELINE], [h.product.id for h in result.hits], rel, kind)
            if reranker:
                started = time.perf_counter()
                top = reranker.rerank(text, result.hits[:RERANK_TOP]) + result.hits[RERANK_TOP:]
                rerank_ms.append((time.perf_counter() - started) * 1000)
                _score(scores[RERANKED], [h.product.id for h in top], rel, kind)
        unknown = [
            unknown_case(retriever, dataset.queries[q], bool(meta["unknown"]), judged_name(dataset, q))
            for q, meta in dataset.query_meta.items()
            if "unknown" in meta
        ]
    finally:
        close()
    return {
        "dataset": dataset.name,
        "products": len(dataset.products),
        "judged_queries": len(judged),
        "ingest": report,
        "scores": scores,
        "unknown": unknown,
        "rerank_ms": rerank_ms,
    }


def _score(target: MethodScores, ranked: list[str], rel: dict[str, int], kind: str) -> None:
    target.ndcg10.append(ndcg_at(ranked, rel, 10))
    target.recall10.append(recall_at(ranked, rel, 10))
    target.recall100.append(recall_at(ranked, rel, 100))
    target.mrr10.append(mrr_at(ranked, rel, 10))
    target.by_kind.setdefault(kind, []).append(target.ndcg10[-1])


def _fmt_ci(values: list[float], resamples: int) -> str:
    low, high = bootstrap_ci(values, resamples)
    return f"{statistics.fmean(values):.3f} [{low:.3f}, {high:.3f}]" if values else "-"


def quality_table(result: dict[str, Any], resamples: int) -> str:
    """Markdown: one row per method, mean and 95% bootstrap interval of each metric."""
    head = (
        f"Quality on {result['dataset']} ({result['products']} products, {result['judged_queries']} "
        "judged queries; mean [95% bootstrap CI])"
    )
    lines = [head, "", "| method | nDCG@10 | Recall@10 | Recall@100 | MRR@10 |", "|---|---|---|---|---|"]
    for method, s in result["scores"].items():
        lines.append(
            f"| {method} | {_fmt_ci(s.ndcg10, resamples)} | {_fmt_ci(s.recall10, resamples)} | "
            f"{_fmt_ci(s.recall100, resamples)} | {_fmt_ci(s.mrr10, resamples)} |"
        )
    kinds = sorted(next(iter(result["scores"].values())).by_kind)
    if len(kinds) > 1:
        lines += [
            "",
            "nDCG@10 by query kind",
            "",
            "| method | " + " | ".join(kinds) + " |",
            "|---" * (len(kinds) + 1) + "|",
        ]
        for method, s in result["scores"].items():
            cells = " | ".join(f"{statistics.fmean(s.by_kind[k]):.3f}" for k in kinds)
            lines.append(f"| {method} | {cells} |")
    return "\n".join(lines)


def run_bench(args: argparse.Namespace, settings: RetrievalSettings) -> int:
    """`lorag bench retrieval` with its options and the retrieval settings they override."""
    embedder = Embedder.from_settings(settings)
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": embedder.name,
        "fusion": settings.fusion,
        "store": settings.store,
    }
    reranker = Reranker(args.reranker) if args.reranker else None
    catalog = demo_catalog()
    queries = labelled_queries(catalog, seed=args.query_seed)
    if args.write_demo_beir:
        write_beir(queries, catalog, args.write_demo_beir)
        print(f"wrote the demo query set in BEIR layout to {args.write_demo_beir}")
    with tempfile.TemporaryDirectory(prefix="lorag-bench-") as tmp:
        root = Path(tmp)
        sets: list[Path] = list(args.beir)
        if not args.no_demo:
            sets.insert(0, write_beir(queries, catalog, root / "lorag-demo"))
        if args.wands:
            sets.append(wands_to_beir(args.wands, root / "wands"))
        for n, esci in enumerate(args.esci):
            name = f"esci{n}-{esci.parent.name}"
            sets.append(esci_to_beir(esci, root / name))
            if args.esci_halves:
                sets += [esci_to_beir(esci, root / f"{name}-half{h}", half=h) for h in (0, 1)]
        for i, path in enumerate(sets):
            dataset = load_beir(path)
            if args.fields != "all":
                dataset.products = field_variant(dataset.products, args.fields)
                dataset.name += f" (fields: {args.fields})"
            result = evaluate(
                dataset,
                embedder,
                settings,
                root / f"store-{i}",
                settings.store,
                fusion_grid=args.fusion_grid,
                reranker=reranker,
            )
            print(quality_table(result, args.bootstrap), end="\n\n")
            if result["rerank_ms"]:
                cost = _ms(result["rerank_ms"])
                print(f"reranker, top {RERANK_TOP} of a question: {cost['p50_ms']:.1f} / {cost['p99_ms']:.1f} ms "
                      "p50 / p99", end="\n\n")  # fmt: skip
            table = unknown_table(result["unknown"], settings.unknown_min_similarity)
            if table:
                print(table, end="\n\n")
            out[f"quality:{result['dataset']}"] = _jsonable(result)
        if args.latency or args.ingest:
            out.update(load_runs(args, settings, embedder, root, catalog, [q.text for q in queries]))
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2, default=str))
    return 0


def _jsonable(result: dict[str, Any]) -> dict[str, Any]:
    scores = {
        m: {
            "ndcg10": statistics.fmean(s.ndcg10),
            "recall10": statistics.fmean(s.recall10),
            "recall100": statistics.fmean(s.recall100),
            "mrr10": statistics.fmean(s.mrr10),
            "by_kind": {k: statistics.fmean(v) for k, v in s.by_kind.items()},
        }
        for m, s in result["scores"].items()
        if s.ndcg10
    }
    return {
        "products": result["products"],
        "judged_queries": result["judged_queries"],
        "ingest": result["ingest"].summary(),
        "scores": scores,
        "unknown": [c.__dict__ for c in result["unknown"]],
        **({"rerank_ms": _ms(result["rerank_ms"])} if result["rerank_ms"] else {}),
    }


def _ms(times: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99)}
