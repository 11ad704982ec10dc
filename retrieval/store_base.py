"""What every catalog store shares, in no client's types: the point layout, the query plan and the error boundary.

One point per product, two named vectors: "dense" is the embedding (cosine), "sparse" holds BM25-style term
weights with an IDF modifier, so the engine computes IDF from the live collection. Each point's payload keeps the
whole product (what the facts block renders) next to flattened, indexed copies of the filterable fields.

A search is planned once here (`plan_query`); a store only maps the plan to its client, so stores cannot drift.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, ParamSpec, Protocol, TypeVar

import numpy as np

from retrieval import filters as keys
from retrieval.catalog import Product
from retrieval.documents import product_codes
from retrieval.embedder import Vectors
from retrieval.settings import Fusion

DENSE: Final = "dense"
SPARSE: Final = "sparse"
Vector = Literal["dense", "sparse"]
Method = Literal["dense", "sparse", "rrf", "dbsf"]
METHODS: tuple[Method, ...] = ("dense", "sparse", "rrf", "dbsf")

PRODUCT = "product"
INDEX_HASH = "index_hash"
SCROLL_PAGE = 1024

# "tenant" is a keyword index that also tells a server to co-locate each tenant's points.
IndexType = Literal["keyword", "tenant", "float", "bool", "integer"]
# Created before the points arrive, so a server builds them as it goes instead of re-scanning.
PAYLOAD_INDEXES: dict[str, IndexType] = {
    keys.CATEGORY: "keyword",
    keys.PRICE: "float",
    keys.IN_STOCK: "bool",
    keys.TENANT: "tenant",
    keys.CODES: "keyword",
    keys.PRODUCT_ID: "keyword",
}

# Point ids derive from (tenant, product id), so re-ingesting a product overwrites its point.
_POINT_NAMESPACE = uuid.UUID("5b0f6d2c-8f5e-4c43-9a8e-2f4c0f1d7a11")

P = ParamSpec("P")
T = TypeVar("T")


class StoreError(RuntimeError):
    """The store failed or holds a collection this code cannot use."""


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


def point_id(product: Product) -> str:
    """The deterministic point id of a product (uuid5 of tenant and product id)."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{product.tenant or ''}\x1f{product.id}"))


def point_payload(product: Product, index_hash: str) -> dict[str, Any]:
    """The payload of a product's point: the whole product plus indexed copies of the filterable fields."""
    payload: dict[str, Any] = {
        PRODUCT: product.model_dump(mode="json"),
        keys.PRODUCT_ID: product.id,
        keys.CODES: product_codes(product),
        INDEX_HASH: index_hash,
    }
    # Unknown category or price: no indexed copy, so a category or price filter never matches the product.
    if product.category is not None:
        payload[keys.CATEGORY] = product.category.lower()
    if product.price is not None:
        payload[keys.PRICE] = float(product.price)
    if product.in_stock is not None:
        payload[keys.IN_STOCK] = product.in_stock
    if product.tenant is not None:
        payload[keys.TENANT] = product.tenant
    return payload


@dataclass(frozen=True)
class Equals:
    """The payload field equals `value`."""

    field: str
    value: str | bool


@dataclass(frozen=True)
class AnyOf:
    """The payload field (or one of its values, for a list) is one of `values`."""

    field: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Between:
    """The numeric payload field lies in [gte, lte]; None leaves that side open."""

    field: str
    gte: float | None = None
    lte: float | None = None


Condition = Equals | AnyOf | Between


def filter_conditions(filters: keys.SearchFilters | None) -> tuple[Condition, ...]:
    """The conditions (all must hold) that `filters` put on a point's payload."""
    if filters is None:
        return ()
    conditions: list[Condition] = []
    if filters.category is not None:
        conditions.append(Equals(keys.CATEGORY, filters.category.lower()))  # stored lowercased
    if filters.min_price is not None or filters.max_price is not None:
        low = float(filters.min_price) if filters.min_price is not None else None
        high = float(filters.max_price) if filters.max_price is not None else None
        conditions.append(Between(keys.PRICE, low, high))
    if filters.in_stock is not None:
        conditions.append(Equals(keys.IN_STOCK, filters.in_stock))
    if filters.tenant is not None:
        conditions.append(Equals(keys.TENANT, filters.tenant))
    return tuple(conditions)


@dataclass(frozen=True)
class QueryPlan:
    """One search: a nearest search on one vector, or (with `fusion`) both vectors prefetched and fused."""

    vectors: tuple[Vector, ...]
    fusion: Fusion | None
    dense: list[float]
    sparse: tuple[list[int], list[float]]
    conditions: tuple[Condition, ...]
    limit: int
    prefetch_limit: int
    with_dense: bool


