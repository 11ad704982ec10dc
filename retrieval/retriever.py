"""Question in, catalog facts out: hybrid search plus the 'not in the catalog' signal.

A question is searched densely (MiniLM) and lexically (BM25-style sparse vectors) and the two lists are fused
by Qdrant's Query API. Then the retriever decides whether the question names a product the catalog holds:

- a question with a model code or SKU ("V-530", "ESP-1042") is about a product we hold only if some product
  carries that exact code; a near neighbour with another code is not that product, however close its vector.
  An exact code match found outside the top hits is looked up and put first; a code shared across brands
  must come with the brand or series asked for;
- a question with brand or series names ("the Aurin Meridian") is about a product we hold only if one of the
  top candidates carries all those names (one typo allowed); those that do are put first;
- any other question is generic ("a waterproof scale"): it asks for a kind of product, and the shop lacks that
  kind only when nothing the search found is called anything like it: no top hit's name holds one of the
  question's words (one typo allowed in longer words), the question names none of their categories, and even
  the best hit is a poor semantic match (dense cosine below a threshold). Real shoppers' queries are loose
  ("cameras without wifi", "herb steeper"): their matches score low on similarity but share a word of their name,
  while a kind the shop does not sell ("a toaster" in a coffee shop) shares none. Names, not categories: a
  category's words are shared across kinds ("bread maker" is not a "coffee maker"), a name's are its own.

Price bounds written in a generic question ("under $50") become a filter; a question that names a product is
never filtered, or "Is the V-520 under $500?" could hide the V-520 and be answered "not in the catalog".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retrieval import lexical
from retrieval.catalog import Product
from retrieval.documents import lexical_text, product_codes
from retrieval.embedder import Embedder
from retrieval.filters import SearchFilters
from retrieval.question import Question, content_words, covers, mentions, parse, shares_word
from retrieval.settings import Fusion, RetrievalSettings
from retrieval.store import CatalogIndex, Method, StoredHit

# Candidates fetched per question whatever top_k is, among which a named product is looked for.
CANDIDATES = 10


@dataclass(frozen=True)
class Hit:
    """One product and its fusion score (higher is better; comparable only within one result)."""

    product: Product
    score: float
    similarity: float | None = None  # dense cosine similarity to the question, when computed


@dataclass(frozen=True)
class RetrievalResult:
    """The facts to inject and whether the question names a product the catalog does not hold."""

    hits: list[Hit]
    unknown: bool
    reason: str = ""  # why `unknown` is set, for logs and the CLI
    filters: SearchFilters | None = field(default=None)  # the filters actually applied

    @property
    def products(self) -> list[Product]:
        """The hit products, best first (what render_facts takes)."""
        return [h.product for h in self.hits]


class Retriever:
    """Searches the catalog store for a question."""

    def __init__(
        self,
        store: CatalogIndex,
        embedder: Embedder,
        *,
        fusion: Fusion = "dbsf",
        prefetch_limit: int = 50,
        unknown_min_similarity: float = 0.45,
        parse_prices: bool = True,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.fusion: Method = fusion
        self.prefetch_limit = prefetch_limit
        self.unknown_min_similarity = unknown_min_similarity
        self.parse_prices = parse_prices

    @classmethod
    def from_settings(cls, settings: RetrievalSettings, store: CatalogIndex, embedder: Embedder) -> Retriever:
        """A retriever over `store` (which the caller owns and closes; see store.open_store) configured by
        settings."""
        return cls(
            store,
            embedder,
            fusion=settings.fusion,
            prefetch_limit=settings.prefetch_limit,
            unknown_min_similarity=settings.unknown_min_similarity,
        )

    def search(
        self,
        query: str,
        *,
        method: Method | None = None,
        limit: int = 10,
        filters: SearchFilters | None = None,
        with_dense: bool = False,
    ) -> list[StoredHit]:
        """Plain retrieval by one method, without parsing or the unknown signal (what benchmarks measure)."""
        dense = self.embedder.embed_query(query)
        return self.store.search(
            dense,
            lexical.query_vector(query),
            method=method or self.fusion,
            limit=limit,
            prefetch_limit=self.prefetch_limit,
            filters=filters,
            with_dense=with_dense,
        )

    def retrieve(self, query: str, *, top_k: int = 4, filters: SearchFilters | None = None) -> RetrievalResult:
        """The top_k products for a question, and whether it names a product the catalog lacks."""
        question = parse(query)
        applied = filters
        if self.parse_prices and question.filters is not None and not question.names_product:
            applied = question.filters.merged(filters)
        dense = self.embedder.embed_query(query)
        sparse = lexical.query_vector(query)

        def candidates(where: SearchFilters | None) -> list[StoredHit]:
            # A few more than asked for, so a named product ranked just below top_k can be promoted.
            return self.store.search(
                dense,
                sparse,
                method=self.fusion,
                limit=max(top_k, CANDIDATES),
                prefetch_limit=self.prefetch_limit,
                filters=where,
                with_dense=True,
            )

        found = candidates(applied)
        if not found and applied is not filters:
            # The price written in the question matched nothing (or the catalog lists no prices): the closest
            # products, shown with their real prices or none, beat calling a product that is there unknown.
            applied = filters
            found = candidates(applied)
        hits = [Hit(h.product, h.score, _cosine(dense, h.dense)) for h in found]
        if question.codes:
            hits, unknown, reason = self._by_code(question, hits, filters, top_k)
        elif question.names:
            named = [h for h in hits if mentions(question.names, _name_text(h.product))]
            # A hit holding every word of the question (typos, split compounds) is the product asked for, whatever
            # the capitals suggested.
            unknown = not named and not self._covered(query, hits)
            reason = f"no product named {' '.join(question.names)!r}" if unknown else ""
            hits = _first(named, hits)
        else:
            hits = hits[:top_k]
            words = set(lexical.tokenize(query))
            category_named = any(names_category(h.product, words) for h in hits)
            best = max((h.similarity or 0.0 for h in hits), default=0.0)
            # The lexical side first: a misspelt "bath sinnk" has a low similarity but a hit holding its words.
            unknown = (
                not category_named
                and best < self.unknown_min_similarity
                and not self._covered(query, hits)
                and not named_alike(query, hits)
            )
            reason = f"no hit named like it and best similarity {best:.2f} < {self.unknown_min_similarity:.2f}"
            reason = reason if unknown else ""
        return RetrievalResult(hits[:top_k], unknown, reason, applied)

    @staticmethod
    def _covered(query: str, hits: list[Hit]) -> bool:
        """Whether one of the hits holds every content word of the question (see question.covers)."""
        words = content_words(query)
        return any(covers(words, lexical_text(h.product), h.product.name) for h in hits)

    def _by_code(
        self, question: Question, hits: list[Hit], filters: SearchFilters | None, top_k: int
    ) -> tuple[list[Hit], bool, str]:
        """Put exact code matches first (looking up codes the search missed); none means unknown."""
        exact = [h for h in hits if question.codes & set(product_codes(h.product))]
        missing = question.codes.difference(*(product_codes(h.product) for h in exact))
        if missing:
            top = hits[0].score if hits else 1.0
            held = {(h.product.tenant, h.product.id) for h in exact}
            looked_up = self.store.find_codes(sorted(missing), filters, top_k)
            exact += [Hit(p, top) for p in looked_up if (p.tenant, p.id) not in held]
        codes = ", ".join(sorted(question.codes))
        if not exact:
            return hits, True, f"no product with code {codes}"
        # Codes repeat across brands ("L-565"): the code's products must also carry the names asked for.
        if question.names and not mentions(question.names, " ".join(_name_text(h.product) for h in exact)):
            return hits, True, f"no product {' '.join(question.names)!r} with code {codes}"
        # Of several products sharing the code, the one with more of the names asked for comes first.
        exact.sort(key=lambda h: -sum(mentions((w,), _name_text(h.product)) for w in question.names))
        return _first(exact, hits), False, ""


def _first(preferred: list[Hit], hits: list[Hit]) -> list[Hit]:
    """`preferred` hits, then the others in their order."""
    keys = {(h.product.tenant, h.product.id) for h in preferred}
    return preferred + [h for h in hits if (h.product.tenant, h.product.id) not in keys]


def _name_text(product: Product) -> str:
    return " ".join([product.name, product.category or "", *product.attributes.values()])


def named_alike(query: str, hits: list[Hit]) -> bool:
    """Whether some hit's name holds a content word of the question (see question.shares_word)."""
    words = content_words(query)
    return any(shares_word(words, h.product.name) for h in hits)


def names_category(product: Product, words: set[str]) -> bool:
    """Whether the question's words include all of the product's (known) category."""
    terms = set(lexical.tokenize(product.category or ""))
    return bool(terms) and terms <= words


def _cosine(query: np.ndarray, vector: np.ndarray | None) -> float | None:
    # Stored vectors are normalised at ingest and the query at embedding, so the dot product is the cosine.
    return None if vector is None else float(np.dot(query, vector))
