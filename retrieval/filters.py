"""Search filters and their translation to Qdrant payload conditions."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from qdrant_client import models

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


def to_qdrant(filters: SearchFilters | None) -> models.Filter | None:
    """The Qdrant filter for `filters` (None when nothing is constrained)."""
    from qdrant_client import models

    if filters is None:
        return None
    must: list[models.Condition] = []
    if filters.category is not None:
        category = models.MatchValue(value=filters.category.lower())
        must.append(models.FieldCondition(key=CATEGORY, match=category))
    if filters.min_price is not None or filters.max_price is not None:
        must.append(
            models.FieldCondition(
                key=PRICE,
                range=models.Range(
                    gte=float(filters.min_price) if filters.min_price is not None else None,
                    lte=float(filters.max_price) if filters.max_price is not None else None,
                ),
            )
        )
    if filters.in_stock is not None:
        must.append(models.FieldCondition(key=IN_STOCK, match=models.MatchValue(value=filters.in_stock)))
    if filters.tenant is not None:
        must.append(models.FieldCondition(key=TENANT, match=models.MatchValue(value=filters.tenant)))
    return models.Filter(must=must) if must else None
