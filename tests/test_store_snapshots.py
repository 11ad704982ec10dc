"""Published snapshots of a local-mode store: several readers of one store directory, a new generation seen by
all of them, reads finishing on the old copy, writes refused. Real qdrant-client local mode, small vectors."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from retrieval import snapshots
from retrieval.catalog import Product
from retrieval.qdrant_store import CatalogStore
from retrieval.settings import RetrievalSettings
from retrieval.store import PointData, StoreError, open_store, point_id

DIM = 8


def _point(i: int, name: str | None = None) -> PointData:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[i % DIM] = 1.0
    product = Product(id=f"p{i}", name=name or f"Product {i}")
    return PointData(product, vector, ([i], [1.0]), f"hash{i}")


def _query(i: int) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[i % DIM] = 1.0
    return vector


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "qdrant"


def _write(root: Path, points: list[PointData], *, delete: tuple[str, ...] = ()) -> str:
    """What `lorag catalog ingest` does: write the writer's directory, publish while holding it."""
    client = QdrantClient(path=str(root))
    try:
        store = CatalogStore(client)
        store.ensure_collection(DIM)
        store.prepare_ingest()  # WAL, as ingest runs it: publish must read through the log
        store.upsert(points)
        store.delete(delete)
        return snapshots.publish(root)
    finally:
        client.close()


def _names(store: snapshots.SnapshotStore, i: int) -> list[str]:
    return [h.product.name for h in store.search(_query(i), ([i], [1.0]), method="dense", limit=1)]


def test_two_readers_of_one_store_and_a_new_generation(root: Path) -> None:
    first = _write(root, [_point(i) for i in range(4)])
    a = snapshots.SnapshotStore(root, check_interval=0)
    b = snapshots.SnapshotStore(root, check_interval=0)
    try:
        assert a.generation == b.generation == first
        assert a.count() == b.count() == 4
        assert _names(a, 2) == _names(b, 2) == ["Product 2"]
        # The writer's directory is free while both read: the next ingest is not locked out.
        second = _write(root, [_point(2, "Product 2, renamed"), _point(5)], delete=(point_id(_point(0).product),))
        assert second != first and snapshots.current(root) == second
        assert _names(a, 2) == _names(b, 2) == ["Product 2, renamed"]
        assert a.generation == b.generation == second
        assert a.count() == b.count() == 4  # 4 + p5 - p0
        assert {pid for _, pid in a.product_ids()} == {"p1", "p2", "p3", "p5"}
    finally:
        a.close()
        b.close()


def test_the_check_interval_bounds_how_often_the_marker_is_read(root: Path) -> None:
    _write(root, [_point(1)])
    reader = snapshots.SnapshotStore(root, check_interval=3600)
    try:
        _write(root, [_point(1, "new name")])
        assert _names(reader, 1) == ["Product 1"]  # not checked again yet
        reader.check_interval = 0
        assert _names(reader, 1) == ["new name"]
    finally:
        reader.close()


def test_a_call_in_flight_finishes_on_the_copy_it_started_on(root: Path) -> None:
    _write(root, [_point(1)])
    reader = snapshots.SnapshotStore(root, check_interval=0)
    try:
        with reader._using() as old:
            assert old is not None
            _write(root, [_point(1, "new name")])
            seen: list[list[str]] = []
            worker = threading.Thread(target=lambda: seen.append(_names(reader, 1)))
            worker.start()
            worker.join(30)
            assert seen == [["new name"]]
            # the switch retired the old copy, but our call holds it open until it returns
            assert old.count() == 1
            assert old.search(_query(1), ([1], [1.0]), method="dense", limit=1)[0].product.name == "Product 1"
        assert old.client._client.closed  # type: ignore[attr-defined]  # closed once our call returned
    finally:
        reader.close()


def test_old_generations_are_pruned_and_copies_removed(root: Path) -> None:
    names = [_write(root, [_point(i)]) for i in range(snapshots.KEEP + 2)]
    kept = sorted(p.name for p in (root / snapshots.SNAPSHOTS).iterdir() if p.is_dir())
    assert kept == names[-snapshots.KEEP :]
    reader = snapshots.SnapshotStore(root)
    directory = reader._copy.directory  # type: ignore[union-attr]
    assert directory.is_dir()
    reader.close()
    assert not directory.exists()


def test_open_store_reads_published_snapshots_and_refuses_writes(root: Path) -> None:
    _write(root, [_point(3)])
    settings = RetrievalSettings(qdrant_path=root, qdrant_url=None, store="qdrant")
    store, close = open_store(settings)
    try:
        assert isinstance(store, snapshots.SnapshotStore)
        assert store.exists() and store.count() == 1
        with pytest.raises(StoreError, match="read-only"):
            store.upsert([_point(4)])
        with pytest.raises(StoreError, match="read-only"):
            store.ensure_collection(DIM)
    finally:
        close()
    writer, close = open_store(settings, write=True)
    try:
        assert isinstance(writer, CatalogStore)
    finally:
        close()


def test_before_the_first_ingest_a_reader_has_no_catalog_and_then_loads_it(root: Path) -> None:
    assert snapshots.ensure_published(root, "catalog") is None
    assert snapshots.published(root)
    reader = snapshots.SnapshotStore(root, check_interval=0)
    try:
        assert not reader.exists()
        with pytest.raises(StoreError, match="no catalog published"):
            reader.count()
        _write(root, [_point(1)])
        assert reader.exists() and reader.count() == 1
    finally:
        reader.close()


def test_ensure_published_publishes_what_the_writer_holds_and_fails_while_it_is_held(root: Path) -> None:
    client = QdrantClient(path=str(root))
    try:
        store = CatalogStore(client)
        store.ensure_collection(DIM)
        store.upsert([_point(1), _point(2)])
        with warnings.catch_warnings():
            # qdrant-client leaves its lock file open when it refuses a second client: collect it here, quietly.
            warnings.simplefilter("ignore", ResourceWarning)
            with pytest.raises(StoreError, match="already accessed"):
                snapshots.ensure_published(root, "catalog")
            gc.collect()
    finally:
        client.close()
    generation = snapshots.ensure_published(root, "catalog")
    assert generation is not None and snapshots.ensure_published(root, "catalog") == generation
    reader = snapshots.SnapshotStore(root)
    try:
        assert reader.count() == 2
    finally:
        reader.close()


def _serve_workers(root: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "assistants.yaml"
    manifest.write_text(
        "base_model: stub-model\nassistants:\n  - {name: shop, adapter: null, retrieval: {enabled: true}}\n"
    )
    command = [sys.executable, "-m", "lorag", "serve", "--workers", "2", "--assistants", str(manifest)]
    command += ["--qdrant-path", str(root), "--port", "1"]  # never bound: refused before uvicorn starts
    return subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def test_serve_with_workers_refuses_the_edge_store(root: Path, tmp_path: Path) -> None:
    done = _serve_workers(root, tmp_path, LORAG_STORE="edge")
    assert done.returncode == 2 and "Qdrant Edge store allows one process" in done.stderr


def test_serve_with_workers_waits_for_an_ingest_holding_the_store(root: Path, tmp_path: Path) -> None:
    client = QdrantClient(path=str(root))  # what a running ingest holds
    try:
        CatalogStore(client).ensure_collection(DIM)
        done = _serve_workers(root, tmp_path)
    finally:
        client.close()
    assert done.returncode == 2 and "wait for the ingest to finish" in done.stderr
    assert not snapshots.published(root)
