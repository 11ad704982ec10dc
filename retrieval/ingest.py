"""`lorag catalog ingest`: load a catalog file into the store, re-indexing only what changed.

Each product becomes one point whose id derives from its own id (uuid5), so a re-ingest overwrites rather than
duplicates. A stored hash of the product's content and of how it was indexed (model, text recipe) lets
unchanged products skip embedding entirely. Bad rows are reported with their line and kept out; the good rows
around them are written. Points are written whole, a batch at a time, so a failure leaves no half product.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from retrieval import lexical
from retrieval.catalog import Product, content_hash
from retrieval.documents import INDEX_VERSION, dense_text, lexical_text
from retrieval.embedder import Embedder
from retrieval.loaders import Row, RowError
from retrieval.settings import RetrievalSettings, StoreKind
from retrieval.store import CatalogIndex, PointData, open_store, point_id

DEFAULT_BATCH = 256


@dataclass
class IngestReport:
    """What an ingest did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    errors: list[RowError] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rejected(self) -> int:
        """Rows that did not become products."""
        return len(self.errors)

    @property
    def written(self) -> int:
        """Products embedded and written."""
        return self.added + self.updated

    def summary(self) -> str:
        """One line for the terminal."""
        rate = ""
        if self.seconds and self.written:
            rate = f", {self.written / self.seconds:.0f} products/s written"
        return (
            f"added {self.added}, updated {self.updated}, unchanged {self.unchanged}, "
            f"deleted {self.deleted}, rejected {self.rejected} in {self.seconds:.1f} s{rate}"
        )


def index_hash(product: Product, model: str) -> str:
    """Changes when the product or the way it is indexed changes."""
    return hashlib.sha256(f"{content_hash(product)}|{model}|{INDEX_VERSION}".encode()).hexdigest()


def points(products: list[Product], embedder: Embedder) -> list[PointData]:
    """Embed and tokenise products into complete points."""
    vectors = embedder.embed([dense_text(p) for p in products])
    return [
        PointData(p, vectors[i], lexical.document_vector(lexical_text(p), p.name), index_hash(p, embedder.name))
        for i, p in enumerate(products)
    ]


def ingest(
    rows: Iterable[Row | RowError],
    store: CatalogIndex,
    embedder: Embedder,
    *,
    prune: bool = False,
    tenant: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    recreate: bool = False,
    progress: bool = True,
    total: int | None = None,
) -> IngestReport:
    """Load rows into the store; `tenant` fills rows without one and scopes --prune to that tenant."""
    started = time.perf_counter()
    report = IngestReport()
    store.ensure_collection(embedder.dimension, recreate=recreate)
    store.prepare_ingest()
    stored = store.index_hashes()
    seen: dict[str, int] = {}  # point id -> line, to reject a repeated id instead of silently keeping one
    rejected_ids: set[str] = set()
    pending: list[Product] = []

    bar = tqdm(total=total, unit="row", desc="ingest", disable=not progress)
    with bar:
        for row in rows:
            bar.update(1)
            if isinstance(row, RowError):
                report.errors.append(row)
                if row.product_id:
                    rejected_ids.add(row.product_id)
                continue
            product = row.product
            if tenant is not None and product.tenant is None:
                product = product.model_copy(update={"tenant": tenant})
            pid = point_id(product)
            if pid in seen:
                first = seen[pid]
                message = f"field id: duplicate id {product.id!r} (first on line {first}, which is kept)"
                report.errors.append(RowError(row.line, message))
                continue
            seen[pid] = row.line
            if stored.get(pid) == index_hash(product, embedder.name):
                report.unchanged += 1
                continue
            pending.append(product)
            if len(pending) >= batch_size:
                _write(store, embedder, pending, stored, report)
        _write(store, embedder, pending, stored, report)
    if prune:
        # A product whose row was rejected this time stays: a typo in one row must not delete the product.
        stale = [
            pid for pid, product_id in store.product_ids(tenant) if pid not in seen and product_id not in rejected_ids
        ]
        store.delete(stale)
        report.deleted = len(stale)
    store.finish_ingest()
    report.seconds = time.perf_counter() - started
    return report


def _write(
    store: CatalogIndex, embedder: Embedder, pending: list[Product], stored: dict[str, str], report: IngestReport
) -> None:
    if not pending:
        return
    store.upsert(points(pending, embedder))
    for product in pending:
        if point_id(product) in stored:
            report.updated += 1
        else:
            report.added += 1
    pending.clear()


def filled_store(
    products: Sequence[Product], embedder: Embedder, root: Path, backend: StoreKind = "qdrant", progress: bool = False
) -> tuple[CatalogIndex, Callable[[], None], IngestReport]:
    """A fresh embedded store under `root` holding `products`, a function closing it, and the ingest report (what
    benchmarks and the reranker's training measure on, whatever LORAG_QDRANT_URL says)."""
    store, close = open_store(RetrievalSettings(qdrant_url=None, qdrant_path=root, store=backend))
    rows = (Row(i + 1, p) for i, p in enumerate(products))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Local mode is not recommended")
        report = ingest(rows, store, embedder, progress=progress, total=len(products))
    return store, close, report
