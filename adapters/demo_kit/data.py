"""The demo kit's held-out questions, generated from the demo domain with a seed.

Each case is a system message (grounding rules and a facts block rendered by retrieval.facts, exactly as the
gateway renders it) and one question. A question names a product in the block (answer: its price and stock), or
one that is absent (answer: a refusal) — either a near miss of a listed product (same brand and series, another
model code), an unrelated name, or, as the retriever signals, NOT IN CATALOG. The kit trains on the fine-tuning
kit's own samples (adapters.samples) over the demo domain's training pool; these questions use the held-out pool
(retrieval.demo_catalog), so evaluation asks about names no adapter has seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from adapters.persona import Persona
from adapters.training import Conversation
from retrieval.catalog import Product
from retrieval.demo_catalog import Pool, look_alike_name, product_name, random_product
from retrieval.facts import render_facts, system_message

_QUESTIONS = [
    "How much is the {name}?",
    "What does the {name} cost?",
    "Is the {name} in stock?",
    "What's the price of the {name}?",
    "Do you have the {name}?",
    "Tell me about the {name}.",
    "can i buy the {name} today",
    "{name} price?",
    "How much for the {name}, and is it available?",
    "I'm looking at the {name}. Price and availability?",
]

Kind = Literal["known", "near_miss", "absent", "signalled"]


@dataclass(frozen=True)
class Question:
    """One held-out question with what a correct answer must contain."""

    facts: list[Product]
    unknown_signal: bool
    text: str
    kind: Kind
    product: Product | None  # the product asked about when it is in the facts block

    def messages(self) -> Conversation:
        block = render_facts(self.facts, unknown=self.unknown_signal)
        return [{"role": "system", "content": system_message(block)}, {"role": "user", "content": self.text}]


def _near_miss(rng: random.Random, product: Product) -> str:
    """Same brand and series, another model code: the hardest fake to refuse."""
    head, code = product.name.rsplit(" ", 1)
    letters, digits = code.split("-")
    while True:
        other = f"{letters}-{rng.randint(1, 9)}{rng.randint(0, 9)}{rng.choice('05')}"
        if other != f"{letters}-{digits}":
            return f"{head} {other}"


def _question(
    rng: random.Random,
    pool: Pool,
    sku: list[int],
    known_share: float = 0.6,
    max_products: int = 4,
    look_alikes: float = 0.0,
) -> Question:
    """A fresh facts block of one to `max_products` products and a first question about it.

    With probability `look_alikes` the block is built as a retriever fills one: every product after the first is
    a look-alike of it (same brand, and the same series or model code), so the answer must tell them apart.
    """
    # No draw for look-alikes when they are off: the generated data stays what it was before the option existed.
    twins = look_alikes > 0 and rng.random() < look_alikes
    facts: list[Product] = []
    for _ in range(rng.randint(1, max_products)):
        sku[0] += 1
        name = None
        if twins and facts:
            taken = {p.name for p in facts}
            while (name := look_alike_name(rng, pool, facts[0].name)) in taken:
                pass
        facts.append(random_product(rng, pool, sku[0], name=name))
    return _ask(rng, pool, facts, first=True, known_share=known_share)


def _ask(rng: random.Random, pool: Pool, facts: list[Product], first: bool, known_share: float = 0.6) -> Question:
    """A question about a listed product (`known_share`) or one that is not listed (the rest)."""
    template = rng.choice(_QUESTIONS)
    if facts and rng.random() < known_share:
        product = rng.choice(facts)
        # Shoppers also ask by SKU or without the brand; the answer still names the product in full.
        style = rng.random()
        ref = product.id if style < 0.1 else product.name.split(" ", 1)[1] if style < 0.2 else product.name
        return Question(facts, False, template.format(name=ref), "known", product)
    names = {p.name for p in facts}
    kind: Kind = "absent"
    asked = product_name(rng, pool)
    if facts and rng.random() < 0.5:
        asked, kind = _near_miss(rng, rng.choice(facts)), "near_miss"
    if asked in names:
        return _ask(rng, pool, facts, first, known_share)
    if first and rng.random() < 0.3:
        # As the retriever signals it: the block says NOT IN CATALOG and holds at most the nearest products.
        return Question(facts[: rng.randint(0, 2)], True, template.format(name=asked), "signalled", None)
    return Question(facts, False, template.format(name=asked), kind, None)


def questions(pool: Pool, count: int, seed: int, look_alikes: float = 0.0) -> list[Question]:
    """`count` independent single-question cases (the held-out set uses pool 'heldout'); `look_alikes` is the share
    of facts blocks whose products share brand and series or model code, as a retriever returns them."""
    rng = random.Random(seed)
    sku = [5000]
    return [_question(rng, pool, sku, look_alikes=look_alikes) for _ in range(count)]


def asked_name(q: Question) -> str:
    """The product name as the question wrote it (for the refusal text)."""
    for template in _QUESTIONS:
        prefix, _, suffix = template.partition("{name}")
        if q.text.startswith(prefix) and q.text.endswith(suffix):
            return q.text[len(prefix) : len(q.text) - len(suffix)]
    raise ValueError(f"question does not follow a known template: {q.text!r}")


def reply(voice: Persona, q: Question, rng: random.Random) -> str:
    """The answer the kit's training teaches for one question."""
    if q.product is not None:
        return voice.answer(q.product, rng)
    return voice.refuse(asked_name(q))
