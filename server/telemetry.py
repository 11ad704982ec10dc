"""Prometheus metrics of one gateway, in its own registry (so several apps in one process do not collide).

Labels carry assistant names from the manifest only; a request for an unknown model counts under `unknown`,
so clients cannot grow the label set.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

UNKNOWN = "unknown"
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_RETRIEVAL = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    """Per-assistant counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lorag_requests", "Chat completion requests.", ["assistant", "stream"], registry=r)
        self.errors = Counter("lorag_errors", "Requests answered with an error.", ["assistant", "status"], registry=r)
        self.disconnects = Counter(
            "lorag_client_disconnects", "Streams the client left before the end.", ["assistant"], registry=r
        )
        self.ttft = Histogram(
            "lorag_time_to_first_token_seconds",
            "From request received to the first streamed chunk sent.",
            ["assistant"],
            buckets=_LATENCY,
            registry=r,
        )
        self.latency = Histogram(
            "lorag_request_duration_seconds",
            "From request received to the last byte sent.",
            ["assistant", "stream"],
            buckets=_LATENCY,
            registry=r,
        )
        self.retrieval = Histogram(
            "lorag_retrieval_duration_seconds",
            "Catalog retrieval (embedding and Qdrant search) per request.",
            ["assistant"],
            buckets=_RETRIEVAL,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "lorag_prompt_tokens", "Prompt tokens, as vLLM counted them.", ["assistant"], registry=r
        )
        self.completion_tokens = Counter(
            "lorag_completion_tokens", "Completion tokens, as vLLM counted them.", ["assistant"], registry=r
        )

        self.grounding_checked = Counter(
            "lorag_grounding_checked", "Answers the truthfulness guard checked.", ["assistant"], registry=r
        )
        self.grounding_unsupported = Counter(
            "lorag_grounding_unsupported", "Checked answers with an unsupported claim.", ["assistant"], registry=r
        )
        self.grounding_corrected = Counter(
            "lorag_grounding_corrected", "Answers sent with a figure corrected.", ["assistant"], registry=r
        )
        self.grounding_blocked = Counter(
            "lorag_grounding_blocked", "Answers replaced by the assistant's refusal.", ["assistant"], registry=r
        )

    def grounded(self, assistant: str, unsupported: bool, corrected: bool, blocked: bool) -> None:
        """Count one answer the guard checked."""
        self.grounding_checked.labels(assistant).inc()
        for counter, happened in (
            (self.grounding_unsupported, unsupported),
            (self.grounding_corrected, corrected),
            (self.grounding_blocked, blocked),
        ):
            if happened:
                counter.labels(assistant).inc()

    def usage(self, assistant: str, usage: Any) -> None:
        """Count the tokens of a usage object, when vLLM sent one."""
        if not isinstance(usage, dict):
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int):
            self.prompt_tokens.labels(assistant).inc(prompt)
        if isinstance(completion, int):
            self.completion_tokens.labels(assistant).inc(completion)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
