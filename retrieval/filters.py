"""Search filters and the payload keys they read (store_base turns them into store conditions)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Payload keys the store indexes and the filters read. Category is stored lowercased so that a filter for
# "Kettle" finds "kettle"; the product itself keeps the shop's spelling.
CATEGORY = "category"
PRICE = "price"
IN_STOCK = "in_stock"
TENANT = "tenant"
CODES = "codes"
PRODUCT_ID = "product_id"


class SearchFilters(BaseModel):
    """Constraints every returned product must meet; None means 'any'."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: str | None = None
    min_price: Decimal | None = Field(default=None, ge=0)
    max_price: Decimal | None = Field(default=None, ge=0)
    in_stock: bool | None = Field(default=None, description="True: stock > 0; False: out of stock.")
    tenant: str | None = None

    @model_validator(mode="after")
    def _price_range(self) -> SearchFilters:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError(f"min_price {self.min_price} is above max_price {self.max_price}")
        return self

    def merged(self, other: SearchFilters | None) -> SearchFilters:
        """These filters with `other`'s set fields taking precedence."""
        if other is None:
            return self
        return self.model_copy(update=other.model_dump(exclude_none=True))
