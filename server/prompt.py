"""From a conversation to what is searched in the catalog and what the model is shown.

The search text is the last user turn. A turn that only points back ("is it in stock?", "what about that one?")
names nothing to search for, so the nearest earlier turn that names a product is searched with it: first the
user's own turns, then the assistant's last answer (which names the product it talked about).

The system message is built by `retrieval.facts.system_message`, the layout the adapters were trained on:
persona, then any system text the client sent, then the grounding rules and the fenced facts block.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from retrieval.facts import render_facts, system_message
from retrieval.question import parse
from retrieval.retriever import Hit, RetrievalResult
from server.assistants import RetrievalConfig
from server.protocol import ChatMessage, Source

# Pronouns, "that one"-style phrases, a closing "that?"/"this?", or a turn opening with "and"/"what about".
# A bare "that" is left out: it is more often a relative pronoun ("a grinder that fits 58 mm baskets").
_REFERS_BACK = re.compile(
    r"\b(it|its|it's|them|they|those|these|the same)\b"
    r"|\b(that|this|the other|the first|the second|the last) (one|model|machine|product|item)\b"
    r"|\b(that|this)\s*[?.!]*\s*$"
    r"|^\s*(and|what about|how about)\b",
    re.IGNORECASE,
)
_SYSTEM_ROLES = ("system", "developer")
# A reasoning model's thinking, when a client sends it back inside an answer's content: it weighs options and
# names products the answer never recommended, so it is not searched as what the assistant said.
_THINKING = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)


def refers_back(text: str) -> bool:
    """Whether a turn points at something said earlier instead of naming it."""
    return bool(_REFERS_BACK.search(text))


def retrieval_query(messages: Sequence[ChatMessage], context_turns: int = 2) -> str:
    """The text to search the catalog for ('' when the conversation has no user text)."""
    turns = [(m.role, _answer(m) if m.role == "assistant" else m.text().strip()) for m in messages]
    users = [text for role, text in turns if role == "user" and text]
    if not users:
        return ""
    last = users[-1]
    if context_turns == 0 or parse(last).names_product or not refers_back(last):
        return last
    earlier = users[-1 - context_turns : -1]
    for turn in reversed(earlier):
        if parse(turn).names_product:
            return f"{turn}\n{last}"
    answers = [text for role, text in turns if role == "assistant" and text]
    if answers and parse(answers[-1]).names_product:
        return f"{answers[-1]}\n{last}"
    return f"{earlier[-1]}\n{last}" if earlier else last


def _answer(message: ChatMessage) -> str:
    """What an assistant turn said: its content without thinking (a separate `reasoning` field is never read)."""
    return _THINKING.sub("", message.text()).strip()


def shown_hits(result: RetrievalResult, config: RetrievalConfig) -> tuple[list[Hit], bool]:
    """The hits that go into the facts block, and whether the NOT IN CATALOG line goes with them."""
    unknown = result.unknown and config.unknown_signal
    hits = result.hits[: config.unknown_max_facts] if unknown else result.hits[: config.top_k]
    return hits, unknown


# Catalog text is data: it must not end the block, open another, or start a line of its own that reads as an
# instruction. retrieval.facts renders fields as they are (the training data has none of these), so the gateway
# defuses them here; products without such text render byte for byte as in training.
def facts_block(hits: Sequence[Hit], unknown: bool) -> str:
    """The fenced facts block, exactly as the adapters saw it in training (hostile catalog text is defused by
    retrieval.facts, for training and serving alike)."""
    return render_facts([h.product for h in hits], unknown=unknown)


def sources(hits: Sequence[Hit]) -> list[Source]:
    """The products an answer was grounded on, for the `sources` extension field."""
    return [Source(id=h.product.id, name=h.product.name, score=round(h.score, 4)) for h in hits]


def upstream_messages(
    messages: Sequence[ChatMessage], *, persona: str | None, facts: str | None
) -> list[dict[str, Any]]:
    """The conversation as vLLM gets it: one system message first, then the other turns as sent.

    The client's own system (and developer) text is kept, after the persona; `facts` None means the
    assistant does not retrieve, and then no grounding rules are added either.
    """
    client_system = "\n".join(t for m in messages if m.role in _SYSTEM_ROLES and (t := m.text().strip()))
    head = "\n".join(p.strip() for p in (persona, client_system) if p and p.strip()) or None
    system = system_message(facts, persona=head) if facts is not None else head
    turns = [m.model_dump(exclude_none=True) for m in messages if m.role not in _SYSTEM_ROLES]
    return [{"role": "system", "content": system}, *turns] if system else turns
