"""Per-field weighting of what the indexes see, for measuring it (`lorag bench retrieval --fields`).

Ingest indexes every field (retrieval.documents). The variants change the products before ingest, so both
indexes see the change: the name alone (descriptions dropped), or the name counted twice (written again before
the description), which doubles the name's term frequency in the lexical index.
"""

from __future__ import annotations

from collections.abc import Iterable

from retrieval.catalog import Product

FIELD_VARIANTS = ("all", "name", "name2")


def field_variant(products: Iterable[Product], variant: str) -> list[Product]:
    """The products as one of FIELD_VARIANTS indexes them."""
    if variant == "all":
        return list(products)
    if variant == "name":
        return [p.model_copy(update={"description": ""}) for p in products]
    if variant == "name2":
        return [p.model_copy(update={"description": f"{p.name}. {p.description}"}) for p in products]
    raise ValueError(f"unknown field variant {variant!r} (variants: {', '.join(FIELD_VARIANTS)})")
