"""The product schema every part of lorag shares: ingest, retrieval, facts rendering and training data."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Product(BaseModel):
    """One sellable item: only `id` and `name` are required; what the shop does not say stays None (unknown).

    Prices are decimals so that what the model is shown is exactly what the shop charges. An unknown price is
    None, never 0: the facts block then says "price not listed" instead of a false $0.00.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: NonEmpty = Field(description="The shop's stable product id or SKU.")
    name: NonEmpty
    category: NonEmpty | None = None
    price: Decimal | None = Field(default=None, ge=0, max_digits=14, decimal_places=2)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "USD"
    stock: int | None = Field(default=None, ge=0, description="Units on hand; None when the shop does not say.")
    description: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    tenant: str | None = None
    raw: dict[str, str] = Field(
        default_factory=dict, description="Original text of the fields that cleaning changed (field -> raw value)."
    )

    @field_validator("category", "price", "stock", mode="before")
    @classmethod
    def _blank_is_unknown(cls, value: object) -> object:
        # An empty cell or "" in a JSON row says nothing; it must not fail the row nor become a value.
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def in_stock(self) -> bool | None:
        """True/False when the stock count is known, None otherwise."""
        return None if self.stock is None else self.stock > 0


def content_hash(product: Product) -> str:
    """A digest of everything the shop said about the product: equal digests mean nothing to re-index."""
    # Attribute order counts on purpose: the first attributes are the ones the facts block shows the model.
    # An empty `raw` is left out so that products stored before it existed keep their digest.
    dumped = product.model_dump_json(exclude={"raw"} if not product.raw else None)
    return hashlib.sha256(dumped.encode("utf-8")).hexdigest()
