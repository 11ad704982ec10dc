"""The labelled query set for the demo catalog, generated from it with a seed (nothing big is hand-written).

Each query has a kind and graded relevance judgements (2: the product asked for, or one meeting every stated
constraint; 1: a partial match; unlisted: 0). Kinds cover the hard cases of shop search: exact names, SKUs,
bare model codes, misspellings, brand+series without a code, attribute-only requests with a price bound,
comparisons, and products the catalog does not hold, with or without a model code (these have no judgements
and are scored only on the 'unknown' signal). The only hand-written parts are the phrasings and a short list
of products the shop does not sell.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

from retrieval.catalog import Product
from retrieval.demo_catalog import demo_catalog, product_name
from retrieval.documents import codes_in

NOT_SOLD = [
    "toaster",
    "rice cooker",
    "blender",
    "tea infuser",
    "air fryer",
    "juicer",
    "bread maker",
    "wine glasses",
    "laptop stand",
    "vacuum cleaner",
    "electric toothbrush",
    "yoga mat",
]

_ASK_NAME = [
    "How much is the {q}?",
    "Is the {q} in stock?",
    "What does the {q} cost?",
    "Tell me about the {q}.",
    "{q} price",
    "Do you have the {q}?",
]
_ASK_SKU = ["Is {q} in stock?", "price of {q}", "{q}", "What is product {q}?"]
_ASK_CODE = ["What does the {q} cost?", "{brand} {q} specs", "is the {q} available?"]
_ASK_SERIES = ["{brand} {series} {category}", "Do you carry a {brand} {series} {category}?"]
_ASK_SERIES_ONLY = ["{q} {category}", "Do you carry a {q} {category}?"]
_ASK_COMPARE = ["Compare the {a} and the {b}", "{a} vs {b}: which is better?", "Difference between {a} and {b}?"]
_ASK_NOT_SOLD = ["Do you sell a {q}?", "How much is a {q}?", "{q}", "I need a {q}"]
# Values that read as a feature on their own; yes/no attributes are phrased by their key instead.
_YES = {"yes", "waterproof", "built-in timer"}


@dataclass
class LabelledQuery:
    """One query, its kind, and graded relevance (product id -> 1 or 2)."""

    id: str
    text: str
    kind: str
    relevance: dict[str, int] = field(default_factory=dict)

    @property
    def unknown(self) -> bool:
        """True for questions about products the catalog does not hold."""
        return self.kind.startswith("unknown")


def _typo(rng: random.Random, word: str) -> str:
    """One deletion, doubling or swap inside a word of four or more letters (first and last letters kept)."""
    if len(word) < 4 or not word.isalpha():
        return word
    while True:
        i = rng.randint(1, len(word) - 3)
        op = rng.choice(["drop", "double", "swap"])
        if op == "drop":
            typo = word[:i] + word[i + 1 :]
        elif op == "double":
            typo = word[:i] + word[i] + word[i:]
        else:
            typo = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if typo != word:
            return typo


def _split(product: Product) -> tuple[str, str, str]:
    """(brand, series, code) of a demo name such as 'Moka Nord Summit MN-835'."""
    head, code = product.name.rsplit(" ", 1)
    brand, series = head.rsplit(" ", 1)
    return brand, series, code


def _feature(key: str, value: str) -> str | None:
    if value in _YES:
        return key if value == "yes" else value
    if value in {"no", "no timer", "not waterproof", "splash resistant"}:
        return None
    return value


def _round_up(price: Decimal, step: int) -> int:
    return int((price / step).to_integral_value(rounding=ROUND_CEILING)) * step


def _attribute_query(rng: random.Random, catalog: list[Product], product: Product) -> LabelledQuery | None:
    features = [(k, v, f) for k, v in product.attributes.items() if (f := _feature(k, v))]
    if not features:
        return None
    chosen = rng.sample(features, k=min(len(features), rng.choice([1, 2])))
    if product.price is None:  # the demo catalog prices every product; a price bound needs one
        return None
    bound = _round_up(product.price * Decimal("1.15"), 10 if product.price < 200 else 50)
    with_price = rng.random() < 0.6
    words = " ".join(f for _, _, f in chosen)
    price = ""
    if with_price:
        price = rng.choice([f" under ${bound}", f" below ${bound}", f" for less than ${bound}"])
    category = product.category
    text = rng.choice(
        [
            f"{words} {category}{price}",
            f"Do you have a {words} {category}{price}?",
            f"I'm looking for a {category} that is {words}{price}",
        ]
    )
    relevance: dict[str, int] = {}
    for p in catalog:
        if p.category != product.category:
            continue
        matched = sum(p.attributes.get(k) == v for k, v, _ in chosen)
        cheap = not with_price or (p.price is not None and p.price <= bound)
        if matched == len(chosen) and cheap:
            relevance[p.id] = 2
        elif matched == len(chosen) or (cheap and matched == len(chosen) - 1 and len(chosen) > 1):
            relevance[p.id] = 1
    return LabelledQuery("", text, "attribute", relevance)


def labelled_queries(catalog: list[Product] | None = None, seed: int = 20) -> list[LabelledQuery]:
    """About 250 labelled queries over the demo catalog, the same for the same seed."""
    catalog = catalog if catalog is not None else demo_catalog()
    rng = random.Random(seed)
    by_code: dict[str, list[Product]] = {}
    for p in catalog:
        for code in codes_in(p.name):
            by_code.setdefault(code, []).append(p)
    names = {p.name for p in catalog}
    queries: list[LabelledQuery] = []

    def add(kind: str, text: str, relevance: dict[str, int]) -> None:
        queries.append(LabelledQuery(f"{kind}-{len(queries):03d}", text, kind, relevance))

    for p in rng.sample(catalog, 40):
        add("name", rng.choice(_ASK_NAME).format(q=p.name), {p.id: 2})
    for p in rng.sample(catalog, 30):
        add("sku", rng.choice(_ASK_SKU).format(q=p.id if rng.random() < 0.7 else p.id.lower()), {p.id: 2})
    for p in rng.sample(catalog, 20):
        brand, _, code = _split(p)
        twins = by_code[next(iter(codes_in(code)))]
        add("code", rng.choice(_ASK_CODE).format(q=code, brand=brand), {t.id: 2 for t in twins})
    for p in rng.sample(catalog, 30):
        brand, series, code = _split(p)
        # One or two misspelt words: the brand's longest word, sometimes the series too.
        words = brand.split() + [series]
        longest = max(range(len(words) - 1), key=lambda i: len(words[i]))
        for i in {longest, len(words) - 1} if rng.random() < 0.5 else {longest}:
            words[i] = _typo(rng, words[i])
        text = " ".join(words) + (f" {code}" if rng.random() < 0.5 else f" {p.category}")
        add("misspelled", rng.choice(_ASK_NAME).format(q=text.lower() if rng.random() < 0.3 else text), {p.id: 2})
    for p in rng.sample(catalog, 20):
        brand, series, _ = _split(p)
        rel = {o.id: 2 if o.category == p.category else 1 for o in catalog if _split(o)[:2] == (brand, series)}
        add("series", rng.choice(_ASK_SERIES).format(brand=brand, series=series, category=p.category), rel)
    attribute_pool = rng.sample(catalog, len(catalog))
    made = 0
    for p in attribute_pool:
        if made == 40:
            break
        q = _attribute_query(rng, catalog, p)
        if q is not None and any(g == 2 for g in q.relevance.values()):
            add("attribute", q.text, q.relevance)
            made += 1
    for _ in range(20):
        a = rng.choice(catalog)
        b = rng.choice([o for o in catalog if o.category == a.category and o.id != a.id])
        add("comparison", rng.choice(_ASK_COMPARE).format(a=a.name, b=b.name), {a.id: 2, b.id: 2})
    _unknown_queries(rng, catalog, names, by_code, add)
    return queries


def _unknown_queries(
    rng: random.Random,
    catalog: list[Product],
    names: set[str],
    by_code: dict[str, list[Product]],
    add: Callable[[str, str, dict[str, int]], None],
) -> None:
    for _ in range(15):
        add("unknown-name", rng.choice(_ASK_NAME).format(q=product_name(rng, "heldout")), {})
    for _ in range(10):  # brand and series without a model code: the name check alone must catch these
        brand_series = product_name(rng, "heldout").rsplit(" ", 1)[0]
        category = rng.choice(catalog).category
        add("unknown-series", rng.choice(_ASK_SERIES_ONLY).format(q=brand_series, category=category), {})
    made = 0
    while made < 15:
        brand, series, code = _split(rng.choice(catalog))
        letters, _ = code.split("-")
        fake = f"{letters}-{rng.randint(1, 9)}{rng.randint(0, 9)}{rng.choice('05')}"
        if next(iter(codes_in(fake))) in by_code or f"{brand} {series} {fake}" in names:
            continue
        add("unknown-code", rng.choice(_ASK_NAME).format(q=f"{brand} {series} {fake}"), {})
        made += 1
    for item in rng.sample(NOT_SOLD, 10):
        add("unknown-type", rng.choice(_ASK_NOT_SOLD).format(q=item), {})


def write_beir(queries: list[LabelledQuery], catalog: list[Product], out: Path) -> Path:
    """Write the set in BEIR layout (corpus.jsonl, queries.jsonl, qrels/test.tsv), products in metadata."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for p in catalog:
            doc = {
                "_id": p.id,
                "title": p.name,
                "text": p.description,
                "metadata": {"product": p.model_dump(mode="json", exclude_none=True)},
            }
            fh.write(json.dumps(doc) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for q in queries:
            fh.write(
                json.dumps({"_id": q.id, "text": q.text, "metadata": {"kind": q.kind, "unknown": q.unknown}}) + "\n"
            )
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q in queries:
            for doc_id, grade in sorted(q.relevance.items()):
                fh.write(f"{q.id}\t{doc_id}\t{grade}\n")
    return out
