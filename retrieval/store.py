"""The Qdrant collection that holds the catalog: one point per product, two named vectors.

"dense" is the MiniLM embedding (cosine); "sparse" holds BM25-style term weights with `Modifier.IDF`, so
Qdrant computes IDF from the live collection. Each point's payload keeps the whole product (what the facts
block renders) next to flattened, indexed copies of the filterable fields.

Qdrant errors are translated here, once, into StoreError.
"""

from __future__ import annotations

import sqlite3
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from retrieval import filters as keys
from retrieval.catalog import Product
from retrieval.documents import product_codes
from retrieval.embedder import Vectors
from retrieval.settings import RetrievalSettings

if TYPE_CHECKING:
    from qdrant_client import QdrantClient, models

DENSE = "dense"
SPARSE = "sparse"
Method = Literal["dense", "sparse", "rrf", "dbsf"]
METHODS: tuple[Method, ...] = ("dense", "sparse", "rrf", "dbsf")

PRODUCT = "product"
INDEX_HASH = "index_hash"

# Point ids derive from (tenant, product id), so re-ingesting a product overwrites its point.
_POINT_NAMESPACE = uuid.UUID("5b0f6d2c-8f5e-4c43-9a8e-2f4c0f1d7a11")


class StoreError(RuntimeError):
    """The Qdrant store failed or holds a collection this code cannot use."""


def point_id(product: Product) -> str:
    """The deterministic point id of a product (uuid5 of tenant and product id)."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{product.tenant or ''}\x1f{product.id}"))


def build_client(settings: RetrievalSettings, *, check_compatibility: bool = True) -> QdrantClient:
    """A Qdrant client: the server at settings.qdrant_url, else local mode at settings.qdrant_path."""
    from qdrant_client import QdrantClient

    try:
        if settings.qdrant_url:
            key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
            return QdrantClient(url=settings.qdrant_url, api_key=key, check_compatibility=check_compatibility)
        settings.qdrant_path.mkdir(parents=True, exist_ok=True)
        return QdrantClient(path=str(settings.qdrant_path))
    except RuntimeError as exc:  # local mode: the directory is locked by another process
        raise StoreError(f"cannot open Qdrant store {settings.qdrant_path}: {exc}") from exc


def open_store(settings: RetrievalSettings) -> tuple[CatalogIndex, Callable[[], None]]:
    """The catalog store that settings name and the function that closes it (the caller owns both)."""
    if settings.store == "edge":
        if settings.qdrant_url:
            raise StoreError("LORAG_STORE=edge is an embedded store: unset LORAG_QDRANT_URL to use it")
        from retrieval.edge_store import EdgeCatalogStore

        settings.qdrant_path.mkdir(parents=True, exist_ok=True)
        edge = EdgeCatalogStore(settings.qdrant_path, settings.collection)
        return edge, edge.close
    client = build_client(settings)
    return CatalogStore(client, settings.collection), client.close


@dataclass(frozen=True)
class StoredHit:
    """A product found by a search, its score and (when asked for) its dense vector."""

    product: Product
    score: float
    dense: Vectors | None = None


@dataclass(frozen=True)
class PointData:
    """Everything one product's point holds; written whole, so no product is ever half-written."""

    product: Product
    dense: Vectors
    sparse: tuple[list[int], list[float]]
    index_hash: str


class CatalogIndex(Protocol):
    """What ingest and the retriever need from a store (CatalogStore here, EdgeCatalogStore in edge_store)."""

    collection: str

    @property
    def local(self) -> bool: ...
    def exists(self) -> bool: ...
    def ensure_collection(self, dimension: int, *, recreate: bool = False) -> None: ...
    def prepare_ingest(self) -> bool: ...
    def finish_ingest(self) -> None: ...
    def count(self) -> int: ...
    def index_hashes(self) -> dict[str, str]: ...
    def product_ids(self, tenant: str | None = None) -> Iterator[tuple[str, str]]: ...
    def upsert(self, points: Sequence[PointData]) -> None: ...
    def delete(self, ids: Sequence[str]) -> None: ...
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
    ) -> list[StoredHit]: ...
    def find_codes(self, codes: Sequence[str], filters: keys.SearchFilters | None, limit: int) -> list[Product]: ...


