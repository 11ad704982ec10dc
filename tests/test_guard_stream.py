"""Unit tier: the guard on a stream (server.holdback), fed vLLM-shaped SSE payloads token by token."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from retrieval.catalog import Product
from server.grounding import Facts
from server.guard import GuardConfig
from server.holdback import StreamGuard

GRINDER = Product(id="GRN-1004", name="Vellora Crema V-520", price=Decimal("1299.00"), currency="USD", stock=12)
FACTS = Facts((GRINDER,))


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return json.dumps({"id": "c1", "object": "chat.completion.chunk", "choices": [choice]}).encode()


def _tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S{1,3}", text)  # short pieces, so numbers arrive split like a tokenizer splits them


def _run(text: str, config: GuardConfig, reasoning: str = "") -> tuple[list[str], list[dict[str, Any]], StreamGuard]:
    """The content of every chunk sent, in order, the parsed chunks, and the guard."""
    guard = StreamGuard(FACTS, config)
    upstream = [_chunk({"role": "assistant", "content": ""})]
    upstream += [_chunk({"reasoning_content": r}) for r in _tokens(reasoning)]
    upstream += [_chunk({"content": t}) for t in _tokens(text)]
    upstream.append(_chunk({}, finish="stop"))
    sent = [out for data in upstream if (out := guard.process(data)) is not None]
    chunks = [json.loads(s) for s in sent]
    return [c["choices"][0]["delta"].get("content") or "" for c in chunks], chunks, guard


def test_correct_never_sends_the_wrong_price_not_even_in_part() -> None:
    text = "Great pick! The Vellora Crema V-520 is just $999.00, in stock (12 units). Treat yourself!"
    pieces, chunks, guard = _run(text, GuardConfig(policy="correct", holdback_chars=16))
    sent = "".join(pieces)
    assert sent == text.replace("$999.00", "$1,299.00 (catalog price)")
    assert all("999.00" not in "".join(pieces[: i + 1]).replace("1,299.00", "") for i in range(len(pieces)))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["grounding"]["verdict"] == "corrected=1" and guard.verdict.corrected == 1


def test_the_window_is_bounded_content_flows_before_the_answer_ends() -> None:
    text = ("Happy to help! The Vellora Crema V-520 costs $1,299.00 and is in stock (12 units). " * 3).strip()
    pieces, _, _ = _run(text, GuardConfig(policy="correct", holdback_chars=24))
    released_early = sum(len(p) for p in pieces[:-1])
    assert released_early >= len(text) - 24 - 20  # all but the window (and the figure at its edge) went out early
    assert "".join(pieces) == text


def test_block_keeps_the_clean_sentences_then_refuses_in_the_assistants_voice() -> None:
    text = "Great pick! The Vellora Aurora V-520 is just $349.00, in stock (4 units). Treat yourself!"
    pieces, chunks, guard = _run(text, GuardConfig(policy="block", refusal="Sadly I can't quote that."))
    sent = "".join(pieces)
    # Words already checked and sent stay ("The " went out before the name was complete); nothing after them does.
    assert sent.startswith("Great pick! ") and sent.endswith(" Sadly I can't quote that.")
    assert (
        "349" not in sent
        and "Aurora" not in sent
        and len(sent) <= len("Great pick! The Vellora Sadly I can't quote that.")
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter" and guard.verdict.blocked


def test_annotate_relays_vllms_bytes_and_reports_on_the_finish_chunk() -> None:
    text = "The Vellora Crema V-520 is $5."
    guard = StreamGuard(FACTS, GuardConfig(policy="annotate"))
    data = _chunk({"content": text})
    assert guard.process(data) is data
    final = json.loads(guard.process(_chunk({}, finish="stop")) or b"")
    assert [c["text"] for c in final["grounding"]["unsupported"]] == ["$5"]


def test_thinking_is_relayed_and_never_checked_as_the_answer() -> None:
    reasoning = "Maybe it costs $5? No, the facts say $1,299.00."
    pieces, chunks, guard = _run("It is $1,299.00.", GuardConfig(policy="block"), reasoning=reasoning)
    thought = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks)
    assert thought == reasoning and "".join(pieces) == "It is $1,299.00."
    assert not guard.verdict.findings and not guard.verdict.blocked


def test_a_long_answer_is_not_checked_again_on_every_chunk(monkeypatch: Any) -> None:
    import server.holdback
    from server.grounding import check as real

    calls: list[int] = []

    def counting(text: str, facts: Facts) -> Any:
        calls.append(len(text))
        return real(text, facts)

    monkeypatch.setattr(server.holdback, "check", counting)
    text = ("The Vellora Crema V-520 costs $1,299.00 and is in stock (12 units). It grinds evenly. " * 20).strip()
    pieces, _, _ = _run(text, GuardConfig(policy="correct", holdback_chars=32))
    assert "".join(pieces) == text
    # every chunk re-read the whole answer before: ~600 checks of up to 1,700 characters for these ~600 pieces
    assert len(_tokens(text)) > 500 and len(calls) < 150
