"""Read a shop's export (JSONL or CSV) into products, row by row, reporting bad rows instead of stopping.

Only `id` and `name` are required (retrieval.catalog); every other field may be absent and then stays unknown.
Text is cleaned as each row becomes a product (retrieval.cleaning), the original kept in `Product.raw`.

A ColumnMapping says which column (CSV) or key (JSONL) holds which field, so a shop's export loads without code
changes; it applies to every format. With no mapping, columns or keys named like the fields are used (id, name,
category, price, currency, stock, description, tenant; JSONL also `attributes`) and every `attr:<key>` column
becomes attribute <key>. A mapping naming a field that does not exist is refused when it is loaded. A mapping
file (YAML or JSON) looks like::

    delimiter: "\\t"
    columns: {id: product_id, name: product_name, category: product_class, description: product_description}
    attribute_columns: [category_hierarchy]      # each becomes an attribute named after its column
    features: {column: product_features, item_separator: "|", pair_separator: ":"}
    defaults: {currency: EUR}     # used when a column is absent or its cell empty

A default price of 0 for a catalog without prices would be a false fact; leave the price out instead and the
facts block says "price not listed". `--preset wands` is the mapping for the WANDS product.csv layout.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from retrieval.catalog import Product
from retrieval.cleaning import clean_row

FIELDS = ("id", "name", "category", "price", "currency", "stock", "description", "tenant")
ATTRIBUTE_PREFIX = "attr:"


class FeaturesColumn(BaseModel):
    """One column packing many attributes, e.g. 'color:red|material:oak'."""

    model_config = ConfigDict(extra="forbid")

    column: str
    item_separator: str = "|"
    pair_separator: str = ":"


class ColumnMapping(BaseModel):
    """How a CSV export's columns map onto Product fields."""

    model_config = ConfigDict(extra="forbid")

    delimiter: str = ","
    columns: dict[str, str] = Field(default_factory=dict, description="Product field -> column name.")
    attribute_columns: list[str] = Field(default_factory=list)
    features: FeaturesColumn | None = None
    defaults: dict[str, str] = Field(default_factory=dict, description="Product field -> value if the cell is empty.")

    @field_validator("columns", "defaults")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(FIELDS))
        if unknown:
            raise ValueError(f"no product field {', '.join(unknown)} (fields: {', '.join(FIELDS)})")
        return value

    def column_for(self, field: str) -> str:
        """The column holding `field` (the field's own name unless mapped)."""
        return self.columns.get(field, field)


PRESETS: dict[str, ColumnMapping] = {
    "wands": ColumnMapping(
        delimiter="\t",
        columns={
            "id": "product_id",
            "name": "product_name",
            "category": "product_class",
            "description": "product_description",
        },
        attribute_columns=["category_hierarchy"],
        features=FeaturesColumn(column="product_features", item_separator="|", pair_separator=":"),
    ),
}


def load_mapping(path: Path) -> ColumnMapping:
    """A ColumnMapping from a YAML or JSON file."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return ColumnMapping.model_validate(data)


@dataclass(frozen=True)
class RowError:
    """A row that could not become a product, with the line it started on."""

    line: int
    message: str
    product_id: str | None = None  # when the id itself was readable, so prune keeps the stored product

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class Row:
    """A product read from the file, with the line it started on."""

    line: int
    product: Product


def _describe(exc: ValidationError) -> str:
    """'field price: Input should be greater than or equal to 0 (got -3)' for each failing field."""
    parts = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "row"
        shown = err["type"] != "missing" and not isinstance(err["input"], dict)
        got = f" (got {err['input']!r})" if shown else ""
        parts.append(f"field {field}: {err['msg']}{got}")
    return "; ".join(parts)


def _validate(line: int, data: dict[str, Any]) -> Row | RowError:
    raw_id = data.get("id")
    product_id = raw_id.strip() if isinstance(raw_id, str) and raw_id.strip() else None
    try:
        return Row(line, Product.model_validate(clean_row(data)))
    except ValidationError as exc:
        return RowError(line, _describe(exc), product_id)


def read_jsonl(path: Path, mapping: ColumnMapping | None = None) -> Iterator[Row | RowError]:
    """Products of a JSON-lines file, mapped key by key when a mapping is given; blank lines are skipped."""
    with path.open(encoding="utf-8") as fh:
        for line_no, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RowError(line_no, f"invalid JSON: {exc.msg} at column {exc.colno}")
                continue
            if not isinstance(data, dict):
                yield RowError(line_no, f"expected a JSON object, got {type(data).__name__}")
                continue
            yield _validate(line_no, _object_data(data, mapping) if mapping else data)


def _object_data(obj: dict[str, Any], mapping: ColumnMapping) -> dict[str, Any]:
    """A JSON object's product fields through a mapping: scalars as text, so both formats map alike."""
    record = {k: None if v is None else v if isinstance(v, str) else json.dumps(v) for k, v in obj.items()}
    data = _row_data(record, mapping)
    if isinstance(obj.get("attributes"), dict):
        data["attributes"] = {**{str(k): str(v) for k, v in obj["attributes"].items()}, **data["attributes"]}
    return data


def _cell(record: dict[str, str | None], column: str) -> str | None:
    value = record.get(column)
    return value.strip() if value is not None and value.strip() else None


def _row_data(record: dict[str, str | None], mapping: ColumnMapping) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for field in FIELDS:
        value = _cell(record, mapping.column_for(field))
        if value is None:
            value = mapping.defaults.get(field)
        if value is not None:
            data[field] = value
    attributes: dict[str, str] = {}
    for column in mapping.attribute_columns:
        value = _cell(record, column)
        if value is not None:
            attributes[column] = value
    for column in record:
        if column and column.startswith(ATTRIBUTE_PREFIX) and (value := _cell(record, column)) is not None:
            attributes[column[len(ATTRIBUTE_PREFIX) :].strip()] = value
    if mapping.features and (packed := _cell(record, mapping.features.column)):
        for item in packed.split(mapping.features.item_separator):
            key, sep, value = item.partition(mapping.features.pair_separator)
            if sep and key.strip() and value.strip():
                attributes[key.strip()] = value.strip()
    data["attributes"] = attributes
    return data


def read_csv(path: Path, mapping: ColumnMapping | None = None) -> Iterator[Row | RowError]:
    """Products of a CSV/TSV export, mapped column by column."""
    mapping = mapping or ColumnMapping()
    # Descriptions in real exports exceed csv's 128 KiB default field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=mapping.delimiter)
        header = reader.fieldnames or []
        missing = [mapping.column_for(f) for f in ("id", "name") if mapping.column_for(f) not in header]
        if missing:
            yield RowError(1, f"header has no column {', '.join(missing)} (columns: {', '.join(header)})")
            return
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield RowError(start, f"unreadable CSV: {exc}")
                return
            if None in record:
                cells = len(header) + len(record[None] or [])
                yield RowError(start, f"{cells} cells for {len(header)} columns")
                continue
            yield _validate(start, _row_data(record, mapping))


def read_catalog(path: Path, mapping: ColumnMapping | None = None) -> Iterator[Row | RowError]:
    """Rows of a catalog file: JSONL by extension (.jsonl/.ndjson), CSV/TSV otherwise."""
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        return read_jsonl(path, mapping)
    if mapping is None and path.suffix.lower() == ".tsv":
        mapping = ColumnMapping(delimiter="\t")
    return read_csv(path, mapping)
