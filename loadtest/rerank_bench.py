"""A cross-encoder reranker (retrieval.rerank) over the full retrieve path, measured on three sets, and its cost.

    python -m loadtest.rerank_bench --reranker build/reranker/minilm-l2 --out results/2026-12-02-reranker

Sets: the demo labelled queries (seed 20, over the demo catalog), the ESCI sample and the ESCI held-out extract
(retrieval/esci.py), each in a fresh temporary local store. Per judged query, Retriever.retrieve gives the top
`--candidates` (20); nDCG@10 and Recall@10 are scored (retrieval.scores, as retrieval/bench.py does) for:

- retrieve: the retriever's own order;
- rerank top 10: the cross-encoder reorders the first 10 (what the gateway fetches; Recall@10 cannot change);
- rerank top 20: the cross-encoder reorders all 20 candidates;
- rerank top 20 + RRF: reciprocal-rank fusion of the retriever's and the cross-encoder's orders of the 20, which
  keeps some of the retriever's signals (code and name promotion, lexical matches) the cross-encoder may lack.

Cost: the cross-encoder's forward pass over 10 and 20 candidates of one question, on one CPU thread
(torch.set_num_threads(1)), p50 and p99 over the sets' questions. Everything runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrieval.beir import Dataset, load_beir
from retrieval.catalog import Product
from retrieval.demo_catalog import demo_catalog
from retrieval.embedder import DEFAULT_MODEL, Embedder, resolve_model
from retrieval.esci import HELDOUT, SAMPLE, esci_to_beir
from retrieval.queries import labelled_queries, write_beir
from retrieval.rerank import Reranker, cross_encoder, rerank_text, retriever_over
from retrieval.retriever import Hit
from retrieval.scores import ndcg_at, percentile, recall_at

METHODS = ("retrieve", "rerank top 10", "rerank top 20", "rerank top 20 + RRF")
RRF_K = 60  # the usual constant: ranks 1 and 2 differ little, so neither list alone decides


def rrf(first: Sequence[str], second: Sequence[str], k: int = RRF_K) -> list[str]:
    """Ids of both orders fused by reciprocal rank (ties: the first order's)."""
    score: dict[str, float] = {}
    for ranked in (first, second):
        for rank, doc in enumerate(ranked):
            score[doc] = score.get(doc, 0.0) + 1 / (k + rank + 1)
    return sorted(first, key=lambda d: -score[d])


def ids(hits: list[Hit]) -> list[str]:
    return [h.product.id for h in hits]


def datasets(root: Path) -> list[tuple[str, Dataset]]:
    """The three measured sets, written under `root` in BEIR layout and read back as retrieval/bench.py does."""
    catalog = demo_catalog()
    demo = load_beir(write_beir(labelled_queries(catalog, seed=20), catalog, root / "lorag-demo"))
    sample = load_beir(esci_to_beir(SAMPLE, root / "esci-sample"))
    heldout = load_beir(esci_to_beir(HELDOUT, root / "esci-heldout"))
    return [("demo", demo), ("ESCI sample", sample), ("ESCI held-out", heldout)]


def evaluate(dataset: Dataset, embedder: Embedder, reranker: Reranker, candidates: int) -> dict[str, Any]:
    """Mean nDCG@10 and Recall@10 per method, and the cost samples (ms per question at 10 and 20 candidates)."""
    judged = [q for q in dataset.queries if any(g > 0 for g in dataset.qrels.get(q, {}).values())]
    values: dict[str, dict[str, list[float]]] = {m: {"ndcg10": [], "recall10": []} for m in METHODS}
    cost: dict[int, list[float]] = {10: [], 20: []}
    with retriever_over(dataset.products, embedder) as retriever:
        for qid in judged:
            text, rel = dataset.queries[qid], dataset.qrels[qid]
            hits = retriever.retrieve(text, top_k=candidates).hits
            base = [h.product.id for h in hits]

            top10 = ids(reranker.rerank(text, hits[:10])) + base[10:]
            top20 = ids(reranker.rerank(text, hits))
            ranked = {METHODS[0]: base, METHODS[1]: top10, METHODS[2]: top20, METHODS[3]: rrf(base, top20)}
            for method, order in ranked.items():
                values[method]["ndcg10"].append(ndcg_at(order, rel, 10))
                values[method]["recall10"].append(recall_at(order, rel, 10))
            for n in cost:
                if len(hits) >= n:
                    products = [h.product for h in hits[:n]]
                    start = time.perf_counter()
                    reranker.scores(text, products)
                    cost[n].append((time.perf_counter() - start) * 1000)
    return {
        "products": len(dataset.products),
        "judged_queries": len(judged),
        "scores": {m: {k: statistics.fmean(v) for k, v in s.items()} for m, s in values.items()},
        "cost_ms": cost,
    }


def cost_sweep(texts: list[tuple[str, list[Product]]], layers: Sequence[int], lengths: Sequence[int]) -> str:
    """Markdown: the cost per question (p50 ms, one thread) of a MiniLM cross-encoder cut to each number of layers
    and pair length, at 10 and 20 candidates; the weights do not change the cost, so the untrained model stands in.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    path = resolve_model(DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    lines = ["| layers | max word pieces | 10 candidates p50 / p99 | 20 candidates p50 / p99 |", "|---|---|---|---|"]
    for n_layers in layers:
        encoder = AutoModel.from_pretrained(
            path, num_hidden_layers=n_layers, add_pooling_layer=False, local_files_only=True
        )
        model = cross_encoder(encoder).eval()
        for length in lengths:
            cells = []
            for n in (10, 20):
                times = []
                for query, products in texts:
                    batch = tokenizer(
                        [query] * n,
                        [rerank_text(p) for p in products[:n]],
                        truncation="only_second",
                        max_length=length,
                        padding=True,
                        return_tensors="pt",
                    )
                    with torch.inference_mode():
                        start = time.perf_counter()
                        model(**batch)
                        times.append((time.perf_counter() - start) * 1000)
                cells.append(f"{percentile(times, 50):.1f} / {percentile(times, 99):.1f}")
            lines.append(f"| {n_layers} | {length} | {cells[0]} | {cells[1]} |")
            print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def table(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """Markdown: method x set (nDCG@10 / Recall@10), then the cost per question."""
    sets = list(results)
    lines = [
        f"Cross-encoder reranker {meta['reranker']}{' (int8)' if meta['int8'] else ''} ({meta['layers']} layers, "
        f"{meta['parameters']:,} parameters, "
        f"max {meta['max_length']} word pieces) over Retriever.retrieve's top {meta['candidates']}",
        "",
        "nDCG@10 / Recall@10 ("
        + "; ".join(f"{s}: {r['judged_queries']} judged queries" for s, r in results.items())
        + ")",
        "",
        "| method | " + " | ".join(sets) + " |",
        "|---" * (len(sets) + 1) + "|",
    ]
    for m in METHODS:
        cells = [f"{results[s]['scores'][m]['ndcg10']:.3f} / {results[s]['scores'][m]['recall10']:.3f}" for s in sets]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Cross-encoder cost per question, one CPU thread (ms, p50 / p99 over the questions of all sets)",
        "",
        "| candidates | p50 | p99 | questions |",
        "|---|---|---|---|",
    ]
    for n, samples in meta["cost_ms"].items():
        lines.append(f"| {n} | {percentile(samples, 50):.1f} | {percentile(samples, 99):.1f} | {len(samples)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reranker", type=Path, help="a directory written by distill-reranker")
    parser.add_argument(
        "--sweep", action="store_true", help="instead: the cost of each layers x length on the sets' candidates"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for results.md and results.json")
    parser.add_argument("--int8", action="store_true", help="the reranker's Linear layers quantised to int8")
    parser.add_argument("--candidates", type=int, default=20, help="top_k asked of Retriever.retrieve")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # the cost is per CPU thread; quality does not depend on it
    embedder = Embedder(batching=False)
    if args.sweep:
        return _sweep(args, embedder)
    if args.reranker is None:
        parser.error("--reranker is required (or --sweep)")
    reranker = Reranker(args.reranker, int8=args.int8)
    config = json.loads((args.reranker / "rerank.json").read_text())
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="lorag-rerank-bench-") as tmp:
        for name, dataset in datasets(Path(tmp)):
            results[name] = evaluate(dataset, embedder, reranker, args.candidates)
            print(name, json.dumps(results[name]["scores"]), flush=True)
    cost = {n: [x for r in results.values() for x in r["cost_ms"][n]] for n in (10, 20)}
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "reranker": str(args.reranker),
        "layers": config.get("layers"),
        "max_length": config.get("max_length"),
        "parameters": reranker.parameters,
        "candidates": args.candidates,
        "int8": args.int8,
        "cpu": platform.processor() or platform.machine(),
        "cost_ms": cost,
    }
    text = table(results, meta)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text)
    summary = {
        **{k: v for k, v in meta.items() if k != "cost_ms"},
        "cost_ms": {n: {"p50": percentile(v, 50), "p99": percentile(v, 99), "n": len(v)} for n, v in cost.items()},
        "sets": {s: {k: v for k, v in r.items() if k != "cost_ms"} for s, r in results.items()},
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def _sweep(args: argparse.Namespace, embedder: Embedder) -> int:
    """The cost sweep over 30 questions of each set, each with its retrieved top 20."""
    texts: list[tuple[str, list[Product]]] = []
    with tempfile.TemporaryDirectory(prefix="lorag-rerank-sweep-") as tmp:
        for _, dataset in datasets(Path(tmp)):
            judged = [q for q in dataset.queries if any(g > 0 for g in dataset.qrels.get(q, {}).values())][:30]
            with retriever_over(dataset.products, embedder) as retriever:
                for qid in judged:
                    hits = retriever.retrieve(dataset.queries[qid], top_k=20).hits
                    if len(hits) == 20:
                        texts.append((dataset.queries[qid], [h.product for h in hits]))
    head = f"Cross-encoder cost per question on one CPU thread, ms ({len(texts)} questions of the three sets)\n\n"
    text = head + cost_sweep(texts, (1, 2, 3), (32, 48, 64))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cost_sweep.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
