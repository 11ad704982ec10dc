"""Pure retrieval pieces: tokenizer, codes, question parsing, filters and query plans, metrics, the labelled query
set; and the two stores running the same plans on a few points in memory."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from retrieval import lexical
from retrieval.beir import load_beir
from retrieval.catalog import Product, content_hash
from retrieval.demo_catalog import demo_catalog, synthetic_catalog
from retrieval.documents import codes_in, dense_text, product_codes
from retrieval.edge_store import EdgeCatalogStore
from retrieval.filters import SearchFilters
from retrieval.qdrant_store import CatalogStore, qdrant_filter
from retrieval.queries import labelled_queries, write_beir
from retrieval.question import mentions, name_words, parse, price_filters
from retrieval.scores import bootstrap_ci, mrr_at, ndcg_at, recall_at
from retrieval.store_base import (
    METHODS,
    Between,
    Equals,
    Method,
    PointData,
    StoreError,
    filter_conditions,
    plan_query,
    point_id,
)


def _product(**kw: object) -> Product:
    base: dict[str, object] = {
        "id": "ESP-1042",
        "name": "Vellora Crema V-520",
        "category": "espresso machine",
        "price": Decimal("349.00"),
        "stock": 3,
        "attributes": {"color": "red"},
    }
    base.update(kw)
    return Product.model_validate(base)


def test_tokenizer_keeps_codes_whole_and_split() -> None:
    assert lexical.tokenize("Vellora Crema V-520") == ["vellora", "crema", "v-520", "v", "520"]


def test_tokenizer_folds_stems_and_drops_stopwords() -> None:
    assert lexical.tokenize("How much are the Décor Grinders and presses?") == ["decor", "grinder", "press"]


def test_sparse_vectors_are_sorted_and_stable() -> None:
    indices, values = lexical.document_vector("kettle kettle gooseneck")
    assert indices == sorted(indices) and len(indices) == 2
    assert max(values) == values[indices.index(lexical.term_index("kettle"))]
    q_indices, q_values = lexical.query_vector("kettle kettle")
    weights = dict(zip(q_indices, q_values, strict=True))
    assert weights.pop(lexical.term_index("kettle")) == 1.0
    assert set(weights) == {lexical.term_index(g) for g in lexical.trigrams("kettle")}
    assert sum(weights.values()) == pytest.approx(lexical.FUZZY_WEIGHT)


def test_name_trigrams_make_a_misspelt_brand_match() -> None:
    doc = dict(zip(*lexical.document_vector("Vellora Crema V-520", fuzzy="Vellora Crema V-520"), strict=True))
    query = dict(zip(*lexical.query_vector("velora"), strict=True))
    assert lexical.term_index("velora") not in doc
    assert len(set(doc) & set(query)) >= 4


def test_codes_are_normalised() -> None:
    assert codes_in("is the v520 or the ESP-1042 cheaper than 58mm?") == {"V520", "ESP1042"}
    assert product_codes(_product()) == ["ESP1042", "V520"]


def test_dense_text_leads_with_name_and_leaves_out_sku_and_price() -> None:
    text = dense_text(_product(description="Built for everyday brewing. " * 30))
    assert text.startswith("Vellora Crema V-520. espresso machine. color: red")
    assert "ESP-1042" not in text and "349" not in text and len(text) < 400


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("red kettle under $50", None, Decimal(50)),
        ("grinder over 100 dollars", Decimal(100), None),
        ("scale between $20 and $40", Decimal(20), Decimal(40)),
    ],
)
def test_price_bounds_are_read(text: str, low: Decimal | None, high: Decimal | None) -> None:
    parsed = price_filters(text)
    assert parsed is not None and (parsed.min_price, parsed.max_price) == (low, high)


def test_numbers_without_currency_are_not_prices() -> None:
    assert price_filters("a 54 in bench cushion under 60") is None


def test_name_words_skip_sentence_openers_and_code_letters() -> None:
    assert name_words("How much is the Aurin Meridian AU-450? Is ESP-1042 red?") == ("Aurin", "Meridian")
    assert parse("red waterproof scale under $50").names_product is False


def test_mentions_allows_one_typo() -> None:
    assert mentions(("Velora", "Crema"), "Vellora Crema V-520")
    assert not mentions(("Aurin",), "Vellora Aurora V-520")


def test_content_hash_and_point_id() -> None:
    product = _product()
    assert content_hash(product) == content_hash(_product())
    assert content_hash(product) != content_hash(_product(price=Decimal("349.01")))
    assert point_id(product) == point_id(_product(price=Decimal(1)))
    assert point_id(product) != point_id(_product(tenant="shop-b"))


def test_filters_validate_and_translate() -> None:
    with pytest.raises(ValidationError):
        SearchFilters(min_price=Decimal(10), max_price=Decimal(5))
    assert filter_conditions(None) == filter_conditions(SearchFilters()) == ()
    assert qdrant_filter(()) is None
    # Every field becomes a condition: a new field fails here until it does.
    assert set(SearchFilters.model_fields) == {"category", "min_price", "max_price", "in_stock", "tenant"}
    full = SearchFilters(category="Kettle", min_price=Decimal(10), max_price=Decimal(50), in_stock=True, tenant="a")
    conditions = filter_conditions(full)
    assert conditions == (
        Equals("category", "kettle"),
        Between("price", 10.0, 50.0),
        Equals("in_stock", True),
        Equals("tenant", "a"),
    )
    assert filter_conditions(SearchFilters(max_price=Decimal(50), in_stock=False)) == (
        Between("price", None, 50.0),
        Equals("in_stock", False),
    )
    qfilter = qdrant_filter(conditions)
    assert qfilter is not None and qfilter.must is not None and len(list(qfilter.must)) == 4  # type: ignore[arg-type]
    merged = SearchFilters(max_price=Decimal(50)).merged(SearchFilters(category="kettle"))
    assert (merged.category, merged.max_price) == ("kettle", Decimal(50))


def test_metrics() -> None:
    rel = {"a": 2, "b": 1}
    assert ndcg_at(["a", "b", "c"], rel) == pytest.approx(1.0)
    assert ndcg_at(["c", "b", "a"], rel) < 1.0
    assert recall_at(["x", "b"], rel, 10) == 0.5
    assert mrr_at(["x", "b"], rel) == 0.5
    assert bootstrap_ci([1.0, 0.0, 1.0, 1.0]) == bootstrap_ci([1.0, 0.0, 1.0, 1.0])


def test_labelled_queries_are_deterministic_and_cover_the_hard_cases() -> None:
    catalog = demo_catalog()
    queries = labelled_queries(catalog)
    assert [q.text for q in queries] == [q.text for q in labelled_queries(catalog)]
    assert len(queries) >= 200
    kinds = {q.kind for q in queries}
    assert {
        "name",
        "sku",
        "code",
        "misspelled",
        "attribute",
        "comparison",
        "unknown-name",
        "unknown-code",
        "unknown-type",
        "unknown-series",
    } <= kinds
    ids = {p.id for p in catalog}
    for q in queries:
        assert q.unknown == (not q.relevance)
        assert set(q.relevance) <= ids
        assert q.unknown or 2 in q.relevance.values()


def test_beir_round_trip(tmp_path: Path) -> None:
    catalog = demo_catalog()[:20]
    queries = labelled_queries(demo_catalog())[:5]
    dataset = load_beir(write_beir(queries, catalog, tmp_path / "set"))
    assert dataset.products == catalog
    assert dataset.qrels == {q.id: q.relevance for q in queries if q.relevance}
    assert dataset.query_meta[queries[0].id]["kind"] == queries[0].kind


def test_synthetic_catalog_extends_the_demo_catalog() -> None:
    products = synthetic_catalog(2_000)
    assert products[:300] == demo_catalog()
    assert len({p.id for p in products}) == len({p.name for p in products}) == 2_000


def test_query_plans() -> None:
    dense = np.ones(4, dtype=np.float32)
    terms = ([3, 7], [0.5, 1.0])

    def plan(method: Method, sparse: tuple[list[int], list[float]] = terms) -> tuple[object, ...] | None:
        found = plan_query(
            dense, sparse, method=method, limit=4, prefetch_limit=50, filters=SearchFilters(tenant="a"), with_dense=True
        )
        return None if found is None else (found.vectors, found.fusion, found.conditions)

    tenant = (Equals("tenant", "a"),)
    assert plan("dense") == (("dense",), None, tenant)
    assert plan("sparse") == (("sparse",), None, tenant)
    assert plan("rrf") == (("dense", "sparse"), "rrf", tenant)
    assert plan("dbsf") == (("dense", "sparse"), "dbsf", tenant)
    # A query of stopwords only: nothing lexical to fuse or to search.
    assert plan("dbsf", ([], [])) == (("dense",), None, tenant)
    assert plan("sparse", ([], [])) is None


def _points(count: int) -> list[PointData]:
    rng = np.random.default_rng(7)
    points = []
    for i in range(count):
        product = _product(
            id=f"P-{i}",
            name=f"Aurin Model AU-{100 + i}",
            category="Kettle" if i % 2 else "toaster",
            price=Decimal(10 + 7 * i),
            stock=None if i % 5 == 0 else i % 3,
            tenant="a" if i % 4 else "b",
        )
        dense = rng.normal(size=8).astype(np.float32)
        terms = sorted(int(t) for t in rng.choice(40, size=4, replace=False))
        weights = [float(w) for w in rng.uniform(0.2, 2.0, size=4)]
        points.append(PointData(product, dense / np.linalg.norm(dense), (terms, weights), f"hash-{i}"))
    return points


def test_both_stores_answer_the_same_plans_alike(tmp_path: Path) -> None:
    pytest.importorskip("qdrant_edge")
    from qdrant_client import QdrantClient

    points = _points(30)
    client = QdrantClient(":memory:")
    edge = EdgeCatalogStore(tmp_path)
    try:
        stores = [CatalogStore(client), edge]
        for store in stores:
            store.ensure_collection(8)
            store.upsert(points)
            store.finish_ingest()
        query = points[3].dense * 0.6 + points[11].dense * 0.4
        sparse = (points[3].sparse[0][:2] + [39], [1.0, 1.0, 1.0])
        filters: list[SearchFilters | None] = [
            None,
            SearchFilters(category="KETTLE"),
            SearchFilters(min_price=Decimal(40), max_price=Decimal(150)),
            SearchFilters(in_stock=True),
            SearchFilters(in_stock=False, tenant="a"),
        ]
        for method in METHODS:
            for where in filters:
                # Limits above the point count: fusion ties (rrf: equal rank sums) are ordered differently by the
                # two engines, so compare every match's score rather than a cut-off ranking.
                found = [
                    {h.product.id: h.score for h in store.search(query, sparse, method=method, limit=40, filters=where)}
                    for store in stores
                ]
                assert found[0] and found[0].keys() == found[1].keys(), (method, where)
                assert all(abs(found[0][i] - found[1][i]) < 1e-4 for i in found[0]), (method, where)
        with_dense = [store.search(query, sparse, method="dense", limit=1, with_dense=True)[0] for store in stores]
        assert all(h.dense is not None and np.allclose(h.dense, points[3].dense, atol=1e-5) for h in with_dense)
        codes = ["AU103", "AU111", "AU999"]
        assert [{p.id for p in store.find_codes(codes, None, 10)} for store in stores] == [{"P-3", "P-11"}] * 2
        assert [store.find_codes(codes, SearchFilters(tenant="b"), 10) for store in stores] == [[], []]
        assert stores[0].index_hashes() == stores[1].index_hashes()
        assert len(stores[0].index_hashes()) == 30
        assert sorted(stores[0].product_ids("b")) == sorted(stores[1].product_ids("b"))
        assert len(list(stores[0].product_ids("b"))) == 8
    finally:
        client.close()
        edge.close()


def test_edge_store_failures_are_store_errors(tmp_path: Path) -> None:
    pytest.importorskip("qdrant_edge")
    edge = EdgeCatalogStore(tmp_path)
    try:
        edge.ensure_collection(8)
        edge.upsert(_points(2))
        with pytest.raises(StoreError, match=r"Qdrant Edge query on 'catalog' failed: .*dimension"):
            edge.search(np.ones(4, dtype=np.float32), ([], []), method="dense")
        with pytest.raises(StoreError, match="Qdrant Edge load"):  # the shard's WAL is locked by `edge`
            EdgeCatalogStore(tmp_path)
        edge.shard.close()  # closed under the store's feet
        with pytest.raises(StoreError, match="Qdrant Edge count"):
            edge.count()
        with pytest.raises(StoreError, match="Qdrant Edge flush"):
            edge.close()
    finally:
        edge.close()
