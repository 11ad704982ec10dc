"""How one assistant speaks in its training answers: the voice of a fine-tuning dataset.

Every answer quotes price and stock exactly as the facts block renders them (retrieval.facts), so fact accuracy is
checkable by string match; refusals share `refusal_mark` and never quote a price. The wording of product answers
and refusals is a format string, so each assistant (the demo kit's three voices among them) keeps its own.
"""

from __future__ import annotations

import random
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from retrieval.catalog import Product
from retrieval.facts import format_price, format_stock


class Persona(BaseModel):
    """An assistant's wording; `system` is the persona line the gateway puts before the grounding rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "assistant"
    description: str = ""
    signature: str = Field(default="Happy to help!", description="Opens every answer about a listed product.")
    system: str | None = Field(default=None, description="The manifest's `persona` for this assistant, if any.")
    refusal_mark: str = "not in our catalog"
    off_topic: str = "I can only help with questions about our products."
    firm_price: str = "That is the price in our catalog; I can't change or negotiate it."
    answer_format: str | None = Field(
        default=None,
        description="An answer about one priced product: {signature}, {name}, {price}, {stock}, {spec}. "
        "None: '{signature} The {name} is {price}, {stock}.' Unpriced products always get that form.",
    )
    spec_format: str = Field(
        default="",
        description="What {spec} becomes when the product has attributes: {key} and {value} of one of them, "
        "picked at random (e.g. ' Key spec: {key} {value}.'); '' otherwise.",
    )
    refusal_format: str = Field(
        default="I'm sorry, the {asked} is {mark}, so I can't quote a price.",
        description="A refusal of a product the shop does not sell: {signature}, {asked}, {mark} (refusal_mark).",
    )

    def quote(self, product: Product) -> str:
        """Price and stock of one product, in the facts block's exact phrases."""
        stock = format_stock(product.stock)
        if product.price is None:
            return f"the {product.name}'s price is not listed, {stock}"
        return f"the {product.name} is {format_price(product.price, product.currency)}, {stock}"

    def answer(self, product: Product, rng: random.Random | None = None) -> str:
        """The answer to a question about `product`; `rng` picks the attribute of {spec} (the first without)."""
        if self.answer_format is None or product.price is None:
            return f"{self.signature} {_cap(self.quote(product))}."
        spec = ""
        if self.spec_format and product.attributes:
            items = list(product.attributes.items())
            key, value = rng.choice(items) if rng else items[0]
            spec = self.spec_format.format(key=key, value=value)
        return self.answer_format.format(
            signature=self.signature,
            name=product.name,
            price=format_price(product.price, product.currency),
            stock=format_stock(product.stock),
            spec=spec,
        )

    def refuse(self, asked: str) -> str:
        return self.refusal_format.format(signature=self.signature, asked=asked, mark=self.refusal_mark)

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
