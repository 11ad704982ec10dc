"""Ingest and search against a real local-mode Qdrant store and the real MiniLM embedder."""

from __future__ import annotations

import gc
import json
import random
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from lorag.cli import main
from retrieval.catalog import Product
from retrieval.demo_catalog import demo_catalog, product_name, write_demo_catalog
from retrieval.embedder import Embedder
from retrieval.filters import SearchFilters
from retrieval.ingest import IngestReport, ingest
from retrieval.loaders import Row, read_catalog
from retrieval.retriever import Retriever
from retrieval.settings import RetrievalSettings
from retrieval.store import CatalogStore, StoreError, build_client

CATALOG = demo_catalog()


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """Loading MiniLM takes seconds: once per session."""
    return Embedder(threads=1)


@pytest.fixture(scope="module")
def retriever(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Retriever]:
    """The demo catalog ingested once into a temporary local store."""
    client = QdrantClient(path=str(tmp_path_factory.mktemp("qdrant")))
    store = CatalogStore(client)
    report = ingest((Row(i + 1, p) for i, p in enumerate(CATALOG)), store, embedder, progress=False)
    assert (report.added, report.rejected) == (len(CATALOG), 0)
    yield Retriever(store, embedder)
    client.close()


def _ingest(products: list[Product], store: CatalogStore, embedder: Embedder, **kw: object) -> IngestReport:
    return ingest((Row(i + 1, p) for i, p in enumerate(products)), store, embedder, progress=False, **kw)  # type: ignore[arg-type]


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[CatalogStore]:
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    yield CatalogStore(client)
    client.close()


@pytest.mark.parametrize("index", [0, 57, 123, 299])
def test_a_question_naming_a_product_returns_it_first(retriever: Retriever, index: int) -> None:
    product = CATALOG[index]
    for question in (f"How much is the {product.name}?", f"Is {product.id} in stock?"):
        result = retriever.retrieve(question)
        assert result.hits[0].product == product, question
        assert not result.unknown


def test_hits_carry_scores_best_first(retriever: Retriever) -> None:
    result = retriever.retrieve("gooseneck kettle with variable temperature", top_k=6)
    assert len(result.hits) == 6
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    assert all(h.product.category == "kettle" for h in result.hits[:3])


def test_filters(retriever: Retriever) -> None:
    filters = SearchFilters(category="Coffee Grinder", max_price=Decimal(200), in_stock=True)
    hits = retriever.retrieve("a grinder for espresso", top_k=10, filters=filters).hits
    assert hits
    for hit in hits:
        assert hit.product.category == "coffee grinder"
        assert hit.product.price <= 200 and (hit.product.stock or 0) > 0
    out = retriever.retrieve("kettle", top_k=10, filters=SearchFilters(in_stock=False)).hits
    assert out and all(h.product.stock == 0 for h in out)
    assert not retriever.retrieve("kettle", filters=SearchFilters(tenant="someone-else")).hits


def test_price_written_in_a_generic_question_filters(retriever: Retriever) -> None:
    result = retriever.retrieve("waterproof coffee scale under $60", top_k=8)
    assert result.filters is not None and result.filters.max_price == Decimal(60)
    assert result.hits and all(h.product.price <= 60 for h in result.hits)


def test_a_written_price_that_matches_nothing_falls_back_to_the_closest_products(
    small_store: CatalogStore, embedder: Embedder
) -> None:
    # A title-only catalog lists no prices: "under $13" used to filter out every product and flag the need unknown.
    titles = ["Toddler Sneakers Velcro Strap, Navy", "Baby Girls Soft Sole Sneakers", "Garden Hose 50 ft"]
    _ingest([Product(id=str(i), name=t) for i, t in enumerate(titles)], small_store, embedder)
    result = Retriever(small_store, embedder).retrieve("baby sneakers under $13")
    assert not result.unknown and result.filters is None
    assert result.hits and result.hits[0].product.name == "Baby Girls Soft Sole Sneakers"


