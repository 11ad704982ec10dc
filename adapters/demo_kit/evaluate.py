"""Held-out evaluation of the demo kit: fact accuracy and fake-product refusal, base model against each adapter.

Runs against any OpenAI-compatible server (the engine that `lorag engine` starts), greedy, so the figures are
those of the serving path, not of a training-time generate loop.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

import httpx

from adapters.demo_kit.data import Question, questions
from adapters.demo_kit.voices import REFUSAL_MARK
from retrieval.facts import format_price, format_stock
from retrieval.scores import percentile

_PRICE = re.compile(r"[$€£]\s?\d|\d[\d,]*\.\d\d")


@dataclass
class Score:
    """Counts for one model over the held-out set."""

    model: str
    facts_right: int = 0
    facts_total: int = 0
    refused: int = 0
    fakes_total: int = 0
    invented_price: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    completion_tokens: int = 0

    @property
    def fact_accuracy(self) -> float:
        return self.facts_right / self.facts_total if self.facts_total else 0.0

    @property
    def refusal_rate(self) -> float:
        return self.refused / self.fakes_total if self.fakes_total else 0.0

    def latency(self, q: float) -> float:
        """The q-th percentile (0-100) of request latency in seconds; 0 with no requests."""
        return percentile(self.seconds, q) if self.seconds else 0.0


def judge(q: Question, answer: str) -> bool:
    """A product question is right when the answer has its exact price and stock phrase; a fake one when it
    refuses and quotes no price."""
    if q.product is not None:
        price = format_price(q.product.price, q.product.currency)
        return price in answer and format_stock(q.product.stock) in answer
    return REFUSAL_MARK in answer.lower() and not _PRICE.search(answer)


async def _ask(client: httpx.AsyncClient, model: str, q: Question, max_tokens: int) -> tuple[str, float, int]:
    body = {"model": model, "messages": q.messages(), "max_tokens": max_tokens, "temperature": 0}
    started = time.monotonic()
    response = await client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    payload = response.json()
    content: str = payload["choices"][0]["message"]["content"] or ""
    return content, time.monotonic() - started, int(payload["usage"]["completion_tokens"])


async def evaluate(
    base_url: str,
    models: list[str],
    count: int = 200,
    seed: int = 20261128,
    concurrency: int = 8,
    max_tokens: int = 48,
    look_alikes: float = 0.0,
) -> list[Score]:
    """Ask every model the same held-out questions and score the answers."""
    held_out = questions("heldout", count, seed, look_alikes)
    gate = asyncio.Semaphore(concurrency)
    scores: list[Score] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
        for model in models:
            score = Score(model)

            async def one(q: Question, score: Score = score, model: str = model) -> None:
                async with gate:
                    answer, seconds, tokens = await _ask(client, model, q, max_tokens)
                score.seconds.append(seconds)
                score.completion_tokens += tokens
                ok = judge(q, answer)
                if q.product is not None:
                    score.facts_total += 1
                    score.facts_right += ok
                else:
                    score.fakes_total += 1
                    score.refused += ok
                    score.invented_price += bool(_PRICE.search(answer))
                if not ok:
                    score.failures.append((q.text, answer))

            await asyncio.gather(*(one(q) for q in held_out))
            scores.append(score)
    return scores


def table(scores: list[Score]) -> str:
    """A markdown table of the scores."""
    lines = [
        "| model | fact accuracy | refusal of fake products | fakes given a price | latency p50 / p90 "
        "| tokens/answer |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in scores:
        lines.append(
            f"| {s.model} | {s.fact_accuracy:.1%} ({s.facts_right}/{s.facts_total}) "
            f"| {s.refusal_rate:.1%} ({s.refused}/{s.fakes_total}) "
            f"| {s.invented_price}/{s.fakes_total} | {s.latency(50):.2f} / {s.latency(90):.2f} s "
            f"| {s.completion_tokens / max(1, len(s.seconds)):.1f} |"
        )
    return "\n".join(lines)
