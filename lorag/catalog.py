"""`lorag catalog ingest|search|distill-embedder|distill-reranker`; heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from retrieval.settings import RetrievalSettings

MAX_ERRORS_SHOWN = 20
# Options that override the retrieval settings of the same name.
STORE_OPTIONS = ("qdrant_path", "qdrant_url", "store", "collection", "embedding_model", "fusion", "embedding_threads")


def settings_from(args: argparse.Namespace) -> RetrievalSettings:
    """Retrieval settings: the environment and .env, overridden by the store options given on the command line."""
    return RetrievalSettings.from_options(**{name: getattr(args, name, None) for name in STORE_OPTIONS})


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def _ingest(args: argparse.Namespace) -> int:
    from retrieval.embedder import Embedder
    from retrieval.ingest import ingest
    from retrieval.loaders import PRESETS, load_mapping, read_catalog
    from retrieval.snapshots import publish
    from retrieval.store import open_store

    settings = settings_from(args)
    mapping = PRESETS[args.preset] if args.preset else load_mapping(args.mapping) if args.mapping else None
    if not args.path.is_file():
        print(f"no such file: {args.path}", file=sys.stderr)
        return 2
    embedder = Embedder.from_settings(settings)
    store, close = open_store(settings, write=True)
    generation = None
    try:
        report = ingest(
            read_catalog(args.path, mapping),
            store,
            embedder,
            prune=args.prune,
            tenant=args.tenant,
            batch_size=args.batch_size,
            recreate=args.recreate,
            progress=not args.quiet,
            total=_count_lines(args.path),
        )
        if not settings.qdrant_url and settings.store == "qdrant":
            # Published while the writer's lock is held: gateway workers switch to it (retrieval.snapshots).
            generation = publish(settings.qdrant_path)
    finally:
        close()
    for error in report.errors[:MAX_ERRORS_SHOWN]:
        print(f"{args.path}:{error}", file=sys.stderr)
    if report.rejected > MAX_ERRORS_SHOWN:
        print(f"... and {report.rejected - MAX_ERRORS_SHOWN} more rejected rows", file=sys.stderr)
    print(report.summary())
    if generation is not None:
        print(f"published catalog snapshot {generation} in {settings.qdrant_path}")
    return 1 if report.rejected else 0


def _search(args: argparse.Namespace) -> int:
    from retrieval.embedder import Embedder
    from retrieval.facts import format_price, format_stock, render_facts
    from retrieval.filters import SearchFilters
    from retrieval.retriever import Retriever
    from retrieval.store import open_store

    settings = settings_from(args)
    filters = SearchFilters(
        category=args.category,
        min_price=args.min_price,
        max_price=args.max_price,
        in_stock=args.in_stock,
        tenant=args.tenant,
    )
    embedder = Embedder.from_settings(settings)
    store, close = open_store(settings)
    try:
        retriever = Retriever.from_settings(settings, store, embedder)
        if not retriever.store.exists():
            print(
                f"no catalog in collection {settings.collection!r}: run `lorag catalog ingest` first", file=sys.stderr
            )
            return 2
        result = retriever.retrieve(args.query, top_k=args.top_k, filters=filters)
    finally:
        close()
    if args.json:
        print(
            json.dumps(
                {
                    "unknown": result.unknown,
                    "reason": result.reason,
                    "hits": [
                        {
                            "id": h.product.id,
                            "score": h.score,
                            "similarity": h.similarity,
                            "product": h.product.model_dump(mode="json"),
                        }
                        for h in result.hits
                    ],
                },
                indent=2,
            )
        )
        return 0
    if args.facts:
        print(render_facts(result.products, unknown=result.unknown))
        return 0
    for rank, hit in enumerate(result.hits, start=1):
        p = hit.product
        similarity = f"{hit.similarity:.3f}" if hit.similarity is not None else "-"
        print(
            f"{rank}. {p.id:<12} {p.name} | {p.category or '-'} | {format_price(p.price, p.currency)} | "
            f"{format_stock(p.stock)} | score {hit.score:.3f} cos {similarity}"
        )
    applied = result.filters.model_dump(exclude_none=True) if result.filters else {}
    if applied:
        print(f"filters: {', '.join(f'{k}={v}' for k, v in applied.items())}")
    print(f"unknown: yes ({result.reason})" if result.unknown else "unknown: no")
    return 0


def _distill(args: argparse.Namespace) -> int:
    from retrieval.embedder import distill_static

    out = distill_static(args.out, source=args.source, dims=args.dims)
    print(f"static embedding model written to {out}; use it with LORAG_EMBEDDING_MODEL={out}")
    return 0


def _distill_reranker(args: argparse.Namespace) -> int:
    from retrieval.rerank import distill_reranker

    seeds = [int(s) for s in args.seeds.split(",")]
    report = distill_reranker(
        args.out, seeds=seeds, layers=args.layers, epochs=args.epochs, max_length=args.max_length, lr=args.lr
    )
    print(
        f"reranker written to {report.out}: {report.layers} layers, {report.parameters:,} parameters, "
        f"{report.pairs} pairs ({report.positives} positive), {report.steps} steps in {report.seconds:.0f} s"
    )
    return 0


def reporting_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Store and model failures become one line on stderr and exit status 2, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        from retrieval.embedder import EmbedderError
        from retrieval.store import StoreError

        try:
            return handler(args)
        except (StoreError, EmbedderError) as exc:
            print(f"lorag: {exc}", file=sys.stderr)
            return 2

    return run


def store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--qdrant-path", type=Path, help="local-mode store directory (LORAG_QDRANT_PATH)")
    parser.add_argument("--qdrant-url", help="Qdrant server URL (LORAG_QDRANT_URL)")
    parser.add_argument("--store", choices=["qdrant", "edge"], help="embedded store (LORAG_STORE)")
    parser.add_argument("--collection", help="collection name (LORAG_COLLECTION)")
    parser.add_argument("--embedding-model", help="model name or directory (LORAG_EMBEDDING_MODEL)")
    parser.add_argument("--embedding-threads", type=int, help="torch CPU threads (LORAG_EMBEDDING_THREADS)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `catalog ingest|search|distill-embedder|distill-reranker` to the lorag command line."""
    catalog = sub.add_parser("catalog", help="load and search the product catalog").add_subparsers(
        dest="catalog_command", required=True
    )
    ing = catalog.add_parser("ingest", help="load a JSONL or CSV catalog into Qdrant")
    ing.add_argument("path", type=Path)
    ing.add_argument("--mapping", type=Path, help="CSV column mapping (YAML/JSON; see retrieval/loaders.py)")
    ing.add_argument("--preset", choices=["wands"], help="a built-in column mapping")
    ing.add_argument("--prune", action="store_true", help="delete stored products absent from the file")
    ing.add_argument("--tenant", help="tenant for rows without one; scopes --prune to it")
    ing.add_argument("--recreate", action="store_true", help="drop and rebuild the collection")
    ing.add_argument("--batch-size", type=int, default=256, help="products embedded and written per batch")
    ing.add_argument("--quiet", action="store_true", help="no progress bar")
    store_args(ing)
    ing.set_defaults(func=reporting_errors(_ingest))

    search = catalog.add_parser("search", help="hybrid search: the facts the gateway would inject")
    search.add_argument("query")
    search.add_argument("--top-k", type=int, default=4)
    search.add_argument("--category")
    search.add_argument("--min-price", type=Decimal)
    search.add_argument("--max-price", type=Decimal)
    stock = search.add_mutually_exclusive_group()
    stock.add_argument("--in-stock", dest="in_stock", action="store_const", const=True)
    stock.add_argument("--out-of-stock", dest="in_stock", action="store_const", const=False)
    search.add_argument("--tenant")
    search.add_argument("--fusion", choices=["rrf", "dbsf"])
    search.add_argument("--facts", action="store_true", help="print the facts block as the model sees it")
    search.add_argument("--json", action="store_true")
    store_args(search)
    search.set_defaults(func=reporting_errors(_search))

    distill = catalog.add_parser(
        "distill-embedder", help="distil the embedding model into a static one (much faster queries on CPU)"
    )
    distill.add_argument("--out", type=Path, default=Path("build/embedder/minilm-static"))
    distill.add_argument("--source", default="all-MiniLM-L6-v2", help="model name or directory to distil")
    distill.add_argument("--dims", type=int, default=256, help="vector size after PCA")
    distill.set_defaults(func=reporting_errors(_distill))

    rerank = catalog.add_parser(
        "distill-reranker", help="train a small cross-encoder reranker from MiniLM on generated training-pool data"
    )
    rerank.add_argument("--out", type=Path, default=Path("build/reranker/minilm-l1"))
    rerank.add_argument("--layers", type=int, default=1, help="MiniLM layers kept (cost grows with them)")
    rerank.add_argument("--epochs", type=int, default=4)
    rerank.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (linear decay after warm-up)")
    rerank.add_argument("--max-length", type=int, default=32, help="word pieces per (question, product) pair")
    rerank.add_argument("--seeds", default="101,102,103", help="one generated training catalog per seed")
    rerank.set_defaults(func=reporting_errors(_distill_reranker))
