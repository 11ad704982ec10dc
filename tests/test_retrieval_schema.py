"""Real catalogs: title-only rows, mappings for every format, text cleaning and honest facts blocks."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from retrieval.catalog import Product, content_hash
from retrieval.cleaning import clean_text
from retrieval.facts import render_facts, render_product
from retrieval.loaders import ColumnMapping, Row, RowError, load_mapping, read_catalog


def _rows(path: Path, mapping: ColumnMapping | None = None) -> tuple[list[Product], list[RowError]]:
    out = list(read_catalog(path, mapping))
    return [r.product for r in out if isinstance(r, Row)], [r for r in out if isinstance(r, RowError)]


def test_title_only_jsonl_ingests_with_zero_rejects(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text("\n".join(json.dumps({"id": str(i), "name": f"Shower pan {i}"}) for i in range(50)) + "\n")
    products, errors = _rows(path)
    assert errors == [] and len(products) == 50
    assert products[0].price is None and products[0].category is None and products[0].stock is None


def test_unknown_fields_render_as_unknown_never_as_zero() -> None:
    line = render_product(Product(id="100001", name="Simpson Strong-Tie 12-Gauge Angle"))
    assert line == "Simpson Strong-Tie 12-Gauge Angle (SKU 100001) | price not listed | stock unknown"
    assert "$0" not in render_facts([Product(id="1", name="x", price=None)])


def test_a_fully_known_product_renders_as_before() -> None:
    p = Product(id="V-520", name="Velora V-520", category="espresso machine", price=Decimal("349"), stock=3)
    assert render_product(p) == "Velora V-520 (SKU V-520) | espresso machine | price $349.00 | in stock (3 units)"


def test_blank_values_are_unknown_not_errors() -> None:
    p = Product.model_validate({"id": "1", "name": "Lamp", "category": " ", "price": "", "stock": ""})
    assert (p.category, p.price, p.stock) == (None, None, None)
    with pytest.raises(ValidationError):
        Product.model_validate({"id": "1", "name": "Lamp", "price": "-1"})


def test_jsonl_mapping_renames_keys_and_fills_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"sku": "A1", "title": "Kettle", "cost": 12.5, "attributes": {"color": "red"}}) + "\n")
    mapping = ColumnMapping(columns={"id": "sku", "name": "title", "price": "cost"}, defaults={"currency": "EUR"})
    (product,), errors = _rows(path, mapping)
    assert errors == []
    assert (product.id, product.name, product.price, product.currency) == ("A1", "Kettle", Decimal("12.5"), "EUR")
    assert product.attributes == {"color": "red"}


def test_a_mapping_naming_an_unknown_field_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("columns: {title: product_title}\n")
    with pytest.raises(ValidationError, match="no product field title"):
        load_mapping(tmp_path / "m.yaml")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Bath &amp; Shower Caddy", "Bath & Shower Caddy"),
        ("Bath &amp;amp; Shower", "Bath & Shower"),
        ("CafÃ© Table", "Café Table"),
        ("Itâ€™s a 3â€³ hook", "It’s a 3″ hook"),
        ("Tab\there\x00 and\u200b  spaces\n", "Tab here and spaces"),
        ("Plain 48 in. x 34 in. Shower Pan", "Plain 48 in. x 34 in. Shower Pan"),
        ("Ångström café", "Ångström café"),  # correct accents are left alone
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_ingest_cleans_text_and_keeps_the_raw_value(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv"
    path.write_text("id\tname\n1\tGE Cook Top &amp; Grill\n2\tPlain Title\n")
    (dirty, plain), errors = _rows(path)
    assert errors == []
    assert dirty.name == "GE Cook Top & Grill" and dirty.raw == {"name": "GE Cook Top &amp; Grill"}
    assert plain.raw == {}
    assert "&amp;" not in render_product(dirty)


def test_products_without_raw_keep_their_content_hash() -> None:
    p = Product(id="1", name="Lamp", category="lamp", price=Decimal("10"))
    # The digest of a product stored before `raw` existed: model_dump_json without the field.
    legacy = '{"id":"1","name":"Lamp","category":"lamp","price":"10","currency":"USD","stock":null,'
    legacy += '"description":"","attributes":{},"tenant":null}'
    assert content_hash(p) == hashlib.sha256(legacy.encode()).hexdigest()
