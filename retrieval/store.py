"""The catalog store that settings name: qdrant-client (a server or local mode) or Qdrant Edge.

The stores themselves live in qdrant_store and edge_store, what they share in store_base; the names other modules
import from here are re-exported below.
"""

from __future__ import annotations

from collections.abc import Callable

from retrieval import snapshots
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


def open_store(settings: RetrievalSettings, *, write: bool = False) -> tuple[CatalogIndex, Callable[[], None]]:
    """The catalog store that settings name and the function that closes it (the caller owns both).

    A local-mode store that has published snapshots (see retrieval.snapshots) is read from its newest snapshot,
    so any number of processes can read it while ingest writes; `write` opens the writer's directory itself.
    """
    if settings.store == "edge":
        if settings.qdrant_url:
            raise StoreError("LORAG_STORE=edge is an embedded store: unset LORAG_QDRANT_URL to use it")
        settings.qdrant_path.mkdir(parents=True, exist_ok=True)
        edge = EdgeCatalogStore(settings.qdrant_path, settings.collection)
        return edge, edge.close
    if not write and not settings.qdrant_url and snapshots.published(settings.qdrant_path):
        reader = snapshots.SnapshotStore(settings.qdrant_path, settings.collection)
        return reader, reader.close
    client = build_client(settings)
    return CatalogStore(client, settings.collection), client.close