def plan_query(
    dense: Vectors,
    sparse: tuple[list[int], list[float]],
    *,
    method: Method,
    limit: int,
    prefetch_limit: int,
    filters: keys.SearchFilters | None,
    with_dense: bool,
) -> QueryPlan | None:
    """The plan of a search by `method`; None when it cannot find anything (a sparse search without terms)."""
    vectors: tuple[Vector, ...] = (DENSE, SPARSE)
    fusion: Fusion | None = None
    if method == "sparse" and not sparse[0]:
        return None
    if method == "dense" or not sparse[0]:  # a query of stopwords only has no lexical side to fuse
        vectors = (DENSE,)
    elif method == "sparse":
        vectors = (SPARSE,)
    else:
        fusion = method
    conditions = filter_conditions(filters)
    return QueryPlan(vectors, fusion, dense.tolist(), sparse, conditions, limit, prefetch_limit, with_dense)


class CatalogIndex(Protocol):
    """What ingest and the retriever need from a store (CatalogStore in qdrant_store, EdgeCatalogStore)."""

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


# A scrolled point as (point id, payload) and a scored one as (payload, score, vector), whatever the client.
Record = tuple[str, dict[str, Any]]
Scored = tuple[dict[str, Any] | None, float, Any]


class StoreBase(ABC):
    """The CatalogIndex methods that read the same in every store, over three primitives a store implements:
    `_query` (run a QueryPlan), `_scroll` (one page of records) and `_is_failure` (which exceptions are its
    client's). Every client call goes through `_call`, the store's one error boundary."""

    engine = "store"  # names the store in error messages
    collection: str

    @abstractmethod
    def _is_failure(self, exc: Exception) -> bool: ...

    @abstractmethod
    def _query(self, plan: QueryPlan) -> list[Scored]: ...

    @abstractmethod
    def _scroll(
        self, fields: list[str], conditions: tuple[Condition, ...], limit: int, offset: Any
    ) -> tuple[list[Record], Any]:
        """Up to `limit` records from `offset` (None: the start) and the offset of the next page (None: done)."""

    def _call(self, what: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:
            if not self._is_failure(exc):
                raise  # a bug here, not a failing store: let it show as one
            raise StoreError(f"{self.engine} {what} on {self.collection!r} failed: {exc}") from exc

    def _records(self, fields: list[str], conditions: tuple[Condition, ...] = ()) -> Iterator[Record]:
        offset: Any = None
        while True:
            records, offset = self._call("scroll", self._scroll, fields, conditions, SCROLL_PAGE, offset)
            yield from records
            if offset is None:
                return

    def index_hashes(self) -> dict[str, str]:
        """Point id -> stored index hash, for every point (what re-ingest compares against)."""
        return {pid: str(payload.get(INDEX_HASH, "")) for pid, payload in self._records([INDEX_HASH])}

    def product_ids(self, tenant: str | None = None) -> Iterator[tuple[str, str]]:
        """(point id, product id) of all points, or of one tenant's."""
        conditions = filter_conditions(keys.SearchFilters(tenant=tenant)) if tenant else ()
        for pid, payload in self._records([keys.PRODUCT_ID], conditions):
            yield pid, str(payload.get(keys.PRODUCT_ID, ""))

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
        plan = plan_query(
            dense,
            sparse,
            method=method,
            limit=limit,
            prefetch_limit=prefetch_limit,
            filters=filters,
            with_dense=with_dense,
        )
        if plan is None:
            return []
        return [_hit(payload, score, vector) for payload, score, vector in self._call("query", self._query, plan)]

    def find_codes(self, codes: Sequence[str], filters: keys.SearchFilters | None, limit: int) -> list[Product]:
        """Products whose SKU or model code is one of `codes` (exact, normalised)."""
        conditions = (AnyOf(keys.CODES, tuple(codes)), *filter_conditions(filters))
        records, _ = self._call("scroll", self._scroll, [PRODUCT], conditions, limit, None)
        return [Product.model_validate(payload[PRODUCT]) for _, payload in records]


def _hit(payload: dict[str, Any] | None, score: float, vector: Any) -> StoredHit:
    product = Product.model_validate((payload or {})[PRODUCT])
    dense = None
    if isinstance(vector, dict) and DENSE in vector:
        dense = np.asarray(vector[DENSE], dtype=np.float32)
    return StoredHit(product, float(score), dense)