def test_loose_real_queries_find_their_titles_and_an_unsold_kind_is_signalled(
    small_store: CatalogStore, embedder: Embedder
) -> None:
    # Real titles and queries (ESCI): the matches score under the similarity threshold but share a word of their
    # name; "toaster" shares none and is flagged. A word shared only with a category proves nothing: see below.
    titles = [
        "Spy Camera - Hidden Camera - USB Charger - Surveillance Camera - Full HD 1080p",
        "GROSCHE Aberdeen PERFECT TEA MAKER Tea pot with coaster, Tea Steeper, Easy Tea Infuser",
        "ZIZZON Professional Nail Care kit Manicure Grooming Set with Travel Case (Rose Gold)",
    ]
    _ingest([Product(id=str(i), name=t) for i, t in enumerate(titles)], small_store, embedder)
    retriever = Retriever(small_store, embedder)
    for query, title in [("cameras without wifi", 0), ("herb steeper", 1), ("mini manicure set", 2)]:
        result = retriever.retrieve(query)
        assert not result.unknown, (query, result.reason)
        assert result.hits[0].product.name == titles[title]
    toaster = retriever.retrieve("Do you sell a toaster?")
    assert toaster.unknown and "no hit named like it" in toaster.reason


def test_a_kind_sharing_only_a_category_word_is_signalled(retriever: Retriever) -> None:
    # The demo's names carry brand, series and code; its kinds are categories. "bread maker" shares "maker" with
    # the coffee makers' category, not with any name: still not sold.
    assert retriever.retrieve("bread maker").unknown


def test_nothing_under_a_written_price_shows_the_closest_products(retriever: Retriever) -> None:
    result = retriever.retrieve("coffee scale under $1", top_k=8)  # nothing that cheap: the closest, unfiltered
    assert result.filters is None and result.hits and not result.unknown


def test_a_named_product_is_never_filtered_out_by_a_written_price(retriever: Retriever) -> None:
    product = max(CATALOG, key=lambda p: p.price)
    result = retriever.retrieve(f"Is the {product.name} under $50?")
    assert result.hits[0].product == product and not result.unknown


@pytest.mark.parametrize(
    "question",
    [
        "How much is the Vellora Crema V-999?",  # real brand and series, no such model code
        f"Is the {product_name(random.Random(3), 'heldout')} in stock?",  # a brand we do not sell
        "Do you have the Aurin Meridian kettle?",
        "Do you sell toasters?",
    ],
)
def test_unknown_products_are_signalled(retriever: Retriever, question: str) -> None:
    result = retriever.retrieve(question)
    assert result.unknown, question
    assert result.reason


@pytest.mark.parametrize(
    "question",
    [
        "dual boiler espresso machine",
        "Do you have a gooseneck kettle?",
        "Velora Crema grinder",
    ],
)
def test_real_needs_are_not_signalled(retriever: Retriever, question: str) -> None:
    assert not retriever.retrieve(question).unknown


def test_reingest_skips_unchanged_updates_changed_and_prunes(small_store: CatalogStore, embedder: Embedder) -> None:
    products = CATALOG[:12]
    assert (_ingest(products, small_store, embedder).added, small_store.count()) == (12, 12)
    again = _ingest(products, small_store, embedder)
    assert (again.added, again.updated, again.unchanged, again.deleted) == (0, 0, 12, 0)
    changed = [products[0].model_copy(update={"price": Decimal("1.00")}), *products[1:8]]
    report = _ingest(changed, small_store, embedder, prune=True)
    assert (report.added, report.updated, report.unchanged, report.deleted) == (0, 1, 7, 4)
    assert small_store.count() == 8
    ids = {pid for _, pid in small_store.product_ids()}
    assert ids == {p.id for p in products[:8]}


def test_malformed_rows_are_reported_and_good_rows_land(
    tmp_path: Path, small_store: CatalogStore, embedder: Embedder
) -> None:
    good = [p.model_dump_json(exclude_none=True) for p in CATALOG[:5]]
    bad_price = json.loads(CATALOG[5].model_dump_json())
    bad_price["price"] = "free"
    lines = [good[0], "{oops", good[1], json.dumps(bad_price), good[2], good[3], good[1], good[4]]
    path = tmp_path / "catalog.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = ingest(read_catalog(path), small_store, embedder, progress=False)
    assert report.added == 5 and small_store.count() == 5
    assert [(e.line, e.message.split(":")[0]) for e in report.errors] == [
        (2, "invalid JSON"),
        (4, "field price"),
        (7, "field id"),
    ]
    assert "first on line 3" in report.errors[2].message


