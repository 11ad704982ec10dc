"""The catalog store that settings name: qdrant-client (a server or local mode) or Qdrant Edge.

The stores themselves live in qdrant_store and edge_store, what they share in store_base; the names other modules
import from here are re-exported below.
"""

from __future__ import annotations

from collections.abc import Callable

from retrieval.edge_store import EdgeCatalogStore
from retrieval.qdrant_store import CatalogStore, build_client
from retrieval.settings import RetrievalSettings
from retrieval.store_base import (
    DENSE,
    INDEX_HASH,
    METHODS,
    PRODUCT,
    SPARSE,
    CatalogIndex,
    Method,
    PointData,
    StoredHit,
    StoreError,
    point_id,
    point_payload,
)

__all__ = [
    "DENSE",
    "INDEX_HASH",
    "METHODS",
    "PRODUCT",
    "SPARSE",
    "CatalogIndex",
    "CatalogStore",
    "EdgeCatalogStore",
    "Method",
    "PointData",
    "StoreError",
    "StoredHit",
    "build_client",
    "open_store",
    "point_id",
    "point_payload",
]


def open_store(settings: RetrievalSettings) -> tuple[CatalogIndex, Callable[[], None]]:
    """The catalog store that settings name and the function that closes it (the caller owns both)."""
    if settings.store == "edge":
        if settings.qdrant_url:
            raise StoreError("LORAG_STORE=edge is an embedded store: unset LORAG_QDRANT_URL to use it")
        settings.qdrant_path.mkdir(parents=True, exist_ok=True)
        edge = EdgeCatalogStore(settings.qdrant_path, settings.collection)
        return edge, edge.close
    client = build_client(settings)
    return CatalogStore(client, settings.collection), client.close
