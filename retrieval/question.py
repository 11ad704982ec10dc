"""What a shopper's question says beyond its words: model codes, product names, price bounds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from retrieval.documents import CODE, normalize_code
from retrieval.filters import SearchFilters
from retrieval.lexical import STOPWORDS, stem

# Sizes and dimensions are not model codes: "48'x34'", "18 x 24", "2x4". The "x" and what follows go.
_DIMENSION = re.compile(r"\d(?:\.\d+)?\s*(?:'|\"|in\.?|ft\.?|cm|mm)?\s*[xX×]\s*\d")
# Letters that, written straight before a number, name a unit or a standard size rather than a model: bulb shapes
# and bases (MR16, GU10, PAR38, BR30), wire and pipe sizes (AWG12, SCH40), R-values, pack and volume counts.
_SIZE_PREFIXES = frozenset(
    "X R MR GU PAR BR AWG SCH CAT NO SZ SIZE PK PACK QT GAL OZ LB LBS FT IN MM CM KW BTU HP AMP GPM PSI".split()
)
_BULB_BASE = re.compile(r"[Ee](?:1[0-7]|2[67]|39|40)")  # Edison screw bases: E12, E26, E39
_WORD = re.compile(r"[A-Za-z][A-Za-z'&]+")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n)\s*[\"'(]*([A-Za-z][\w'&-]*)")

_AMOUNT = r"(?:\$\s*(\d[\d,]*(?:\.\d+)?)|(\d[\d,]*(?:\.\d+)?)\s*(?:dollars|usd|bucks|\$))"
_UNDER = re.compile(
    r"\b(?:under|below|less than|cheaper than|up to|at most|max(?:imum)?|no more than)\s*" + _AMOUNT, re.IGNORECASE
)
_OVER = re.compile(r"\b(?:over|above|more than|at least|from|starting at)\s*" + _AMOUNT, re.IGNORECASE)
_BETWEEN = re.compile(r"\bbetween\s*\$?\s*(\d[\d,]*(?:\.\d+)?)\s*(?:and|-|to)\s*" + _AMOUNT, re.IGNORECASE)


@dataclass(frozen=True)
class Question:
    """The parts of a question the retriever acts on."""

    text: str
    codes: frozenset[str]  # normalised model codes / SKUs ("V520", "ESP1042")
    names: tuple[str, ...]  # capitalised words that look like brand or series names
    filters: SearchFilters | None  # price bounds written in the question

    @property
    def names_product(self) -> bool:
        """True when the question names something specific (a code or a proper name)."""
        return bool(self.codes or self.names)


def _amount(match: re.Match[str], first_group: int) -> Decimal:
    raw = match.group(first_group) or match.group(first_group + 1)
    return Decimal(raw.replace(",", ""))


def price_filters(text: str) -> SearchFilters | None:
    """Price bounds like 'under $50', 'over 100 dollars', 'between $20 and $40' (with a currency)."""
    if m := _BETWEEN.search(text):
        low, high = Decimal(m.group(1).replace(",", "")), _amount(m, 2)
        return SearchFilters(min_price=min(low, high), max_price=max(low, high))
    under, over = _UNDER.search(text), _OVER.search(text)
    if not under and not over:
        return None
    return SearchFilters(max_price=_amount(under, 1) if under else None, min_price=_amount(over, 1) if over else None)


def question_codes(text: str) -> set[str]:
    """Normalised model codes and SKUs in a question; sizes, dimensions and units are not codes."""
    codes = set()
    for m in CODE.finditer(text):
        before = text[max(0, m.start() - 8) : m.start() + 2]
        letters = re.match(r"[A-Za-z]+", m.group(0))
        is_unit = "-" not in m.group(0) and letters is not None and letters.group(0).upper() in _SIZE_PREFIXES
        if _DIMENSION.search(before) or is_unit or _BULB_BASE.fullmatch(m.group(0)):
            continue
        codes.add(normalize_code(m.group(0)))
    return codes


def name_words(text: str) -> tuple[str, ...]:
    """Capitalised words not opening a sentence and not function words: likely brand or series names.

    In a question written all in capitals or Title Case ("GE Cook Top", "Bath Sink Faucet"), as shoppers type
    into search boxes, capitals say nothing: it names nothing by capitals alone.
    """
    text = CODE.sub(lambda m: " " * len(m.group(0)), text)  # "ESP" of "ESP-1042" is a code, not a name
    openers = {m.start(1) for m in _SENTENCE_START.finditer(text)}
    names, lower = [], 0
    for m in _WORD.finditer(text):
        word = m.group(0)
        if not word[0].isupper():
            lower += 1
        elif m.start() not in openers and word.lower() not in STOPWORDS and len(word) >= 3:
            names.append(word)
    return tuple(dict.fromkeys(names)) if lower else ()


def parse(text: str) -> Question:
    """Read codes, names and price bounds out of a question."""
    return Question(text, frozenset(question_codes(text)), name_words(text), price_filters(text))


def _edits(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions, adjacent swaps."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


def _similar(a: str, b: str) -> bool:
    # One typo ("Velora", "Lmua", "Blt") still names the product; two-letter words must match exactly. Typists
    # rarely miss a word's first letter, and words that differ there are often other words: "toaster", "coaster".
    if a == b:
        return True
    return min(len(a), len(b)) >= 3 and a[0] == b[0] and abs(len(a) - len(b)) <= 1 and _edits(a, b) <= 1


def content_words(text: str) -> tuple[str, ...]:
    """The words of a question that say what is wanted: lower-cased, stemmed, function words dropped."""
    words = (w.lower() for w in _WORD.findall(text))
    return tuple(dict.fromkeys(stem(w) for w in words if w not in STOPWORDS))


def covers(words: tuple[str, ...], text: str, name: str | None = None) -> bool:
    """Whether `text` holds every one of `words` (stemmed), split compounds joined ("cook top" is "cooktop"), a typo
    allowed in words of five letters or more against `name` (default: `text`) only, so that a description's
    "roaster" does not pass for "toaster". What the lexical side knows before similarity is asked."""
    if not words:
        return False
    vocabulary = {stem(w.lower()) for w in _WORD.findall(text)}
    fuzzy = vocabulary if name is None else {stem(w.lower()) for w in _WORD.findall(name)}
    joined = {a + b for a, b in zip(words, words[1:], strict=False)}
    compounds = {v for v in vocabulary if v in joined}
    for word in words:
        if word in vocabulary or any(word in c for c in compounds):
            continue
        if len(word) < 5 or not any(_similar(word, v) for v in fuzzy):
            return False
    return True


def shares_word(words: tuple[str, ...], text: str) -> bool:
    """Whether `text` holds any of `words` (stemmed), a typo allowed in words of five letters or more."""
    vocabulary = {stem(w.lower()) for w in _WORD.findall(text)}
    return any(w in vocabulary or (len(w) >= 5 and any(_similar(w, v) for v in vocabulary)) for w in words)


def mentions(words: tuple[str, ...], text: str) -> bool:
    """Whether every word appears in `text`, allowing one typo in longer words."""
    vocabulary = {w.lower() for w in _WORD.findall(text)}
    return all(any(_similar(word.lower(), v) for v in vocabulary) for word in words)