class CatalogStore:
    """Create, fill and query the catalog collection through qdrant-client (local mode or a server)."""

    def __init__(self, client: QdrantClient, collection: str = "catalog") -> None:
        self.client = client
        self.collection = collection

    @property
    def local(self) -> bool:
        """True in embedded local mode (brute force, payload indexes ignored)."""
        from qdrant_client.local.qdrant_local import QdrantLocal

        return isinstance(getattr(self.client, "_client", None), QdrantLocal)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        try:
            return fn(*args, **kwargs)
        except (UnexpectedResponse, ResponseHandlingException, ValueError, OSError) as exc:
            raise StoreError(f"Qdrant {what} on {self.collection!r} failed: {exc}") from exc

    def exists(self) -> bool:
        """Whether the collection exists."""
        return bool(self._call("lookup", self.client.collection_exists, self.collection))

    def ensure_collection(self, dimension: int, *, recreate: bool = False) -> None:
        """Create the collection and its payload indexes unless present; refuse one of another dimension."""
        from qdrant_client import models

        if recreate and self.exists():
            self._call("delete collection", self.client.delete_collection, self.collection)
        if self.exists():
            info = self._call("info", self.client.get_collection, self.collection)
            vectors = info.config.params.vectors
            size = vectors[DENSE].size if isinstance(vectors, dict) and DENSE in vectors else None
            if size != dimension:
                raise StoreError(
                    f"collection {self.collection!r} holds {DENSE} vectors of size {size}, the "
                    f"embedder makes {dimension}: ingest with --recreate to rebuild it"
                )
            return
        self._call(
            "create collection",
            self.client.create_collection,
            self.collection,
            vectors_config={DENSE: models.VectorParams(size=dimension, distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        # Indexes come before the points: a server builds them as points arrive instead of re-scanning.
        schemas: dict[str, models.PayloadSchemaType | models.KeywordIndexParams] = {
            keys.CATEGORY: models.PayloadSchemaType.KEYWORD,
            keys.PRICE: models.PayloadSchemaType.FLOAT,
            keys.IN_STOCK: models.PayloadSchemaType.BOOL,
            keys.TENANT: models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
            keys.CODES: models.PayloadSchemaType.KEYWORD,
            keys.PRODUCT_ID: models.PayloadSchemaType.KEYWORD,
        }
        with warnings.catch_warnings():
            # Local mode accepts payload indexes but ignores them (it scans) and says so in a UserWarning;
            # the same calls build real indexes on a server, which is why they are made in both modes.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
            for field, schema in schemas.items():
                self._call(
                    "create payload index",
                    self.client.create_payload_index,
                    self.collection,
                    field_name=field,
                    field_schema=schema,
                    wait=True,
                )

    def prepare_ingest(self) -> bool:
        """Before bulk writes. Local mode: journal the store in WAL with synchronous=NORMAL; True if applied.

        Local mode commits every point in its own SQLite transaction with a full fsync, which caps ingest at
        ~50-100 points/s on ordinary disks (measured: 18 ms/point here, 0.4 ms/point in WAL). WAL+NORMAL
        stays consistent after a crash; a power cut may lose the last commits, which a re-ingest restores.
        The connection is private to qdrant-client, so this reaches in defensively and is a no-op when the
        layout differs.
        """
        if not self.local:
            return False
        collection = getattr(getattr(self.client, "_client", None), "collections", {}).get(self.collection)
        connection = getattr(getattr(collection, "storage", None), "storage", None)
        if not isinstance(connection, sqlite3.Connection):
            return False
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return True

    def finish_ingest(self) -> None:
        """After bulk writes: nothing here (local mode scans; a server indexes in the background)."""

    def count(self) -> int:
        """Points in the collection."""
        return int(self._call("count", self.client.count, self.collection, exact=True).count)

    def index_hashes(self) -> dict[str, str]:
        """Point id -> stored index hash, for every point (what re-ingest compares against)."""
        hashes: dict[str, str] = {}
        offset: Any = None
        while True:
            records, offset = self._call(
                "scroll",
                self.client.scroll,
                self.collection,
                limit=1024,
                offset=offset,
                with_payload=[INDEX_HASH],
                with_vectors=False,
            )
            for record in records:
                hashes[str(record.id)] = str((record.payload or {}).get(INDEX_HASH, ""))
            if offset is None:
                return hashes

    def product_ids(self, tenant: str | None = None) -> Iterator[tuple[str, str]]:
        """(point id, product id) of all points, or of one tenant's."""
        query_filter = keys.to_qdrant(keys.SearchFilters(tenant=tenant)) if tenant else None
        offset: Any = None
        while True:
            records, offset = self._call(
                "scroll",
                self.client.scroll,
                self.collection,
                scroll_filter=query_filter,
                limit=1024,
                offset=offset,
                with_payload=[keys.PRODUCT_ID],
                with_vectors=False,
            )
            yield from ((str(r.id), str((r.payload or {}).get(keys.PRODUCT_ID, ""))) for r in records)
            if offset is None:
                return

    def upsert(self, points: Sequence[PointData]) -> None:
        """Write points whole (both vectors and the payload in one operation per point)."""
        from qdrant_client import models

        structs = [
            models.PointStruct(
                id=point_id(p.product),
                vector={DENSE: p.dense.tolist(), SPARSE: models.SparseVector(indices=p.sparse[0], values=p.sparse[1])},
                payload=point_payload(p.product, p.index_hash),
            )
            for p in points
        ]
        self._call("upsert", self.client.upsert, self.collection, points=structs, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id."""
        from qdrant_client import models

        if ids:
            self._call(
                "delete",
                self.client.delete,
                self.collection,
                points_selector=models.PointIdsList(points=list(ids)),
                wait=True,
            )

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
        from qdrant_client import models

        query_filter = keys.to_qdrant(filters)
        sparse_query = models.SparseVector(indices=sparse[0], values=sparse[1])
        if method in ("rrf", "dbsf") and not sparse[0]:
            method = "dense"  # a query of stopwords only has no lexical side to fuse
        common: dict[str, Any] = {
            "query_filter": query_filter,
            "limit": limit,
            "with_payload": [PRODUCT],
            "with_vectors": [DENSE] if with_dense else False,
        }
        if method == "dense":
            request: dict[str, Any] = {"query": dense.tolist(), "using": DENSE, **common}
        elif method == "sparse":
            if not sparse[0]:
                return []
            request = {"query": sparse_query, "using": SPARSE, **common}
        else:
            fusion = models.Fusion.RRF if method == "rrf" else models.Fusion.DBSF
            request = {
                "prefetch": [
                    models.Prefetch(query=dense.tolist(), using=DENSE, filter=query_filter, limit=prefetch_limit),
                    models.Prefetch(query=sparse_query, using=SPARSE, filter=query_filter, limit=prefetch_limit),
                ],
                "query": models.FusionQuery(fusion=fusion),
                **common,
            }
        response = self._call("query", self.client.query_points, self.collection, **request)
        return [_hit(point.payload, point.score, point.vector) for point in response.points]

    def find_codes(self, codes: Sequence[str], filters: keys.SearchFilters | None, limit: int) -> list[Product]:
        """Products whose SKU or model code is one of `codes` (exact, normalised)."""
        from qdrant_client import models

        query_filter = keys.to_qdrant(filters)
        by_code = models.FieldCondition(key=keys.CODES, match=models.MatchAny(any=list(codes)))
        must: list[models.Condition] = [by_code]
        if query_filter is not None:
            must.append(query_filter)
        records, _ = self._call(
            "scroll",
            self.client.scroll,
            self.collection,
            scroll_filter=models.Filter(must=must),
            limit=limit,
            with_payload=[PRODUCT],
            with_vectors=False,
        )
        return [Product.model_validate((r.payload or {})[PRODUCT]) for r in records]


def point_payload(product: Product, index_hash: str) -> dict[str, Any]:
    """The payload of a product's point: the whole product plus indexed copies of the filterable fields."""
    payload: dict[str, Any] = {
        PRODUCT: product.model_dump(mode="json"),
        keys.PRODUCT_ID: product.id,
        keys.CATEGORY: product.category.lower(),
        keys.PRICE: float(product.price),
        keys.CODES: product_codes(product),
        INDEX_HASH: index_hash,
    }
    if product.in_stock is not None:
        payload[keys.IN_STOCK] = product.in_stock
    if product.tenant is not None:
        payload[keys.TENANT] = product.tenant
    return payload


def _hit(payload: dict[str, Any] | None, score: float, vector: Any) -> StoredHit:
    product = Product.model_validate((payload or {})[PRODUCT])
    dense = None
    if isinstance(vector, dict) and DENSE in vector:
        dense = np.asarray(vector[DENSE], dtype=np.float32)
    return StoredHit(product, float(score), dense)
