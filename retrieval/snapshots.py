"""Published snapshots of a local-mode store, so several processes can read one catalog without a Qdrant server.

qdrant-client's local mode takes an exclusive lock on its directory and offers no read-only open, so only one
process can use a store directory. Instead the writer (`lorag catalog ingest`) publishes each finished ingest as a
new generation and every reader (a gateway worker) serves a private copy of the newest one:

    <store>/                    the writer's directory, as before (ingest updates it in place)
    <store>/snapshots/<gen>/    a complete, consistent copy of the writer's collections (never changed again)
    <store>/snapshots/CURRENT   the name of the newest generation, replaced atomically

A reader checks CURRENT at most once per `check_interval` seconds (one small file read) and, when it names a new
generation, copies it to a private directory, loads it, and switches over; calls in flight finish on the old
copy, which is closed when the last of them returns. Local mode holds every point in memory, so each reader pays
the collection's memory once. A store directory with a `snapshots/` folder is served from its snapshots.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from retrieval import filters as keys
from retrieval.catalog import Product
from retrieval.embedder import Vectors
from retrieval.store_base import Method, PointData, StoredHit, StoreError

if TYPE_CHECKING:
    from retrieval.qdrant_store import CatalogStore

log = logging.getLogger(__name__)

SNAPSHOTS = "snapshots"
CURRENT = "CURRENT"
META = "meta.json"  # qdrant-client local mode's list of collections
STORAGE = "storage.sqlite"  # one per collection, under collection/<name>/
KEEP = 3  # generations kept: a reader still copying an older one must find it
CHECK_INTERVAL = 1.0
T = TypeVar("T")


def published(root: Path) -> bool:
    """Whether the store at `root` is served from snapshots (it has a snapshots folder)."""
    return (root / SNAPSHOTS).is_dir()


def current(root: Path) -> str | None:
    """The newest published generation's name, or None when nothing was published yet."""
    try:
        name = (root / SNAPSHOTS / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    return name or None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(root: Path) -> str:
    """Publish the collections of the local-mode store at `root` as a new generation and return its name.

    Call it while holding the store open (the writer's lock keeps other writers out); SQLite's backup API reads
    each collection consistently beside the open connection, write-ahead log included.
    """
    snapshots = root / SNAPSHOTS
    snapshots.mkdir(exist_ok=True)
    meta = json.loads((root / META).read_text())
    name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"
    staging = snapshots / f".{name}.tmp"
    staging.mkdir()
    for collection in meta.get("collections", {}):
        source, target = root / "collection" / collection / STORAGE, staging / "collection" / collection / STORAGE
        target.parent.mkdir(parents=True)
        src, dst = sqlite3.connect(source), sqlite3.connect(target)
        try:
            src.backup(dst)
            # A rollback journal: a reader's copy needs no -wal/-shm files beside it.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            src.close()
            dst.close()
    (staging / META).write_text(json.dumps(meta))
    staging.rename(snapshots / name)
    _fsync_dir(snapshots)
    pointer = snapshots / f".{CURRENT}.{name}.tmp"
    with pointer.open("w") as fh:
        fh.write(name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(pointer, snapshots / CURRENT)
    _fsync_dir(snapshots)
    _prune(snapshots, name)
    return name


def _prune(snapshots: Path, newest: str) -> None:
    generations = sorted(p.name for p in snapshots.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in generations[:-KEEP]:
        if old != newest:
            shutil.rmtree(snapshots / old, ignore_errors=True)


def ensure_published(root: Path, collection: str) -> str | None:
    """Make the store at `root` served from snapshots: publish what the writer's directory holds unless a
    generation exists. Fails (StoreError) while another process holds the writer's directory, e.g. an ingest."""
    if (name := current(root)) is not None:
        return name
    from qdrant_client import QdrantClient

    root.mkdir(parents=True, exist_ok=True)
    try:
        client = QdrantClient(path=str(root))
    except RuntimeError as exc:
        raise StoreError(f"cannot open Qdrant store {root}: {exc}") from exc
    try:
        if client.collection_exists(collection):
            return publish(root)
        (root / SNAPSHOTS).mkdir(exist_ok=True)  # nothing to publish yet: readers wait for the first ingest
        return None
    finally:
        client.close()


class _Copy:
    """One reader's private copy of a generation, open, with the calls running on it."""

    def __init__(self, generation: str, directory: Path, store: CatalogStore) -> None:
        self.generation, self.directory, self.store = generation, directory, store
        self.users = 0
        self.retired = False

    def close(self) -> None:
        self.store.client.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class SnapshotStore:
    """A read-only CatalogIndex over the newest published generation of a local-mode store."""

    def __init__(self, root: Path, collection: str = "catalog", check_interval: float = CHECK_INTERVAL) -> None:
        self.root = root
        self.collection = collection
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._copy: _Copy | None = None
        self._switching = False
        self._refresh()
        self._checked = time.monotonic()

    @property
    def local(self) -> bool:
        """Always embedded."""
        return True

    @property
    def generation(self) -> str | None:
        """The generation this reader serves now."""
        return self._copy.generation if self._copy else None

    def _open(self, generation: str) -> _Copy:
        from qdrant_client import QdrantClient

        from retrieval.qdrant_store import CatalogStore

        source = self.root / SNAPSHOTS / generation
        # Named by process and generation, so an operator (and a test) can see which worker serves which.
        directory = Path(tempfile.mkdtemp(prefix=f"lorag-catalog-{os.getpid()}-{generation}-"))
        try:
            shutil.copytree(source, directory, dirs_exist_ok=True)
            client = QdrantClient(path=str(directory))
        except (OSError, RuntimeError) as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise StoreError(f"cannot open catalog snapshot {source}: {exc}") from exc
        return _Copy(generation, directory, CatalogStore(client, self.collection))

    def _refresh(self) -> None:
        """Switch to the newest generation if it changed; the old copy closes when its last call returns."""
        newest = current(self.root)
        if newest is None or (self._copy is not None and newest == self._copy.generation):
            return
        try:
            fresh = self._open(newest)
        except StoreError as exc:  # e.g. pruned while we copied it: keep serving the old one, retry later
            log.warning("catalog snapshot %s not loaded: %s", newest, exc)
            return
        with self._lock:
            old, self._copy = self._copy, fresh
            if old is not None:
                old.retired = True
                if old.users == 0:
                    old.close()
        log.info("catalog snapshot %s loaded (pid %d)", newest, os.getpid())

    def _maybe_refresh(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._switching or now - self._checked < self.check_interval:
                return
            self._checked, self._switching = now, True
        try:
            self._refresh()
        finally:
            with self._lock:
                self._switching = False

    @contextmanager
    def _using(self) -> Iterator[CatalogStore | None]:
        self._maybe_refresh()
        with self._lock:
            copy = self._copy
            if copy is not None:
                copy.users += 1
        try:
            yield copy.store if copy is not None else None
        finally:
            if copy is not None:
                with self._lock:
                    copy.users -= 1
                    if copy.retired and copy.users == 0:
                        copy.close()

    def _read(self, fn: Callable[[CatalogStore], T]) -> T:
        with self._using() as store:
            if store is None:
                raise StoreError(f"no catalog published in {self.root}: run `lorag catalog ingest`")
            return fn(store)

    def close(self) -> None:
        """Close the open copy and remove its directory."""
        with self._lock:
            copy, self._copy = self._copy, None
        if copy is not None:
            copy.close()

    def exists(self) -> bool:
        """Whether the served generation holds the collection (False before the first publish)."""
        with self._using() as store:
            return store is not None and store.exists()

    def count(self) -> int:
        """Points in the served generation."""
        return self._read(lambda s: s.count())

    def index_hashes(self) -> dict[str, str]:
        """Point id -> stored index hash, in the served generation."""
        return self._read(lambda s: s.index_hashes())

    def product_ids(self, tenant: str | None = None) -> Iterator[tuple[str, str]]:
        """(point id, product id) of the served generation's points, or of one tenant's."""
        return iter(self._read(lambda s: list(s.product_ids(tenant))))

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
        """The best `limit` products, as CatalogStore.search, in the served generation."""
        return self._read(
            lambda s: s.search(
                dense,
                sparse,
                method=method,
                limit=limit,
                prefetch_limit=prefetch_limit,
                filters=filters,
                with_dense=with_dense,
            )
        )

    def find_codes(self, codes: Sequence[str], filters: keys.SearchFilters | None, limit: int) -> list[Product]:
        """Products whose SKU or model code is one of `codes`, in the served generation."""
        return self._read(lambda s: s.find_codes(codes, filters, limit))

    # Writes go to the writer's directory through `lorag catalog ingest`, which publishes the next generation.
    def _read_only(self, *_: Any, **__: Any) -> Any:
        raise StoreError(f"{self.root} is served from published snapshots (read-only): use `lorag catalog ingest`")

    def ensure_collection(self, dimension: int, *, recreate: bool = False) -> None:
        """Refused: a snapshot is read-only."""
        self._read_only()

    def prepare_ingest(self) -> bool:
        """Refused: a snapshot is read-only."""
        return bool(self._read_only())

    def finish_ingest(self) -> None:
        """Refused: a snapshot is read-only."""
        self._read_only()

    def upsert(self, points: Sequence[PointData]) -> None:
        """Refused: a snapshot is read-only."""
        self._read_only()

    def delete(self, ids: Sequence[str]) -> None:
        """Refused: a snapshot is read-only."""
        self._read_only()
