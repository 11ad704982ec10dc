"""The catalog in Qdrant Edge (the `qdrant-edge-py` package, beta): Qdrant's engine in-process, no server.

An experimental alternative to qdrant-client's local mode, which scans every point in Python on each query.
Same points, payload, named vectors and query plans as the qdrant-client store (all from store_base), so ingest
and the retriever use it unchanged. Optional: the package is imported only when this store is built.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrieval import filters as keys
from retrieval.store_base import (
    DENSE,
    PAYLOAD_INDEXES,
    PRODUCT,
    SPARSE,
    AnyOf,
    Condition,
    Equals,
    IndexType,
    PointData,
    QueryPlan,
    Record,
    Scored,
    StoreBase,
    StoreError,
    point_id,
    point_payload,
)

RRF_K = 2  # qdrant-client's and Qdrant's default ranking constant, so both stores fuse alike
# The in-stock filter reads the product's stock count (see _condition), so Edge indexes it too.
STOCK = f"{PRODUCT}.stock"
_INDEXES: dict[str, IndexType] = {**PAYLOAD_INDEXES, STOCK: "integer"}


def _edge() -> Any:
    # Imported by name: the package is optional and absent from the type-checked environment.
    try:
        return importlib.import_module("qdrant_edge")
    except ImportError as exc:
        raise StoreError("the edge store needs the qdrant-edge-py package (pip install qdrant-edge-py)") from exc


class EdgeCatalogStore(StoreBase):
    """CatalogIndex over a Qdrant Edge shard in a directory."""

    engine = "Qdrant Edge"

    def __init__(self, path: Path, collection: str = "catalog") -> None:
        self.path = path / collection
        self.collection = collection
        self.qe = _edge()
        self.shard: Any = self._call("load", self.qe.EdgeShard.load, str(self.path)) if self.exists() else None

    @property
    def local(self) -> bool:
        """Always in-process."""
        return True

    def _is_failure(self, exc: Exception) -> bool:
        # qdrant-edge-py 0.9 raises its engine's errors (wrong vector size, unknown vector, a closed shard, a
        # locked or damaged directory) as plain Exception, and input it cannot parse (a bad point id) as
        # ValueError; subclasses of Exception other than those are bugs of the caller, not store failures.
        return type(exc) is Exception or isinstance(exc, (ValueError, OSError))

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
        self.shard = self._call("create", qe.EdgeShard.create, str(self.path), config)
        schemas = {
            "keyword": qe.PayloadSchemaType.Keyword,
            "tenant": qe.PayloadSchemaType.Keyword,  # Edge is one shard: nothing to co-locate
            "float": qe.PayloadSchemaType.Float,
            "bool": qe.PayloadSchemaType.Bool,
            "integer": qe.PayloadSchemaType.Integer,
        }
        for field, kind in _INDEXES.items():
            operation = qe.UpdateOperation.create_field_index(field, schemas[kind])
            self._call("create payload index", self.shard.update, operation)

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
        self._call("optimize", self._shard().optimize)
        self._call("flush", self._shard().flush)

    def count(self) -> int:
        """Points in the shard."""
        return int(self._call("count", self._shard().count, self.qe.CountRequest(exact=True)))

    def index_hashes(self) -> dict[str, str]:
        """Point id -> stored index hash (none before the shard exists)."""
        return {} if self.shard is None else super().index_hashes()

    def upsert(self, points: Sequence[PointData]) -> None:
        """Write points whole."""
        qe = self.qe

        def write() -> None:
            edge_points = [
                qe.Point(
                    id=point_id(p.product),
                    vector={DENSE: p.dense.tolist(), SPARSE: qe.SparseVector(p.sparse[0], p.sparse[1])},
                    payload=point_payload(p.product, p.index_hash),
                )
                for p in points
            ]
            self._shard().update(qe.UpdateOperation.upsert_points(edge_points))

        self._call("upsert", write)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id."""
        if ids:
            self._call("delete", self._shard().update, self.qe.UpdateOperation.delete_points(list(ids)))

    def _condition(self, condition: Condition) -> Any:
        qe = self.qe
        if isinstance(condition, Equals) and condition.field == keys.IN_STOCK:
            # qdrant-edge-py 0.9 turns MatchValue(True) into the integer 1, which never equals the stored
            # boolean; the product's stock count says the same thing.
            stock = qe.RangeFloat(gte=1.0) if condition.value else qe.RangeFloat(lte=0.0)
            return qe.FieldCondition(STOCK, range=stock)
        if isinstance(condition, Equals):
            return qe.FieldCondition(condition.field, match=qe.MatchValue(condition.value))
        if isinstance(condition, AnyOf):
            return qe.FieldCondition(condition.field, match=qe.MatchAny(list(condition.values)))
        return qe.FieldCondition(condition.field, range=qe.RangeFloat(gte=condition.gte, lte=condition.lte))

    def _filter(self, conditions: Sequence[Condition]) -> Any:
        return self.qe.Filter(must=[self._condition(c) for c in conditions]) if conditions else None

    def _query(self, plan: QueryPlan) -> list[Scored]:
        qe = self.qe
        edge_filter = self._filter(plan.conditions)
        queries = {
            DENSE: qe.Query.Nearest(plan.dense, using=DENSE),
            SPARSE: qe.Query.Nearest(qe.SparseVector(plan.sparse[0], plan.sparse[1]), using=SPARSE),
        }
        common: dict[str, Any] = {
            "limit": plan.limit,
            "filter": edge_filter,
            "with_payload": [PRODUCT],
            "with_vector": [DENSE] if plan.with_dense else False,
        }
        if plan.fusion is None:
            request = qe.QueryRequest(query=queries[plan.vectors[0]], **common)
        else:
            request = qe.QueryRequest(
                query=qe.Fusion.Rrf(k=RRF_K) if plan.fusion == "rrf" else qe.Fusion.Dbsf(),
                prefetches=[
                    qe.Prefetch(limit=plan.prefetch_limit, query=queries[name], filter=edge_filter)
                    for name in plan.vectors
                ],
                **common,
            )
        return [(point.payload, point.score, point.vector) for point in self._shard().query(request)]

    def _scroll(
        self, fields: list[str], conditions: tuple[Condition, ...], limit: int, offset: Any
    ) -> tuple[list[Record], Any]:
        request = self.qe.ScrollRequest(
            offset=offset, limit=limit, filter=self._filter(conditions), with_payload=fields, with_vector=False
        )
        records, offset = self._shard().scroll(request)
        return [(str(r.id), r.payload or {}) for r in records], offset

    def close(self) -> None:
        """Flush and close the shard."""
        if self.shard is not None:
            shard, self.shard = self.shard, None
            try:
                self._call("flush", shard.flush)
            finally:
                self._call("close", shard.close)
