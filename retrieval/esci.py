"""Amazon's Shopping Queries Dataset (ESCI) in BEIR layout, and the sample of it that ships with lorag.

ESCI judges (query, product) pairs as Exact, Substitute, Complement or Irrelevant. Its two parquet files are far
too large to ship; their join (one row per judged pair, with the product's title, description, bullet points,
brand and colour) is what people extract, and that is the layout read here. `SAMPLE` is 200 such rows of the
US locale (retrieval/data/esci_sample/README.md says where they come from and under which licence).

Grades follow the usual ESCI gains (E 3, S 2, C 1, I 0). A query judged Exact for a product of the corpus has a
real match in the catalog, so its metadata says `unknown: false`: the unknown-product signal must not flag it.
Queries judged only Substitute, Complement or Irrelevant say nothing either way and carry no `unknown` key.

ESCI has no questions about products a shop lacks, and a threshold set on generated fakes says nothing about real
ones. `half` (0 or 1) keeps only the products judged for every other query (in order of first appearance): the
other queries, their Exact products left out, become real questions about products the catalog does not hold
(`unknown: true`), beside the kept half's. The catalog being a random draw of Amazon, the products left are rarely
a match for a query of the other half.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

from retrieval.catalog import Product
from retrieval.cleaning import clean_row

SAMPLE = Path(__file__).parent / "data" / "esci_sample" / "examples_products.csv"
# 50 other queries with all their Exact products (retrieval/data/esci_heldout/README.md): nothing was tuned on it.
HELDOUT = Path(__file__).parent / "data" / "esci_heldout" / "examples_products.csv"
GRADES = {"Exact": 3, "Substitute": 2, "Complement": 1, "Irrelevant": 0}
# Extracts made straight from the parquet files keep ESCI's one-letter labels.
LABELS = {**GRADES, **{label[0]: grade for label, grade in GRADES.items()}}
# ESCI descriptions are HTML fragments ("<b>Product Details</b> <br/>"); tags are markup, not product words.
_TAG = re.compile(r"<[^>]+>")


def _text(value: str | None) -> str:
    return _TAG.sub(" ", value or "")


def esci_product(row: dict[str, str]) -> Product:
    """A product from one ESCI row: title as name, description and bullet points as description; brand and
    colour as attributes. ESCI has no category, price or stock: they stay unknown."""
    description = " ".join(p for p in (_text(row.get("product_description")), row.get("product_bullet_point")) if p)
    attributes = {k: v.strip() for k in ("brand", "color") if (v := row.get(f"product_{k}") or "").strip()}
    data: dict[str, Any] = {
        "id": row["product_id"],
        "name": row["product_title"],
        "description": description,
        "attributes": attributes,
    }
    return Product.model_validate(clean_row(data))


def esci_to_beir(path: Path, out: Path, locale: str = "us", half: int | None = None) -> Path:
    """Convert an ESCI examples-with-products CSV to BEIR layout under `out` (one locale; products deduplicated);
    with `half`, only every other product is kept (see the module's docstring)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    products: dict[str, Product] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("product_locale", locale) != locale or not (row.get("product_title") or "").strip():
                continue  # a judged product without a title cannot be searched for; its judgement is dropped
            product = products.setdefault(row["product_id"], esci_product(row))
            queries[row["query_id"]] = row["query"]
            qrels.setdefault(row["query_id"], {})[product.id] = LABELS[row["esci_label"]]
    exact = {qid: {d for d, g in judged.items() if g == GRADES["Exact"]} for qid, judged in qrels.items()}
    if half is not None:
        asked = {d for i, judged in enumerate(qrels.values()) if i % 2 == half for d in judged}
        products = {k: p for k, p in products.items() if k in asked}
        qrels = {q: kept for q, judged in qrels.items() if (kept := {d: g for d, g in judged.items() if d in products})}
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for p in products.values():
            doc = {"_id": p.id, "title": p.name, "text": p.description}
            fh.write(json.dumps({**doc, "metadata": {"product": p.model_dump(mode="json", exclude_none=True)}}) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid, text in queries.items():
            meta = {"unknown": not exact[qid] & products.keys()} if exact[qid] else {}
            fh.write(json.dumps({"_id": qid, "text": text, "metadata": meta}) + "\n")
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in qrels.items():
            for doc_id, grade in judged.items():
                fh.write(f"{qid}\t{doc_id}\t{grade}\n")
    return out
