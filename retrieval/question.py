"""What a shopper's question says beyond its words: model codes, product names, price bounds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from retrieval.documents import CODE, codes_in
from retrieval.filters import SearchFilters
from retrieval.lexical import STOPWORDS

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


def name_words(text: str) -> tuple[str, ...]:
    """Capitalised words not opening a sentence and not function words: likely brand or series names."""
    text = CODE.sub(lambda m: " " * len(m.group(0)), text)  # "ESP" of "ESP-1042" is a code, not a name
    openers = {m.start(1) for m in _SENTENCE_START.finditer(text)}
    names = []
    for m in _WORD.finditer(text):
        word = m.group(0)
        if m.start() in openers or not word[0].isupper() or word.lower() in STOPWORDS or len(word) < 3:
            continue
        names.append(word)
    return tuple(dict.fromkeys(names))


def parse(text: str) -> Question:
    """Read codes, names and price bounds out of a question."""
    return Question(text, frozenset(codes_in(text)), name_words(text), price_filters(text))


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
    # One typo ("Velora", "Lmua", "Blt") still names the product; two-letter words must match exactly.
    return a == b or (min(len(a), len(b)) >= 3 and abs(len(a) - len(b)) <= 1 and _edits(a, b) <= 1)


def mentions(words: tuple[str, ...], text: str) -> bool:
    """Whether every word appears in `text`, allowing one typo in longer words."""
    vocabulary = {w.lower() for w in _WORD.findall(text)}
    return all(any(_similar(word.lower(), v) for v in vocabulary) for word in words)
