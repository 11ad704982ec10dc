"""The fast path for large catalogs on CPU: a static embedder distilled from MiniLM and the Qdrant Edge store.

Real model2vec distillation of the bundled MiniLM, real Qdrant Edge shards, driven through the `lorag catalog`
command line as a user would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lorag.cli import main
from retrieval.demo_catalog import demo_catalog, write_demo_catalog
from retrieval.embedder import Embedder
from retrieval.settings import RetrievalSettings
from retrieval.store import StoreError, open_store

# A real distillation (~30 s on 2 cores) and real shards: the integration tier.
pytestmark = pytest.mark.integration

CATALOG = demo_catalog()


@pytest.fixture(scope="module")
def static_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("embedder") / "minilm-static"
    assert main(["catalog", "distill-embedder", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def edge(static_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Command-line options of an Edge store holding the demo catalog, embedded with the static model."""
    root = tmp_path_factory.mktemp("edge")
    options = ["--store", "edge", "--qdrant-path", str(root / "store"), "--embedding-model", str(static_model)]
    catalog = write_demo_catalog(root / "demo.jsonl")
    assert main(["catalog", "ingest", str(catalog), "--quiet", *options]) == 0
    return options


def _search(question: str, options: list[str], capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    capsys.readouterr()
    assert main(["catalog", "search", question, "--json", *extra, *options]) == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


def test_static_model_embeds_like_a_sentence_model(static_model: Path) -> None:
    embedder = Embedder(str(static_model))
    vectors = embedder.embed(["espresso machine with steam wand", "espresso maker with a milk frother", "tax form"])
    assert vectors.shape == (3, embedder.dimension) and embedder.dimension == 256
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.1


@pytest.mark.parametrize("index", [0, 123, 299])
def test_edge_search_returns_the_named_product_first(
    edge: list[str], capsys: pytest.CaptureFixture[str], index: int
) -> None:
    product = CATALOG[index]
    for question in (f"How much is the {product.name}?", f"Is {product.id} in stock?"):
        result = _search(question, edge, capsys)
        hits = result["hits"]
        assert isinstance(hits, list) and hits[0]["id"] == product.id, question
        assert result["unknown"] is False


def test_edge_signals_an_unknown_product(edge: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _search("How much is the Vellora Crema V-999?", edge, capsys)["unknown"] is True


def test_edge_filters(edge: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    result = _search("a grinder for espresso", edge, capsys, "--top-k", "10", "--max-price", "200", "--in-stock")
    hits = result["hits"]
    assert isinstance(hits, list) and hits
    for hit in hits:
        product = hit["product"]
        assert float(product["price"]) <= 200 and product["stock"] > 0
    hits = _search("a grinder for espresso", edge, capsys, "--top-k", "10", "--out-of-stock")["hits"]
    assert isinstance(hits, list) and hits and all(hit["product"]["stock"] == 0 for hit in hits)


def test_edge_reingest_skips_unchanged_and_prunes(
    static_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--store", "edge", "--qdrant-path", str(tmp_path / "store"), "--embedding-model", str(static_model)]
    catalog = write_demo_catalog(tmp_path / "demo.jsonl", count=40)
    assert main(["catalog", "ingest", str(catalog), "--quiet", *options]) == 0
    assert "added 40, updated 0, unchanged 0, deleted 0" in capsys.readouterr().out
    assert main(["catalog", "ingest", str(catalog), "--quiet", *options]) == 0
    assert "added 0, updated 0, unchanged 40, deleted 0" in capsys.readouterr().out
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("".join(catalog.read_text().splitlines(keepends=True)[:30]))
    assert main(["catalog", "ingest", str(fewer), "--prune", "--quiet", *options]) == 0
    assert "added 0, updated 0, unchanged 30, deleted 10" in capsys.readouterr().out


def test_edge_is_embedded_only() -> None:
    with pytest.raises(StoreError, match="unset LORAG_QDRANT_URL"):
        open_store(RetrievalSettings(store="edge", qdrant_url="http://127.0.0.1:9"))
