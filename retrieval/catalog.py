"""The product schema every part of lorag shares: ingest, retrieval, facts rendering and training data."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Product(BaseModel):
    """One sellable item. Prices are decimals so that what the model is shown is exactly what the shop charges."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: NonEmpty = Field(description="The shop's stable product id or SKU.")
    name: NonEmpty
    category: NonEmpty
    price: Decimal = Field(ge=0, max_digits=14, decimal_places=2)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "USD"
    stock: int | None = Field(default=None, ge=0, description="Units on hand; None when the shop does not say.")
    description: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    tenant: str | None = None

    @property
    def in_stock(self) -> bool | None:
        """True/False when the stock count is known, None otherwise."""
        return None if self.stock is None else self.stock > 0


def content_hash(product: Product) -> str:
    """A digest of everything the shop said about the product: equal digests mean nothing to re-index."""
    # Attribute order counts on purpose: the first attributes are the ones the facts block shows the model.
    return hashlib.sha256(product.model_dump_json().encode("utf-8")).hexdigest()
