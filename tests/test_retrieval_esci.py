"""The ESCI sample and its loader, the client-side fusions and the per-field variants the benchmark measures."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from retrieval.beir import load_beir
from retrieval.catalog import Product
from retrieval.esci import GRADES, HELDOUT, SAMPLE, esci_to_beir
from retrieval.fields import field_variant
from retrieval.fusion import dbsf_normalise, sparse_first, weighted_dbsf


def test_sample_converts_with_grades_and_unknown_marks(tmp_path: Path) -> None:
    with SAMPLE.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    dataset = load_beir(esci_to_beir(SAMPLE, tmp_path / "esci"))
    assert len(dataset.products) == len({r["product_id"] for r in rows}) == 200
    assert len(dataset.queries) == 200
    by_query = {r["query_id"]: r for r in rows}
    for qid, judged in dataset.qrels.items():
        row = by_query[qid]
        assert judged == {row["product_id"]: GRADES[row["esci_label"]]}
        # Only an Exact judgement says the catalog holds what was asked for.
        assert dataset.query_meta[qid] == ({"unknown": False} if row["esci_label"] == "Exact" else {})
    exact = sum(1 for r in rows if r["esci_label"] == "Exact")
    assert sum("unknown" in m for m in dataset.query_meta.values()) == exact == 138


def test_halves_turn_the_left_out_queries_into_real_questions_about_missing_products(tmp_path: Path) -> None:
    path = tmp_path / "esci.csv"
    head = "query,query_id,product_id,product_locale,esci_label,product_title\n"
    rows = ["kettle,1,P1,us,E,Steel Kettle", "kettle,1,P2,us,E,Glass Kettle", "mug,2,P3,us,E,Blue Mug"]
    rows += ["mug,2,P1,us,I,Steel Kettle", "tray,3,P4,us,S,Oak Tray"]
    path.write_text(head + "\n".join(rows) + "\n")
    even = load_beir(esci_to_beir(path, tmp_path / "h0", half=0))
    # Queries 1 and 3 are kept with every product judged for them; query 2's Exact product went with its half.
    assert sorted(p.id for p in even.products) == ["P1", "P2", "P4"]
    assert even.query_meta == {"1": {"unknown": False}, "2": {"unknown": True}, "3": {}}
    assert even.qrels == {"1": {"P1": 3, "P2": 3}, "2": {"P1": 0}, "3": {"P4": 2}}
    odd = load_beir(esci_to_beir(path, tmp_path / "h1", half=1))
    assert sorted(p.id for p in odd.products) == ["P1", "P3"]
    assert odd.query_meta == {"1": {"unknown": False}, "2": {"unknown": False}, "3": {}}


def test_heldout_extract_reads_one_letter_labels_and_shares_nothing_with_the_sample(tmp_path: Path) -> None:
    heldout = load_beir(esci_to_beir(HELDOUT, tmp_path / "heldout"))
    sample = load_beir(esci_to_beir(SAMPLE, tmp_path / "sample"))
    assert (len(heldout.products), len(heldout.queries)) == (485, 50)
    assert all(m == {"unknown": False} for m in heldout.query_meta.values())  # every row is an Exact match
    assert not set(heldout.queries.values()) & set(sample.queries.values())
    assert not {p.id for p in heldout.products} & {p.id for p in sample.products}


def test_sample_products_keep_text_without_markup(tmp_path: Path) -> None:
    dataset = load_beir(esci_to_beir(SAMPLE, tmp_path / "esci"))
    koala = next(p for p in dataset.products if p.id == "B01LVWQY6K")
    assert koala.name.startswith("Mama Koala One Size Baby Washable")
    assert koala.attributes == {"brand": "Mama Koala", "color": "Jagger"}
    assert "Product Details" in koala.description and "<b>" not in koala.description
    assert "NO LEAKS" in koala.description  # bullet points are part of the description
    assert all(p.price is None and p.category is None for p in dataset.products)  # ESCI says neither


def test_other_locales_and_untitled_products_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "esci.csv"
    head = "query,query_id,product_id,product_locale,esci_label,product_title,product_description\n"
    path.write_text(
        head
        + "kettle,1,P1,us,Exact,Steel Kettle,&lt;b&gt;\n"
        + "kettle,1,P2,es,Exact,Hervidor,\n"
        + "mug,2,P3,us,Substitute,,\n"
        + "mug,2,P1,us,Irrelevant,Steel Kettle,\n"
    )
    dataset = load_beir(esci_to_beir(path, tmp_path / "out"))
    assert [p.id for p in dataset.products] == ["P1"]
    assert dataset.qrels == {"1": {"P1": 3}, "2": {"P1": 0}}
    assert dataset.query_meta == {"1": {"unknown": False}, "2": {}}


def test_dbsf_normalise_matches_mean_three_sigma() -> None:
    assert dbsf_normalise([]) == []
    assert dbsf_normalise([0.7]) == [0.5]
    assert dbsf_normalise([2.0, 2.0]) == [0.5, 0.5]
    low, mid, high = dbsf_normalise([1.0, 2.0, 3.0])  # mean 2, sample sd 1: limits -1 and 5
    assert (low, mid, high) == pytest.approx((2 / 6, 0.5, 4 / 6))
    # Not clamped: a lone outlier keeps its lead over the rest, as in the store's fusion.
    assert dbsf_normalise([10.0] + [1.0] * 99)[0] > 1.0


def test_weighted_dbsf_at_half_ranks_as_the_stores_dbsf() -> None:
    from qdrant_client.http import models
    from qdrant_client.hybrid.fusion import distribution_based_score_fusion

    dense = [("a", 0.91), ("b", 0.85), ("c", 0.42), ("d", 0.40)]
    sparse = [("c", 14.0), ("e", 3.1), ("a", 2.9), ("f", 2.0)]

    def points(side: list[tuple[str, float]]) -> list[models.ScoredPoint]:
        ids = {k: i for i, k in enumerate("abcdef")}
        return [models.ScoredPoint(id=ids[k], version=0, score=s) for k, s in side]

    fused = distribution_based_score_fusion([points(dense), points(sparse)], limit=10)
    assert ["abcdef"[int(p.id)] for p in fused] == weighted_dbsf(dense, sparse, 0.5)


def test_weighted_dbsf_ends_are_the_single_lists() -> None:
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.1)]
    sparse = [("c", 12.0), ("d", 11.0), ("a", 1.0)]
    assert weighted_dbsf(dense, sparse, 1.0)[:3] == ["a", "b", "c"]
    assert weighted_dbsf(dense, sparse, 0.0)[:3] == ["c", "d", "a"]
    # In between, a product both lists rank well beats one only a single list found.
    both = [("a", 0.9), ("b", 0.5), ("c", 0.4)]
    assert weighted_dbsf(both, [("a", 5.0), ("c", 4.0), ("e", 3.0)], 0.5)[0] == "a"


def test_sparse_first_breaks_ties_by_similarity_and_appends_dense() -> None:
    sparse = [("a", 2.0), ("b", 2.0), ("c", 1.0)]
    dense = [("x", 0.9), ("b", 0.8), ("a", 0.1)]
    order = sparse_first(sparse, dense, {"a": 0.1, "b": 0.8, "c": 0.5, "x": 0.9})
    assert order == ["b", "a", "c", "x"]


def test_field_variants() -> None:
    product = Product(id="K1", name="Steel Kettle", description="Boils fast.")
    assert field_variant([product], "all") == [product]
    assert field_variant([product], "name")[0].description == ""
    assert field_variant([product], "name2")[0].description == "Steel Kettle. Boils fast."
    with pytest.raises(ValueError, match="unknown field variant"):
        field_variant([product], "brand")


def test_unknown_table_reports_false_flags_on_real_products() -> None:
    from retrieval.unknown_eval import UnknownCase, unknown_table

    cases = [
        UnknownCase(False, True, "generic", 0.3, False, text="ipek", reason="no hit", judged="Baby Wipes | 6 Pack"),
        UnknownCase(truth=False, predicted=False, path="generic", best_similarity=0.6, names_category=False),
        UnknownCase(truth=True, predicted=True, path="name", best_similarity=0.2, names_category=False),
        UnknownCase(True, False, "generic", 0.5, False, named=True, text="a toaster", top="Toast Rack"),
    ]
    table = unknown_table(cases, 0.45)
    assert "False flags on questions about products the catalog holds: 1/2 = 50.0%" in table
    assert "| all | 0.500 | 0.500 | 1 | 1 | 1 |" in table
    # The wrong verdicts are listed with what a reader needs to judge them (the label's product, the first hit).
    assert "| ipek | no hit | Baby Wipes / 6 Pack |" in table
    assert "| a toaster | generic | Toast Rack |" in table
    # A hit named like the question keeps a generic question off the list at every threshold.
    assert "| 0.55 | 0.000 | 0.000 | 1 | 1 |" in table


def test_judged_product_names_the_best_graded_and_counts_ties() -> None:
    from retrieval.beir import Dataset
    from retrieval.unknown_eval import judged_name as _judged

    products = [Product(id="P1", name="Watch"), Product(id="P2", name="Sport Shirt"), Product(id="P3", name="Tee")]
    data = Dataset("d", products, {"q": "poleras", "m": "toaster"}, {"q": {"P1": 3, "P2": 3, "P3": 2}, "m": {}})
    assert _judged(data, "q") == "Watch (+1 more)"
    assert _judged(data, "m") == ""  # a question about a product the catalog lacks


def test_unknown_table_says_when_its_list_is_cut() -> None:
    from retrieval.unknown_eval import LISTED, UnknownCase, unknown_table

    cases = [UnknownCase(False, True, "generic", 0.2, False, text=f"q{i}") for i in range(LISTED + 1)]
    table = unknown_table(cases, 0.45)
    assert f"Flagged though the catalog holds them (first {LISTED} of {LISTED + 1})" in table
    assert f"| q{LISTED - 1} |" in table and f"| q{LISTED} |" not in table
