"""The catalog in Qdrant Edge (the `qdrant-edge-py` package, beta): Qdrant's engine in-process, no server.

An experimental alternative to qdrant-client's local mode, which scans every point in Python on each query.
Same points, payload, named vectors (dense cosine, sparse with IDF) and Query API fusion as CatalogStore, so
ingest and the retriever use it unchanged. Optional: the package is imported only when this store is built.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval import filters as keys
from retrieval.catalog import Product
from retrieval.embedder import Vectors
from retrieval.store import (
    DENSE,
    INDEX_HASH,
    PRODUCT,
    SPARSE,
    Method,
    PointData,
    StoredHit,
    StoreError,
    point_id,
    point_payload,
)

RRF_K = 2  # qdrant-client's and Qdrant's default ranking constant, so both stores fuse alike


def _edge() -> Any:
    # Imported by name: the package is optional and absent from the type-checked environment.
    try:
        return importlib.import_module("qdrant_edge")
    except ImportError as exc:
        raise StoreError("the edge store needs the qdrant-edge-py package (pip install qdrant-edge-py)") from exc


class EdgeCatalogStore:
    """CatalogIndex over a Qdrant Edge shard in a directory."""

    def __init__(self, path: Path, collection: str = "catalog") -> None:
        self.path = path / collection
        self.collection = collection
        self.qe = _edge()
        self.shard: Any = self.qe.EdgeShard.load(str(self.path)) if self.exists() else None

    @property
    def local(self) -> bool:
        """Always in-process."""
        return True

    def exists(self) -> bool:
        """Whether the shard directory holds a shard."""
        return self.path.is_dir() and any(self.path.iterdir())

    def ensure_collection(self, dimension: int, *, recreate: bool = False) -> None:
        """Create the shard and its payload indexes unless present."""
        qe = self.qe
        if recreate and self.exists():
            self.close()
            shutil.rmtree(self.path)
        if self.shard is not None:
            return
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        self.path.mkdir(parents=True, exist_ok=True)
        self.shard = qe.EdgeShard.create(str(self.path), config)
        schemas = {
            keys.CATEGORY: qe.PayloadSchemaType.Keyword,
            keys.PRICE: qe.PayloadSchemaType.Float,
            keys.IN_STOCK: qe.PayloadSchemaType.Bool,
            keys.TENANT: qe.PayloadSchemaType.Keyword,
            keys.CODES: qe.PayloadSchemaType.Keyword,
            keys.PRODUCT_ID: qe.PayloadSchemaType.Keyword,
            f"{PRODUCT}.stock": qe.PayloadSchemaType.Integer,  # the in-stock filter reads it (see _filter)
        }
        for field, schema in schemas.items():
            self.shard.update(qe.UpdateOperation.create_field_index(field, schema))

    def _shard(self) -> Any:
        if self.shard is None:
            raise StoreError(f"no edge shard at {self.path}: run `lorag catalog ingest` first")
        return self.shard

    def prepare_ingest(self) -> bool:
        """Nothing to prepare: the shard writes through its own WAL."""
        return False

    def finish_ingest(self) -> None:
        """Build the vector and payload indexes of freshly written segments, then flush (timed with the
        ingest: without it, searches scan every vector)."""
        self._shard().optimize()
        self._shard().flush()

    def count(self) -> int:
        """Points in the shard."""
        return int(self._shard().count(self.qe.CountRequest(exact=True)))

    def _scroll(self, fields: list[str], edge_filter: Any = None) -> Iterator[Any]:
        offset = None
        while True:
            records, offset = self._shard().scroll(
                self.qe.ScrollRequest(
                    offset=offset, limit=1024, filter=edge_filter, with_payload=fields, with_vector=False
                )
            )
            yield from records
            if offset is None:
                return

    def index_hashes(self) -> dict[str, str]:
        """Point id -> stored index hash."""
        if self.shard is None:
            return {}
        return {str(r.id): str((r.payload or {}).get(INDEX_HASH, "")) for r in self._scroll([INDEX_HASH])}

    def product_ids(self, tenant: str | None = None) -> Iterator[tuple[str, str]]:
        """(point id, product id) of all points, or of one tenant's."""
        edge_filter = self._filter(keys.SearchFilters(tenant=tenant)) if tenant else None
        for r in self._scroll([keys.PRODUCT_ID], edge_filter):
            yield str(r.id), str((r.payload or {}).get(keys.PRODUCT_ID, ""))

    def upsert(self, points: Sequence[PointData]) -> None:
        """Write points whole."""
        qe = self.qe
        edge_points = [
            qe.Point(
                id=point_id(p.product),
                vector={DENSE: p.dense.tolist(), SPARSE: qe.SparseVector(p.sparse[0], p.sparse[1])},
                payload=point_payload(p.product, p.index_hash),
            )
            for p in points
        ]
        self._shard().update(qe.UpdateOperation.upsert_points(edge_points))

    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id."""
        if ids:
            self._shard().update(self.qe.UpdateOperation.delete_points(list(ids)))

    def _filter(self, filters: keys.SearchFilters | None, *extra: Any) -> Any:
        qe = self.qe
        must: list[Any] = list(extra)
        if filters is not None:
            if filters.category is not None:
                must.append(qe.FieldCondition(keys.CATEGORY, match=qe.MatchValue(filters.category.lower())))
            if filters.min_price is not None or filters.max_price is not None:
                must.append(
                    qe.FieldCondition(
                        keys.PRICE,
                        range=qe.RangeFloat(
                            gte=float(filters.min_price) if filters.min_price is not None else None,
                            lte=float(filters.max_price) if filters.max_price is not None else None,
                        ),
                    )
                )
            if filters.in_stock is not None:
                # qdrant-edge-py 0.9 turns MatchValue(True) into the integer 1, which never equals the stored
                # boolean; the product's stock count says the same thing.
                stock = qe.RangeFloat(gte=1.0) if filters.in_stock else qe.RangeFloat(lte=0.0)
                must.append(qe.FieldCondition(f"{PRODUCT}.stock", range=stock))
            if filters.tenant is not None:
                must.append(qe.FieldCondition(keys.TENANT, match=qe.MatchValue(filters.tenant)))
        return qe.Filter(must=must) if must else None

    def search(
        self,
        dense: Vectors,
        sparse: tuple[list[int], list[float]],
        *,
        method: Method = "dbsf",
        limit: int = 4,
        prefetch_limit: int = 50,
        filters: keys.SearchFilters | None = None,
        with_dense: bool = False,
    ) -> list[StoredHit]:
        """The best `limit` products by one method: dense, sparse, or both fused (rrf, dbsf)."""
        qe = self.qe
        edge_filter = self._filter(filters)
        if method in ("rrf", "dbsf") and not sparse[0]:
            method = "dense"
        dense_query = qe.Query.Nearest(dense.tolist(), using=DENSE)
        sparse_query = qe.Query.Nearest(qe.SparseVector(sparse[0], sparse[1]), using=SPARSE)
        common: dict[str, Any] = {
            "limit": limit,
            "filter": edge_filter,
            "with_payload": [PRODUCT],
            "with_vector": [DENSE] if with_dense else False,
        }
        if method == "dense":
            request = qe.QueryRequest(query=dense_query, **common)
        elif method == "sparse":
            if not sparse[0]:
                return []
            request = qe.QueryRequest(query=sparse_query, **common)
        else:
            fusion = qe.Fusion.Rrf(k=RRF_K) if method == "rrf" else qe.Fusion.Dbsf()
            request = qe.QueryRequest(
                query=fusion,
                prefetches=[
                    qe.Prefetch(limit=prefetch_limit, query=dense_query, filter=edge_filter),
                    qe.Prefetch(limit=prefetch_limit, query=sparse_query, filter=edge_filter),
                ],
                **common,
            )
        hits = []
        for point in self._shard().query(request):
            vector = point.vector
            stored = None
            if isinstance(vector, dict) and DENSE in vector:
                stored = np.asarray(vector[DENSE], dtype=np.float32)
            hits.append(StoredHit(Product.model_validate((point.payload or {})[PRODUCT]), float(point.score), stored))
        return hits

    def find_codes(self, codes: Sequence[str], filters: keys.SearchFilters | None, limit: int) -> list[Product]:
        """Products whose SKU or model code is one of `codes`."""
        by_code = self.qe.FieldCondition(keys.CODES, match=self.qe.MatchAny(list(codes)))
        records, _ = self._shard().scroll(
            self.qe.ScrollRequest(
                limit=limit, filter=self._filter(filters, by_code), with_payload=[PRODUCT], with_vector=False
            )
        )
        return [Product.model_validate((r.payload or {})[PRODUCT]) for r in records]

    def close(self) -> None:
        """Flush and close the shard."""
        if self.shard is not None:
            self.shard.flush()
            self.shard.close()
            self.shard = None
