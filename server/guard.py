"""The truthfulness guard: an assistant's policy for answers whose claims the injected facts do not support.

`annotate` lists the unsupported claims (the `grounding` extension field, and the `x-lorag-grounding` header on
answers that are not streamed) and changes nothing; `correct` replaces a wrong price or stock figure with the
catalog's, followed by a mark, and refuses when no catalog figure can replace a claim (a price for a product that
was not shown or is NOT IN CATALOG, a discount); `block` refuses whenever a claim is unsupported. The refusal is the
assistant's own sentence from the manifest. Only `content` is checked: thinking (`reasoning_content`) is not the
answer. An assistant that does not retrieve has no facts to check against, and its answers go out unchecked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from retrieval.facts import NOT_IN_CATALOG
from retrieval.retriever import Hit
from server.grounding import Facts, Finding, asked, check, corrected, user_prices

Policy = Literal["off", "annotate", "correct", "block"]
CONTENT_FILTER = "content_filter"  # OpenAI's finish_reason for an answer the service replaced


class GuardConfig(BaseModel):
    """How an assistant treats answers with unsupported claims."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Policy = Field(
        default="annotate",
        description="off | annotate (list them) | correct (catalog figures, refuse what cannot be fixed) | block.",
    )
    refusal: str = Field(
        default="Sorry, I can't confirm that from our catalog, so I won't quote a price for it.",
        min_length=1,
        description="What a blocked answer says instead, in the assistant's voice.",
    )
    mark: str = Field(default=" (catalog price)", description="Put after every figure the guard corrected.")
    holdback_chars: int = Field(
        default=32,
        ge=16,
        le=512,
        description="Streams under correct/block: characters held back so a figure is checked before it is sent.",
    )

    @field_validator("policy", mode="before")
    @classmethod
    def _unquoted_off(cls, value: object) -> object:
        # YAML reads an unquoted `policy: off` as false.
        return "off" if value is False else value


def request_facts(facts_block: str | None, hits: Sequence[Hit], user_texts: Sequence[str]) -> Facts | None:
    """What the request was shown, for the guard; None when the assistant does not retrieve (nothing to check)."""
    if facts_block is None:
        return None
    products = tuple(h.product for h in hits)
    # What the latest message asks about: an earlier turn's fake must not hold back this turn's answer.
    missing, ids = asked(user_texts[-1], products) if user_texts else ((), frozenset[str]())
    return Facts(products, NOT_IN_CATALOG in facts_block, user_prices(user_texts), missing, ids)


@dataclass
class Verdict:
    """The guard's result for one answer (all its choices)."""

    policy: Policy
    findings: list[tuple[int, Finding]] = field(default_factory=list)
    corrected: int = 0
    blocked: bool = False

    @property
    def header(self) -> str:
        """The `x-lorag-grounding` value: supported, unsupported=N, corrected=N or blocked."""
        if self.blocked:
            return "blocked"
        if self.corrected:
            return f"corrected={self.corrected}"
        return f"unsupported={len(self.findings)}" if self.findings else "supported"

    def as_json(self) -> dict[str, Any]:
        """The `grounding` extension field."""
        claims = [{**f.as_json(), **({"choice": i} if i else {})} for i, f in self.findings]
        return {"policy": self.policy, "verdict": self.header, "unsupported": claims}


def judge(text: str, facts: Facts, config: GuardConfig) -> tuple[str, list[Finding], int, bool]:
    """An answer's text as the policy lets it out, its unsupported claims, how many were corrected, and whether
    it was blocked."""
    findings = check(text, facts)
    if config.policy in ("off", "annotate") or not findings:
        return text, findings, 0, False
    if config.policy == "block" or any(f.action == "block" for f in findings):
        return config.refusal, findings, 0, True
    fixes = sum(1 for f in findings if f.action == "fix")
    return corrected(text, findings, config.mark), findings, fixes, False


def guard_completion(answer: dict[str, Any], facts: Facts, config: GuardConfig) -> Verdict:
    """Check (and per policy change) every choice of a non-streamed answer; adds the `grounding` field."""
    verdict = Verdict(config.policy)
    for index, choice in enumerate(answer.get("choices") or []):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            continue
        text, findings, fixes, blocked = judge(message["content"], facts, config)
        message["content"] = text
        verdict.findings += [(index, f) for f in findings]
        verdict.corrected += fixes
        if blocked:
            verdict.blocked = True
            choice["finish_reason"] = CONTENT_FILTER
    answer["grounding"] = verdict.as_json()
    return verdict
