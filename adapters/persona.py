"""How one assistant speaks in its training answers: the voice of a fine-tuning dataset.

Every answer quotes price and stock exactly as the facts block renders them (retrieval.facts), so fact accuracy is
checkable by string match; refusals share `refusal_mark` and never quote a price.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from retrieval.catalog import Product
from retrieval.facts import format_price, format_stock


class Persona(BaseModel):
    """An assistant's wording; `system` is the persona line the gateway puts before the grounding rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "assistant"
    signature: str = Field(default="Happy to help!", description="Opens every answer about a listed product.")
    system: str | None = Field(default=None, description="The manifest's `persona` for this assistant, if any.")
    refusal_mark: str = "not in our catalog"
    off_topic: str = "I can only help with questions about our products."
    firm_price: str = "That is the price in our catalog; I can't change or negotiate it."

    def quote(self, product: Product) -> str:
        """Price and stock of one product, in the facts block's exact phrases."""
        stock = format_stock(product.stock)
        if product.price is None:
            return f"the {product.name}'s price is not listed, {stock}"
        return f"the {product.name} is {format_price(product.price, product.currency)}, {stock}"

    def answer(self, product: Product) -> str:
        return f"{self.signature} {_cap(self.quote(product))}."

    def refuse(self, asked: str) -> str:
        return f"I'm sorry, the {asked} is {self.refusal_mark}, so I can't quote a price."

    def hold_price(self, product: Product) -> str:
        if product.price is None:
            return f"{_cap(self.quote(product))}. I can't confirm a price our catalog does not list."
        return f"{_cap(self.quote(product))}. {self.firm_price}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def load_persona(path: Path | None, name: str | None = None) -> Persona:
    """A Persona from a YAML/JSON file (fields of Persona), or the default one; `name` overrides the file's."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path else {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a persona file holds a mapping of Persona fields")
    if name:
        data["name"] = name
    return Persona.model_validate(data)
