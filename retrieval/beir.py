"""Datasets in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), and WANDS converted to it."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval.catalog import Product
from retrieval.loaders import PRESETS, Row, read_csv

WANDS_GRADES = {"Exact": 2, "Partial": 1, "Irrelevant": 0}


@dataclass
class Dataset:
    """A retrieval benchmark: documents as products, queries, graded judgements."""

    name: str
    products: list[Product]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    query_meta: dict[str, dict[str, Any]] = field(default_factory=dict)


def _product(doc: dict[str, Any]) -> Product:
    """A product from a corpus line: the full product when the metadata carries one, else title and text."""
    meta = doc.get("metadata") or {}
    if isinstance(meta.get("product"), dict):
        return Product.model_validate(meta["product"])
    text = str(doc.get("text", ""))
    title = str(doc.get("title") or "").strip() or text[:80].strip() or str(doc["_id"])
    # A BEIR corpus says nothing of category or price: they stay unknown, not "document" and 0, which would be
    # embedded with every text and shown to the model as facts.
    category = str(meta.get("category") or "").strip() or None
    return Product(id=str(doc["_id"]), name=title, category=category, description=text)


def load_beir(path: Path, split: str = "test") -> Dataset:
    """Read a BEIR-layout directory; queries without judgements are kept (their metadata may mark them)."""
    with (path / "corpus.jsonl").open(encoding="utf-8") as fh:
        products = [_product(json.loads(line)) for line in fh if line.strip()]
    queries: dict[str, str] = {}
    meta: dict[str, dict[str, Any]] = {}
    with (path / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                q = json.loads(line)
                queries[str(q["_id"])] = str(q["text"])
                meta[str(q["_id"])] = dict(q.get("metadata") or {})
    qrels: dict[str, dict[str, int]] = {}
    with (path / "qrels" / f"{split}.tsv").open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for row in reader:
            if not row or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return Dataset(path.name, products, queries, qrels, meta)


def wands_to_beir(dataset_dir: Path, out: Path) -> Path:
    """Convert WANDS (product.csv, query.csv, label.csv, tab-separated) to BEIR layout under `out`."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for row in read_csv(dataset_dir / "product.csv", PRESETS["wands"]):
            # A WANDS row without a name cannot be a product; judgements on it then count as misses.
            if isinstance(row, Row):
                doc = {
                    "_id": row.product.id,
                    "title": row.product.name,
                    "text": row.product.description,
                    "metadata": {"product": row.product.model_dump(mode="json", exclude_none=True)},
                }
                fh.write(json.dumps(doc) + "\n")
    with (
        (dataset_dir / "query.csv").open(encoding="utf-8", newline="") as src,
        (out / "queries.jsonl").open("w", encoding="utf-8") as fh,
    ):
        for q in csv.DictReader(src, delimiter="\t"):
            fh.write(
                json.dumps({"_id": q["query_id"], "text": q["query"], "metadata": {"class": q.get("query_class", "")}})
                + "\n"
            )
    with (
        (dataset_dir / "label.csv").open(encoding="utf-8", newline="") as src,
        (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as fh,
    ):
        fh.write("query-id\tcorpus-id\tscore\n")
        for label in csv.DictReader(src, delimiter="\t"):
            fh.write(f"{label['query_id']}\t{label['product_id']}\t{WANDS_GRADES[label['label']]}\n")
    return out
