"""The demo domain: a coffee-equipment shop, generated deterministically from a seed.

One generator serves three uses that must not share product names: the demo catalog the gateway serves
(pool "catalog"), the demo kit's training data (pool "train") and its held-out evaluation (pool "heldout").
Each pool has its own brands and series words, so evaluation and the demo ask about names no adapter saw.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Literal

from retrieval.catalog import Product

Pool = Literal["catalog", "train", "heldout"]

_BRANDS: dict[Pool, list[str]] = {
    "catalog": [
        "Vellora",
        "Brennt",
        "Caffora",
        "Moka Nord",
        "Arbusto",
        "Ferrovia",
        "Kettlewick",
        "Luma",
        "Orzo & Co",
        "Presswell",
        "Tamperly",
        "Ristretto Lab",
    ],
    "train": [
        "Alvane",
        "Bricco",
        "Cortado Works",
        "Dunmore",
        "Espira",
        "Fiordi",
        "Grindel",
        "Hollis",
        "Isola",
        "Javelle",
        "Kaffstein",
        "Lorimer",
        "Mazzetta",
        "Nerido",
        "Ostra",
        "Pelton",
        "Quarto",
        "Rosetta",
        "Sorrel",
        "Tirano",
        "Umbria Bean",
        "Valdor",
        "Wexley",
        "Zanetti",
    ],
    "heldout": [
        "Aurin",
        "Belcaro",
        "Corvina",
        "Delmare",
        "Estrelo",
        "Falkor",
        "Gavotta",
        "Harlan",
        "Ivrea",
        "Jorund",
        "Korva",
        "Lindqvist",
    ],
}
_SERIES: dict[Pool, list[str]] = {
    "catalog": ["Crema", "Aurora", "Bolt", "Summit", "Piccolo", "Vento", "Atlas", "Nimbus", "Solo", "Terra"],
    "train": [
        "Barista",
        "Classic",
        "Pro",
        "Studio",
        "Duo",
        "Max",
        "Lite",
        "Nova",
        "Prime",
        "Volta",
        "Zen",
        "Orbit",
        "Pulse",
        "Core",
        "Flux",
        "Halo",
        "Ridge",
        "Spark",
        "Tide",
        "Velo",
    ],
    "heldout": ["Meridian", "Cobalt", "Harbor", "Quill", "Sable", "Tundra", "Willow", "Ember"],
}

# category: (sku prefix, price range in dollars, attribute generators)
_CATEGORIES: dict[str, tuple[str, tuple[int, int], dict[str, list[str]]]] = {
    "espresso machine": (
        "ESP",
        (149, 2499),
        {
            "boiler": ["single boiler", "dual boiler", "heat exchanger", "thermoblock"],
            "pressure": ["9 bar", "15 bar", "19 bar"],
            "water tank": ["1.2 L", "1.8 L", "2.5 L", "3 L"],
            "color": ["black", "stainless steel", "white", "red", "matte grey"],
        },
    ),
    "coffee grinder": (
        "GRD",
        (39, 899),
        {
            "burr": ["flat steel burrs", "conical steel burrs", "ceramic burrs"],
            "burr size": ["38 mm", "48 mm", "54 mm", "64 mm", "83 mm"],
            "grind settings": ["30 steps", "40 steps", "stepless"],
            "color": ["black", "white", "silver", "walnut"],
        },
    ),
    "kettle": (
        "KTL",
        (24, 199),
        {
            "capacity": ["0.6 L", "0.9 L", "1.0 L", "1.2 L"],
            "spout": ["gooseneck", "standard"],
            "temperature control": ["variable 40-100 C", "fixed boil", "presets"],
            "color": ["matte black", "copper", "white", "stainless steel"],
        },
    ),
    "pour-over dripper": (
        "DRP",
        (12, 79),
        {
            "material": ["ceramic", "glass", "stainless steel", "plastic"],
            "size": ["1-2 cups", "1-4 cups"],
            "shape": ["cone", "flat bottom"],
            "color": ["white", "black", "clear", "blue"],
        },
    ),
    "coffee scale": (
        "SCL",
        (19, 249),
        {
            "precision": ["0.1 g", "0.01 g"],
            "max load": ["2 kg", "3 kg"],
            "timer": ["built-in timer", "no timer"],
            "waterproof": ["waterproof", "splash resistant", "not waterproof"],
        },
    ),
    "milk frother": (
        "MLK",
        (29, 229),
        {
            "capacity": ["120 ml", "240 ml", "300 ml"],
            "modes": ["hot and cold foam", "hot foam only"],
            "dishwasher safe": ["yes", "no"],
            "color": ["black", "silver", "white"],
        },
    ),
    "french press": (
        "FRP",
        (18, 119),
        {
            "capacity": ["350 ml", "600 ml", "1 L"],
            "material": ["borosilicate glass", "stainless steel", "double-wall steel"],
            "color": ["black", "copper", "silver", "green"],
        },
    ),
    "cold brew maker": (
        "CBR",
        (22, 149),
        {
            "capacity": ["1 L", "1.5 L", "2 L"],
            "filter": ["mesh filter", "paper filter"],
            "material": ["glass", "BPA-free plastic"],
        },
    ),
    "tamper": (
        "TMP",
        (15, 139),
        {
            "diameter": ["51 mm", "53 mm", "58 mm"],
            "base": ["flat", "convex", "ripple"],
            "handle": ["walnut", "aluminium", "steel"],
        },
    ),
    "coffee beans": (
        "BNS",
        (9, 49),
        {
            "origin": ["Ethiopia", "Colombia", "Brazil", "Guatemala", "Kenya", "blend"],
            "roast": ["light roast", "medium roast", "dark roast"],
            "weight": ["250 g", "500 g", "1 kg"],
        },
    ),
}

_BLURBS = [
    "Built for everyday home brewing with consistent results.",
    "A compact choice for small kitchens and first-time baristas.",
    "Favoured by enthusiasts who want café quality at home.",
    "Easy to clean, with parts that come apart without tools.",
    "Quiet operation and a sturdy build that lasts for years.",
    "Designed with a specialty roaster for balanced extraction.",
]


def _model_code(rng: random.Random, brand: str) -> str:
    letters = "".join(w[0] for w in brand.replace("&", "").split())[:2].upper()
    return f"{letters}-{rng.randint(1, 9)}{rng.randint(0, 9)}{rng.choice('05')}"


def product_name(rng: random.Random, pool: Pool) -> str:
    """A brand + series + model-code name from the pool (e.g. 'Vellora Crema V-520')."""
    brand = rng.choice(_BRANDS[pool])
    return f"{brand} {rng.choice(_SERIES[pool])} {_model_code(rng, brand)}"


def look_alike_name(rng: random.Random, pool: Pool, name: str) -> str:
    """A name a retriever would rank next to `name`: the same brand and model code in another series, or the same
    brand and series with another code (the demo catalog holds such pairs: Caffora Aurora C-450 and Terra C-450)."""
    head, code = name.rsplit(" ", 1)
    brand, series = head.rsplit(" ", 1)
    if rng.random() < 0.5:
        return f"{brand} {rng.choice([s for s in _SERIES[pool] if s != series])} {code}"
    while (other := _model_code(rng, brand)) == code:
        pass
    return f"{head} {other}"


def random_product(rng: random.Random, pool: Pool, sku_number: int, name: str | None = None) -> Product:
    """One plausible product of a random category."""
    category = rng.choice(list(_CATEGORIES))
    prefix, (low, high), attr_choices = _CATEGORIES[category]
    dollars = rng.randint(low, high)
    cents = rng.choice([0, 0, 49, 95, 99])
    stock = 0 if rng.random() < 0.25 else rng.randint(1, 60)
    attributes = {key: rng.choice(values) for key, values in attr_choices.items()}
    return Product(
        id=f"{prefix}-{sku_number}",
        name=name or product_name(rng, pool),
        category=category,
        price=Decimal(f"{dollars}.{cents:02d}"),
        stock=stock,
        attributes=attributes,
        description=f"{rng.choice(_BLURBS)} {category.capitalize()} with {', '.join(attributes.values())}.",
    )


def generate(pool: Pool, count: int, seed: int) -> list[Product]:
    """`count` products with distinct names and ids, the same for the same seed."""
    rng = random.Random(seed)
    seen: set[str] = set()
    products: list[Product] = []
    while len(products) < count:
        name = product_name(rng, pool)
        if name in seen:
            continue
        seen.add(name)
        products.append(random_product(rng, pool, 1000 + len(products), name=name))
    return products


def demo_catalog(count: int = 300, seed: int = 7) -> list[Product]:
    """The catalog `make demo` ingests and the tests ask about."""
    return generate("catalog", count, seed)


def iter_jsonl(products: list[Product]) -> Iterator[str]:
    """JSON lines, one product each."""
    for product in products:
        yield product.model_dump_json(exclude_none=True)


def write_demo_catalog(path: Path, count: int = 300, seed: int = 7) -> Path:
    """Write the demo catalog as JSONL (built by make, not kept in git)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(iter_jsonl(demo_catalog(count, seed))) + "\n", encoding="utf-8")
    return path


_EDITIONS = [
    "Plus",
    "Mini",
    "XL",
    "Compact",
    "Mk II",
    "Mk III",
    "Pro",
    "Lite",
    "Travel",
    "Signature",
    "Eco",
    "Duo",
]


def synthetic_catalog(count: int = 50_000, seed: int = 11) -> list[Product]:
    """The demo catalog grown to `count` products for load and ingest benchmarks (same brands, categories).

    The pool has only about 21,600 distinct brand/series/code names, so repeats get an edition word
    ("Vellora Crema V-520 Mini"); SKUs continue after the demo catalog's.
    """
    products = demo_catalog()[:count]
    seen = {p.name for p in products}
    rng = random.Random(seed)
    while len(products) < count:
        name = product_name(rng, "catalog")
        for edition in ["", *_EDITIONS]:
            candidate = f"{name} {edition}".strip()
            if candidate not in seen:
                break
        else:
            continue
        seen.add(candidate)
        products.append(random_product(rng, "catalog", 1000 + len(products), name=candidate))
    return products
