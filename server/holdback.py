"""The guard on a stream: vLLM's SSE payloads in, the payloads the client may see out.

Under `annotate` nothing is held: content is collected and the verdict rides on the chunk that finishes the
answer (`grounding`, next to `sources`). Under `correct` and `block` the last `holdback_chars` characters of each
choice's content are held back, and never a figure cut in two, so every price and stock phrase is checked with
what follows it before it is sent; the finish chunk flushes the rest. A blocked answer keeps what was already sent
(checked, clean) up to the sentence that failed, then the assistant's refusal; what vLLM generates after it is
dropped and the choice finishes with `content_filter`. Only `delta.content` is read: `reasoning_content` and tool
calls pass through untouched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from server.grounding import Facts, Finding, check, corrected
from server.guard import CONTENT_FILTER, GuardConfig, Verdict

_CONTENT = b'"content"'
_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')
_SENTENCE_END = re.compile(r"[.!?\n]\s")


@dataclass
class _Choice:
    text: str = ""  # content vLLM sent so far
    sent: int = 0  # how much of `text` has been checked and released
    blocked: bool = False
    findings: list[Finding] = field(default_factory=list)


class StreamGuard:
    """One stream's guard state, per choice."""

    def __init__(self, facts: Facts, config: GuardConfig) -> None:
        self.facts = facts
        self.config = config
        self.hold = config.policy in ("correct", "block")
        self.choices: dict[int, _Choice] = {}
        self.verdict = Verdict(config.policy)

    def process(self, data: bytes) -> bytes | None:
        """The payload to relay for one upstream payload, or None when all it carried is held back."""
        if _CONTENT not in data and not _FINISHED.search(data):
            return data
        try:
            chunk = json.loads(data)
        except ValueError:
            return data
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
            return data
        keep = False
        for choice in chunk["choices"]:
            if isinstance(choice, dict):
                keep = self._choice(choice) or keep
        if not self.hold and not _done(chunk):
            return data  # annotate changes nothing: the bytes go out as vLLM sent them
        if _done(chunk):  # the verdict so far: with n > 1, the last choice to finish carries all of it
            chunk["grounding"] = self.verdict.as_json()
        if not keep:
            return None
        return json.dumps(chunk, separators=(",", ":")).encode()

    def _choice(self, choice: dict[str, Any]) -> bool:
        """Rewrite one choice of a chunk in place; whether it still carries anything."""
        index = choice.get("index", 0)
        state = self.choices.setdefault(index if isinstance(index, int) else 0, _Choice())
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        content = delta.get("content")
        finished = bool(choice.get("finish_reason"))
        if isinstance(content, str):
            state.text += content
        out = self._release(state, index, finished) if self.hold else (content or "")
        if not self.hold and finished:
            self._record(state, index, check(state.text, self.facts))
        if isinstance(content, str) or out:
            delta["content"] = out
            choice["delta"] = delta
        if finished and state.blocked:
            choice["finish_reason"] = CONTENT_FILTER
        others = any(v not in (None, "", []) for k, v in delta.items() if k not in ("content", "role"))
        return bool(out) or finished or others or "role" in delta or choice.get("logprobs") is not None

    def _release(self, state: _Choice, index: int, finished: bool) -> str:
        """The content of `state` that is checked and may go out now (corrected, or ending in the refusal)."""
        if state.blocked:
            return ""
        text = state.text
        if not finished and len(text) - self.config.holdback_chars - state.sent < _check_step(len(text)):
            return ""  # too little new text to release: holding it back a little longer is cheaper than a check
        findings = check(text, self.facts)
        safe = len(text) if finished else _boundary(text, len(text) - self.config.holdback_chars)
        for f in findings:  # never release part of a claim, nor a claim whose end could still grow
            if f.claim.start < safe < f.claim.end + 1 and not finished:
                safe = f.claim.start
        safe = max(safe, state.sent)
        ready = [f for f in findings if f.claim.end <= safe]
        fatal = [f for f in ready if self.config.policy == "block" or f.action == "block"]
        if fatal:
            cut = max(state.sent, _sentence_start(text, fatal[0].claim.start))
            fixes = [f for f in ready if f.action == "fix" and state.sent <= f.claim.start and f.claim.end <= cut]
            head = _shifted(text, state.sent, cut, fixes, self.config.mark)
            out = head + ("" if cut == 0 or text[cut - 1].isspace() else " ") + self.config.refusal
            state.blocked, state.sent = True, len(text)
            self._record(state, index, findings)
            return out
        fixes = [f for f in ready if f.action == "fix" and f.claim.start >= state.sent]
        out = _shifted(text, state.sent, safe, fixes, self.config.mark)
        state.sent = safe
        if finished:
            self._record(state, index, findings)
        return out

    def _record(self, state: _Choice, index: int, findings: list[Finding]) -> None:
        state.findings = findings
        self.verdict.findings += [(index, f) for f in findings]
        if self.hold and not state.blocked:
            self.verdict.corrected += sum(1 for f in findings if f.action == "fix")
        self.verdict.blocked = self.verdict.blocked or state.blocked


def _shifted(text: str, start: int, end: int, fixes: list[Finding], mark: str) -> str:
    """text[start:end] with the fixes (all inside it) applied."""
    return corrected(text[start:end], [_moved(f, -start) for f in fixes], mark)


def _moved(f: Finding, by: int) -> Finding:
    return replace(f, claim=replace(f.claim, start=f.claim.start + by, end=f.claim.end + by))


def _check_step(length: int) -> int:
    """How much releasable text must pile up before the answer is checked again. Each check reads the whole answer
    (a price is matched to the product named before it, possibly sentences earlier), so checking on every chunk
    costs the square of the answer's length; past 256 characters the step grows with the length, which keeps the
    number of checks logarithmic and holds back at most a sixteenth of the answer more."""
    return 0 if length < 256 else length // 16


def _boundary(text: str, at: int) -> int:
    """The last word boundary at or before `at` (0 when none): a number is never cut in two."""
    if at <= 0:
        return 0
    while at > 0 and not text[at - 1].isspace():
        at -= 1
    return at


def _sentence_start(text: str, at: int) -> int:
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, at)]
    return ends[-1] if ends else 0


def _done(chunk: dict[str, Any]) -> bool:
    return any(isinstance(c, dict) and c.get("finish_reason") for c in chunk.get("choices") or [])
