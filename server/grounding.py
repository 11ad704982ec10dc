"""Claims in an answer (prices, stock, product names, discounts) checked against the facts injected for the request.

Pure functions, no I/O. A price is matched to the nearest product named before it in the answer (by its full name,
its model code such as `V-520`, or its SKU); with no product named, to the only product shown, or to any shown
product of that price. A claim is unsupported when the facts say otherwise, when it is about a product that was not
shown (a fake or a near-miss name), or when the facts hold no such figure at all (a discount, a price the user
asserted). Amounts are compared as numbers: "$1,299", "1299 dollars", "1.299,00 €" and "USD 1299.00" are one price;
each end of a range is a claim. Product names are found by model code or exact catalog name, so a catalog whose
names have neither is checked on figures only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from retrieval.catalog import Product
from retrieval.facts import format_price, format_stock

Kind = Literal["price", "stock", "product", "discount"]
# fix: replace the claim's text with `fix`; block: no catalog figure can replace it; note: listed, not changed.
Action = Literal["fix", "block", "note"]

_NUM = r"\d{1,3}(?:[,.'\u00a0\u202f]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_PRE = r"[$€£]|\b(?:US\$|USD|EUR|GBP|CHF)\s?"
_POST = r"[$€£]|(?:USD|EUR|GBP|CHF|dollars?|euros?|pounds?|bucks)\b"
_TO = r"\s?(?:-|–|—|to)\s?"
_UNIT = r"(?:mm|cm|m|g|kg|l|ml|oz|lb|bar|w|v|c|°|%|steps?|cups?)\b"
_PRICE = re.compile(
    rf"(?P<pre>{_PRE})\s?(?P<a>{_NUM})(?:{_TO}(?:{_PRE})?\s?(?P<b>{_NUM})(?![\d.,]?\d))?"
    rf"|(?<![\w.,$€£])(?P<c>{_NUM})(?:{_TO}(?P<d>{_NUM}))?\s?(?P<post>{_POST})"
    rf"|(?<![\w.,$€£])(?P<bare>\d{{1,3}}(?:,\d{{3}})+\.\d\d|\d+\.\d\d)(?![\d.,]?\d)(?!\s?{_UNIT})",
    re.IGNORECASE,
)
# "isn't in stock", "none in stock": a negated "in stock" says out of stock (read as in stock, `correct` would
# "fix" a true answer into a false one).
_STOCK = re.compile(
    r"\b(?:out of stock|sold out)\b"
    r"|(?P<neg>\b(?:isn['’]t|aren['’]t|is not|are not|not|none|nothing|no longer)"
    r"(?: (?:currently|available|yet|now|right now))? in stock)\b"
    r"|(?<!out of )(?<!not )\bin stock(?:\s*\((?P<a>\d+) units?\))?"
    r"|\b(?P<b>\d+) (?:units?|pieces|pcs)(?: (?:left|in stock|available|remaining))?\b"
    r"|\b(?P<c>\d+) (?:left|in stock|available|remaining)\b",
    re.IGNORECASE,
)
_CODE = re.compile(r"\b[A-Z]{1,4}-\d{2,5}\b")
_CAPITALISED = re.compile(r"(?:[A-Z][\w&]*|&|Co)$")
# Capitalised words that open a sentence rather than a product name ("Check Vellora Crema V-520").
_SENTENCE_WORDS = frozenset(
    "the a an our this that yes no sure sorry great sadly it i try get buy consider meet however but and also "
    "check see about unfortunately".split()
)
_DISCOUNT = re.compile(r"\b\d{1,3}\s?%\s?(?:off|discount)\b|\b(?:discount|reduction) of \d{1,3}\s?%", re.IGNORECASE)
_NEGATED = re.compile(r"\b(?:can't|cannot|can not|won't|unable|not able|no)\b|n't\b", re.IGNORECASE)
_REFUSAL = re.compile(
    r"not in (?:our|the) catalog|not (?:something )?we (?:carry|stock|sell)|(?:don't|do not) (?:carry|stock|sell|have)"
    r"|not listed|no (?:such|product)|(?:couldn't|can't|cannot|could not) find|isn't (?:listed|in)",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?\n]")
_SYMBOLS = {"$": "USD", "us$": "USD", "€": "EUR", "£": "GBP", "dollar": "USD", "dollars": "USD", "bucks": "USD"}
_SYMBOLS |= {"euro": "EUR", "euros": "EUR", "pound": "GBP", "pounds": "GBP"}


@dataclass(frozen=True)
class Facts:
    """What one request was shown: the products of its facts block, the NOT IN CATALOG signal, the prices the
    user wrote (never facts: a claim that repeats one is reported as such), and the products the user's latest
    message names: those that were not shown (a fake, a near miss) and the ids of those that were."""

    products: tuple[Product, ...]
    unknown: bool = False
    user_prices: frozenset[Decimal] = frozenset()
    asked_missing: tuple[str, ...] = ()
    asked_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Claim:
    """A figure or name in the answer, where it is (`start`:`end`) and what it says."""

    kind: Kind
    start: int
    end: int
    text: str
    amount: Decimal | None = None  # a price, or a stock count (None: "in stock" with no count)
    currency: str | None = None
    out_of_stock: bool = False


@dataclass(frozen=True)
class Finding:
    """An unsupported claim: why, what the catalog says instead, and what a `correct` policy may do."""

    claim: Claim
    reason: str
    action: Action
    fix: str | None = None
    product: str | None = None  # the product id it was matched to

    def as_json(self) -> dict[str, Any]:
        """The finding as the `grounding` extension field lists it."""
        out: dict[str, Any] = {"kind": self.claim.kind, "text": self.claim.text, "reason": self.reason}
        if self.product:
            out["product"] = self.product
        if self.fix:
            out["catalog"] = self.fix
        return out


def parse_amount(number: str, currency: str | None = None) -> Decimal | None:
    """A written amount as a number: thousands separators dropped, the decimal mark found ('1,299.00', '1.299,00',
    "1'299", '1,29'); None when it is not a number."""
    s = re.sub(r"['\u00a0\u202f ]", "", number)
    if "," in s and "." in s:
        mark = "," if s.rfind(",") > s.rfind(".") else "."
        s = s.replace("." if mark == "," else ",", "").replace(mark, ".")
    elif "," in s:
        s = s.replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+", s) else s.replace(",", ".")
    elif re.fullmatch(r"\d{1,3}(\.\d{3}){2,}", s) or (currency == "EUR" and re.fullmatch(r"\d{1,3}\.\d{3}", s)):
        s = s.replace(".", "")
    try:
        return Decimal(s)
    except InvalidOperation:
        return None


def _currency(marker: str | None) -> str | None:
    if not marker:
        return None
    m = marker.strip().lower()
    return _SYMBOLS.get(m, m.upper() if len(m) == 3 else None)


def prices(text: str) -> list[Claim]:
    """Every price in `text`; a range gives one claim per end."""
    claims: list[Claim] = []
    for m in _PRICE.finditer(text):
        currency = _currency(m.group("pre") or m.group("post"))
        for key in ("a", "b", "c", "d", "bare"):
            if (number := m.group(key)) is None:
                continue
            amount = parse_amount(number, currency)
            if amount is not None:
                start, end = (m.start(key), m.end(key)) if key in ("b", "d") else (m.start(), m.end())
                if key == "a" and m.group("b") or key == "c" and m.group("d"):
                    start, end = m.start(), m.end(key)
                claims.append(Claim("price", start, end, text[start:end], amount, currency))
    return claims


def _stock(text: str) -> list[Claim]:
    claims = []
    for m in _STOCK.finditer(text):
        count = next((m.group(k) for k in "abc" if m.group(k)), None)
        out = bool(m.group("neg")) or m.group(0).lower() in ("out of stock", "sold out")
        amount = Decimal(0) if out else Decimal(count) if count else None
        claims.append(Claim("stock", m.start(), m.end(), m.group(0), amount, out_of_stock=out))
    return claims


def _discounts(text: str) -> list[Claim]:
    claims = []
    for m in _DISCOUNT.finditer(text):
        sentence = text[_sentence_start(text, m.start()) : m.start()]
        if not _NEGATED.search(sentence):  # "I can't give you 50% off" offers nothing
            claims.append(Claim("discount", m.start(), m.end(), m.group(0)))
    return claims


def _sentence_start(text: str, at: int) -> int:
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, at)]
    return ends[-1] if ends else 0


def _sentence(text: str, at: int) -> str:
    end = _SENTENCE_END.search(text, at)
    return text[_sentence_start(text, at) : end.end() if end else len(text)]


def mentions(text: str, products: Sequence[Product]) -> list[tuple[Claim, Product | None]]:
    """Products the answer names, each with the shown product it names (None: not one that was shown)."""
    found: list[tuple[Claim, Product | None]] = []
    taken: list[tuple[int, int]] = []
    lowered = text.lower()
    for product in sorted(products, key=lambda p: -len(p.name)):
        for name in {product.name.lower(), product.id.lower()}:
            at = lowered.find(name)
            while at >= 0:
                found.append((Claim("product", at, at + len(name), text[at : at + len(name)]), product))
                taken.append((at, at + len(name)))
                at = lowered.find(name, at + len(name))
    for m in _CODE.finditer(text):
        if any(s <= m.start() < e for s, e in taken):
            continue
        words = text[: m.start()].split()[-4:]
        head: list[str] = []
        for word in reversed(words):
            if not _CAPITALISED.match(word):
                break
            head.insert(0, word)
        while head and head[0].lower() in _SENTENCE_WORDS:
            head.pop(0)
        start = m.start() - len(" ".join(head)) - (1 if head else 0)
        claim = Claim("product", start, m.end(), text[start : m.end()])
        found.append((claim, _named(head, m.group(0), products)))
    return sorted(found, key=lambda f: f[0].start)


def _named(head: list[str], code: str, products: Sequence[Product]) -> Product | None:
    """The shown product whose id is `code`, or whose name ends with `head` + `code` (a near-miss such as the
    Crema's code under another series name is not it)."""
    head = [w.lower() for w in head]
    for product in products:
        if product.id.upper() == code.upper():
            return product
        *words, last = product.name.lower().split()
        if last == code.lower() and len(head) <= len(words) and words[len(words) - len(head) :] == head:
            return product
    return None


def _alike(mention: str, products: Sequence[Product]) -> list[Product]:
    """Every shown product a mention names: one for a full name or SKU, several for a model code they share."""
    *head, code = mention.split()
    return [p for p in products if _named(head, code, [p]) is p or p.name.lower() == mention.lower()]


def claims(text: str) -> list[Claim]:
    """Prices, stock phrases and discounts in `text`, in order (product names need the facts: see `mentions`)."""
    return sorted([*prices(text), *_stock(text), *_discounts(text)], key=lambda c: c.start)


def check(text: str, facts: Facts) -> list[Finding]:
    """The unsupported claims of an answer, in order."""
    named = mentions(text, facts.products)
    findings: list[Finding] = []
    for claim, product in named:
        if product is None and not _REFUSAL.search(_sentence(text, claim.start)):
            findings.append(Finding(claim, "names a product that was not in the facts shown", "note"))
    for claim in claims(text):
        if claim.kind == "discount":
            findings.append(Finding(claim, "offers a discount the catalog does not list", "block"))
            continue
        before = [(c, p) for c, p in named if c.end <= claim.start]
        if before:
            referent: Product | None = before[-1][1]
            if referent is None:
                reason = f"a {claim.kind} for a product that was not in the facts shown"
                findings.append(Finding(claim, reason, "block"))
                continue
            # "MN-675" alone names every shown product with that code (the demo catalog has three): the price
            # may be any one's, and no single one's figure may replace it.
            candidates: Iterable[Product] = _alike(before[-1][0].text, facts.products) or [referent]
        elif facts.unknown:
            findings.append(Finding(claim, f"a {claim.kind} for a product marked NOT IN CATALOG", "block"))
            continue
        else:
            candidates = facts.products
        if (substitute := _substitute(text, claim, facts, before[-1][1] if before else None)) is not None:
            findings.append(substitute)
            continue
        finding = _figure(claim, list(candidates), facts, named_referent=bool(before))
        if finding is not None:
            findings.append(finding)
    return sorted(findings, key=lambda f: f.claim.start)


def _substitute(text: str, claim: Claim, facts: Facts, referent: Product | None) -> Finding | None:
    """A figure for a product the user did not ask about, when what they asked about was not shown: the answer
    swapped a fake or near miss for a shown look-alike ("the Arbusto Terra A-605 is $64.00" to a question about
    the Aurin Tundra A-600). True of the look-alike, it still prices what the user asked. Allowed after the answer
    says it lacks what was asked (an alternative offered as one)."""
    if not facts.asked_missing or (referent is not None and referent.id in facts.asked_ids):
        return None
    if _REFUSAL.search(text[: claim.start]):
        return None
    what = f"the {referent.name}" if referent else "a shown product"
    reason = f"a {claim.kind} for {what} in answer to the {facts.asked_missing[0]}, which was not shown"
    return Finding(claim, reason, "block", product=referent.id if referent else None)


def asked(text: str, products: Sequence[Product]) -> tuple[tuple[str, ...], frozenset[str]]:
    """The product names a user's message writes that name no shown product, and the ids of the shown products
    it names (every one that shares a model code it writes alone)."""
    named = mentions(text, products)
    missing = tuple(c.text for c, p in named if p is None)
    ids = frozenset(q.id for c, p in named if p is not None for q in _alike(c.text, products) or [p])
    return missing, ids


def _figure(claim: Claim, candidates: list[Product], facts: Facts, named_referent: bool) -> Finding | None:
    """The finding for a price or stock claim against the products it may be about (None: supported)."""
    if claim.kind == "price":
        if any(_same_price(claim, p) for p in candidates):
            return None
        asserted = claim.amount in facts.user_prices
        reason = "repeats a price the user asserted" if asserted else "a price the catalog does not list"
    else:
        if any(_same_stock(claim, p) for p in candidates):
            return None
        reason = "a stock figure the catalog does not list"
    if len(candidates) != 1 or (not named_referent and len(facts.products) != 1):
        return Finding(claim, reason, "block")
    product = candidates[0]
    if claim.kind == "price":
        if product.price is None:
            return Finding(claim, reason + " (its price is not listed)", "block", product=product.id)
        return Finding(claim, reason, "fix", format_price(product.price, product.currency), product.id)
    if product.stock is None:
        return Finding(claim, reason + " (its stock is unknown)", "block", product=product.id)
    return Finding(claim, reason, "fix", format_stock(product.stock), product.id)


def _same_price(claim: Claim, product: Product) -> bool:
    if product.price is None or claim.amount != product.price:
        return False
    return claim.currency is None or claim.currency == product.currency


def _same_stock(claim: Claim, product: Product) -> bool:
    if product.stock is None:
        return False
    if claim.out_of_stock:
        return product.stock == 0
    return product.stock > 0 if claim.amount is None else claim.amount == product.stock


def user_prices(texts: Iterable[str]) -> frozenset[Decimal]:
    """The amounts a user wrote as prices ("it's $5 on your site"), so an answer that repeats one is named so."""
    return frozenset(c.amount for t in texts for c in prices(t) if c.amount is not None)


def corrected(text: str, findings: Sequence[Finding], mark: str) -> str:
    """`text` with every fixable claim replaced by the catalog's figure followed by `mark`."""
    out, at = [], 0
    for f in sorted((f for f in findings if f.action == "fix" and f.fix), key=lambda f: f.claim.start):
        if f.claim.start < at:
            continue
        out += [text[at : f.claim.start], f"{f.fix}{mark}"]
        at = f.claim.end
    return "".join([*out, text[at:]])
