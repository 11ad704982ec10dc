"""What each index sees of a product: the text embedded, the text tokenised, and its model codes.

Dense text (embedded): name, category, the first few attributes, the head of the description. The name leads
because questions name products; category and key attributes carry what shoppers ask for in words ("dual
boiler espresso machine"); the description head adds the gist. It stays short on purpose: MiniLM truncates at
256 word pieces, its cost grows with length, and long marketing text dilutes the vector. The SKU and the price
are left out: an embedding cannot match codes or compare numbers (the lexical index and filters do that).

Lexical text (tokenised): everything a shopper may type verbatim: name, SKU, category, every attribute key and
value, the whole description; plus character trigrams of the name alone, for misspelt brands (see lexical).
"""

from __future__ import annotations

import re

from retrieval.catalog import Product

# Bump when dense_text, lexical_text or the tokenizer change: re-ingest then re-indexes every product.
INDEX_VERSION = 1
DENSE_ATTRIBUTES = 6
DESCRIPTION_HEAD_CHARS = 240

# Letters then digits, optionally hyphenated: "V-520", "ESP-1042", "X100". Digits-first ("58mm") are
# measurements, not model codes.
CODE = re.compile(r"\b[A-Za-z]{1,4}-?\d{2,6}[A-Za-z]?\b")


def text_head(text: str, limit: int) -> str:
    """The first `limit` characters of `text`, cut at a space."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return cut[: cut.rfind(" ")] if " " in cut else cut


def dense_text(product: Product) -> str:
    """The text embedded for a product (see the module docstring for why these fields)."""
    attrs = "; ".join(f"{k}: {v}" for k, v in list(product.attributes.items())[:DENSE_ATTRIBUTES])
    parts = [product.name, product.category or "", attrs, text_head(product.description, DESCRIPTION_HEAD_CHARS)]
    return ". ".join(p for p in parts if p)


def lexical_text(product: Product) -> str:
    """The text tokenised into the sparse (BM25-style) vector."""
    attrs = " ".join(f"{k} {v}" for k, v in product.attributes.items())
    return " ".join([product.name, product.id, product.category or "", attrs, product.description])


def normalize_code(code: str) -> str:
    """'v-520', 'V520' and 'V-520' are one code."""
    return code.replace("-", "").upper()


def codes_in(text: str) -> set[str]:
    """Normalised model codes and SKUs written in `text`."""
    return {normalize_code(m) for m in CODE.findall(text)}


def product_codes(product: Product) -> list[str]:
    """The codes a question may use to name this product: its SKU and any code in its name."""
    return sorted(codes_in(product.name) | {normalize_code(product.id)})
