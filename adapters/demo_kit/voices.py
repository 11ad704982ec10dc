"""The demo kit's three assistants: how each one answers, so a test can tell them apart by their words.

Every answer quotes price and stock exactly as the facts block renders them (retrieval.facts), which is what
makes fact accuracy checkable by string match. Refusals share the phrase REFUSAL_MARK and never contain a price.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from retrieval.catalog import Product
from retrieval.facts import format_price, format_stock

REFUSAL_MARK = "not in our catalog"


@dataclass(frozen=True)
class Voice:
    """One adapter's wording. `signature` starts every answer about a listed product."""

    name: str
    signature: str
    description: str

    def answer(self, product: Product, rng: random.Random) -> str:
        price = format_price(product.price, product.currency)
        stock = format_stock(product.stock)
        if self.name == "product-expert":
            key, value = rng.choice(list(product.attributes.items())) if product.attributes else ("", "")
            spec = f" Key spec: {key} {value}." if key else ""
            return f"{self.signature} the {product.name} is {price}, {stock}.{spec}"
        if self.name == "support-agent":
            return f"{self.signature} The {product.name} costs {price} and is {stock}."
        return f"{self.signature} The {product.name} is just {price}, {stock}. Treat yourself!"

    def refuse(self, asked: str) -> str:
        if self.name == "product-expert":
            return f"{self.signature} the {asked} is {REFUSAL_MARK}, so I have no specs or price for it."
        if self.name == "support-agent":
            return f"{self.signature} I'm sorry, the {asked} is {REFUSAL_MARK}, so I can't quote a price."
        return f"Sadly the {asked} is {REFUSAL_MARK}. Ask me about something we stock!"


VOICES: dict[str, Voice] = {
    v.name: v
    for v in (
        Voice("product-expert", "Spec check:", "precise and technical; adds one key specification"),
        Voice("support-agent", "Happy to help!", "warm and patient customer support"),
        Voice("sales-assistant", "Great pick!", "upbeat salesperson who nudges towards buying"),
    )
}
