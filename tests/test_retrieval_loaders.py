"""Catalog loaders: JSONL and mapped CSV, bad rows reported by line and field, WANDS to BEIR."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from retrieval.beir import load_beir, wands_to_beir
from retrieval.loaders import PRESETS, Row, RowError, load_mapping, read_catalog


def _split(rows: list[Row | RowError]) -> tuple[list[Row], list[RowError]]:
    return [r for r in rows if isinstance(r, Row)], [r for r in rows if isinstance(r, RowError)]


def test_jsonl_bad_rows_name_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    good = {"id": "A-1", "name": "Kettle One", "category": "kettle", "price": "20.00"}
    path.write_text(
        "\n".join(
            [
                json.dumps(good),
                "{not json",
                json.dumps({**good, "id": "A-2", "price": "-3"}),
                "",
                json.dumps({"id": "A-3", "category": "kettle", "price": "1"}),
                json.dumps({**good, "id": "A-4"}),
            ]
        )
        + "\n"
    )
    rows, errors = _split(list(read_catalog(path)))
    assert [r.product.id for r in rows] == ["A-1", "A-4"]
    assert [r.line for r in rows] == [1, 6]
    assert [e.line for e in errors] == [2, 3, 5]
    assert "invalid JSON" in errors[0].message
    assert str(errors[1]).startswith("line 3: field price:") and "-3" in errors[1].message
    assert errors[1].product_id == "A-2"
    assert "field name: Field required" in errors[2].message


def test_csv_default_mapping_with_attribute_columns(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "id,name,category,price,stock,description,attr:color,attr:capacity\n"
        'K-1,Kettle One,kettle,24.50,3,"Pours well, heats fast",black,1.0 L\n'
        "K-2,Kettle Two,kettle,abc,,,white,\n"
        "K-3,Kettle Three,kettle,30,0,,white,0.6 L,extra\n"
        "K-4,Kettle Four,kettle,31,,,,\n"
    )
    rows, errors = _split(list(read_catalog(path)))
    assert [r.product.id for r in rows] == ["K-1", "K-4"]
    first = rows[0].product
    assert first.price == Decimal("24.50") and first.stock == 3
    assert first.attributes == {"color": "black", "capacity": "1.0 L"}
    assert first.description == "Pours well, heats fast"
    assert rows[1].product.stock is None and rows[1].product.attributes == {}
    found = [(e.line, e.message.split(":")[0]) for e in errors]
    assert found == [(3, "field price"), (4, "9 cells for 8 columns")]


def test_csv_mapping_file(tmp_path: Path) -> None:
    (tmp_path / "map.yaml").write_text(
        'delimiter: ";"\n'
        "columns: {id: sku, name: title, category: type, price: cost_eur}\n"
        "defaults: {currency: EUR}\n"
        "attribute_columns: [brand]\n"
    )
    (tmp_path / "shop.csv").write_text("sku;title;type;cost_eur;brand\nX-9;Grinder;coffee grinder;99.9;Brennt\n")
    rows, errors = _split(list(read_catalog(tmp_path / "shop.csv", load_mapping(tmp_path / "map.yaml"))))
    assert not errors
    product = rows[0].product
    assert (product.id, product.currency, product.attributes) == ("X-9", "EUR", {"brand": "Brennt"})


def test_csv_missing_id_column_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("sku,name\n1,a\n")
    rows, errors = _split(list(read_catalog(tmp_path / "c.csv")))
    assert not rows and errors[0].line == 1 and "no column id" in errors[0].message


WANDS_PRODUCTS = (
    "product_id\tproduct_name\tproduct_class\tcategory_hierarchy\tproduct_description\tproduct_features\t"
    "rating_count\taverage_rating\treview_count\n"
    "0\tsolid wood platform bed\tBeds\tFurniture / Bedroom Furniture / Beds\tgood bed\t"
    "overallwidth-sidetoside:64.7|dsprimaryproductstyle:modern|color:brown\t15\t4.5\t15\n"
    "1\tall-clad 7 qt . slow cooker\t\tKitchen / Small Appliances\t\tcapacity:7 qt\t\t\t\n"
    "2\t\tBeds\t\t\t\t\t\t\n"
)


def test_wands_preset_reads_the_wands_layout(tmp_path: Path) -> None:
    (tmp_path / "product.csv").write_text(WANDS_PRODUCTS)
    rows, errors = _split(list(read_catalog(tmp_path / "product.csv", PRESETS["wands"])))
    bed, cooker = rows[0].product, rows[1].product
    assert bed.attributes["dsprimaryproductstyle"] == "modern" and bed.attributes["color"] == "brown"
    assert bed.attributes["category_hierarchy"].startswith("Furniture")
    # WANDS has no prices and some rows no class: unknown, never an invented 0 or "uncategorized".
    assert bed.price is None and bed.category == "Beds"
    assert cooker.category is None
    assert [e.line for e in errors] == [4] and "field name" in errors[0].message


def test_wands_to_beir(tmp_path: Path) -> None:
    src = tmp_path / "wands"
    src.mkdir()
    (src / "product.csv").write_text(WANDS_PRODUCTS)
    (src / "query.csv").write_text("query_id\tquery\tquery_class\n0\tmodern bed\tBeds\n1\tslow cooker\tCookers\n")
    (src / "label.csv").write_text(
        "id\tquery_id\tproduct_id\tlabel\n0\t0\t0\tExact\n1\t0\t1\tIrrelevant\n2\t1\t1\tPartial\n"
    )
    dataset = load_beir(wands_to_beir(src, tmp_path / "beir"))
    assert [p.id for p in dataset.products] == ["0", "1"]
    assert dataset.queries == {"0": "modern bed", "1": "slow cooker"}
    assert dataset.qrels == {"0": {"0": 2, "1": 0}, "1": {"1": 1}}