def test_prune_keeps_products_whose_row_was_rejected(
    tmp_path: Path, small_store: CatalogStore, embedder: Embedder
) -> None:
    _ingest(CATALOG[:3], small_store, embedder)
    broken = json.loads(CATALOG[2].model_dump_json())
    broken["stock"] = -1
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join([CATALOG[0].model_dump_json(), json.dumps(broken)]) + "\n")
    report = ingest(read_catalog(path), small_store, embedder, prune=True, progress=False)
    assert (report.unchanged, report.rejected, report.deleted) == (1, 1, 1)
    assert {pid for _, pid in small_store.product_ids()} == {CATALOG[0].id, CATALOG[2].id}


def test_tenants_are_separate_products(small_store: CatalogStore, embedder: Embedder) -> None:
    _ingest(CATALOG[:4], small_store, embedder, tenant="shop-a")
    _ingest(CATALOG[:2], small_store, embedder, tenant="shop-b")
    assert small_store.count() == 6
    report = _ingest(CATALOG[:1], small_store, embedder, tenant="shop-b", prune=True)
    assert report.deleted == 1 and small_store.count() == 5
    retriever = Retriever(small_store, embedder)
    hits = retriever.retrieve(CATALOG[1].name, filters=SearchFilters(tenant="shop-b")).hits
    assert [h.product.tenant for h in hits] == ["shop-b"]


def test_cli_ingest_and_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = write_demo_catalog(tmp_path / "demo.jsonl", count=20)
    store = ["--qdrant-path", str(tmp_path / "qdrant"), "--embedding-threads", "1"]
    assert main(["catalog", "ingest", str(catalog), "--quiet", *store]) == 0
    assert "added 20, updated 0, unchanged 0, deleted 0, rejected 0" in capsys.readouterr().out
    product = demo_catalog(count=20)[3]
    assert main(["catalog", "search", f"price of {product.id}", "--top-k", "2", *store]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"1. {product.id}") and "unknown: no" in out
    assert main(["catalog", "search", "How much is the Vellora Crema V-999?", "--facts", *store]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<catalog_facts>\nNOT IN CATALOG")


def test_server_mode_client_and_error_translation() -> None:
    # No Qdrant server runs here: a refused connection on loopback exercises the server-mode client and the
    # translation of its transport error into StoreError. The version check would warn from a thread.
    client = build_client(RetrievalSettings(qdrant_url="http://127.0.0.1:9"), check_compatibility=False)
    try:
        store = CatalogStore(client)
        assert not store.local
        with pytest.raises(StoreError, match="Qdrant lookup"):
            store.exists()
    finally:
        client.close()


def test_refuses_a_collection_of_another_dimension(small_store: CatalogStore) -> None:
    small_store.ensure_collection(384)
    with pytest.raises(StoreError, match="--recreate"):
        small_store.ensure_collection(768)
    small_store.ensure_collection(768, recreate=True)


def test_concurrent_queries_share_forward_passes_and_get_their_own_vectors(embedder: Embedder) -> None:
    texts = [f"question {i} about a {p.category}" for i, p in enumerate(CATALOG[:24])]
    expected = embedder.embed(texts)
    with ThreadPoolExecutor(max_workers=8) as pool:
        vectors = list(pool.map(embedder.embed_query, texts))
    for got, want in zip(vectors, expected, strict=True):
        assert np.allclose(got, want, atol=1e-5)


def test_a_local_store_held_by_another_client_is_a_clear_error(tmp_path: Path) -> None:
    settings = RetrievalSettings(qdrant_path=tmp_path / "qdrant")
    first = build_client(settings)
    try:
        with warnings.catch_warnings():
            # qdrant-client leaves the lock file open when it refuses the second client; collect it here,
            # quietly, rather than at some later test's garbage collection.
            warnings.simplefilter("ignore", ResourceWarning)
            with pytest.raises(StoreError, match="already accessed"):
                build_client(settings)
            gc.collect()
    finally:
        first.close()
