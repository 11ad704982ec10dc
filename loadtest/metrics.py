"""Summaries of recorded requests, with the definitions of `vllm bench serve`.

They follow `calculate_metrics` in vLLM's vllm/benchmarks/serve.py (read in vLLM 0.32):

- TTFT, ITL and end-to-end latency (E2EL) per request as loadtest/record.py measures them; ITL pools the gaps of
  every successful request.
- TPOT per request = (E2EL - TTFT) / (output tokens - 1), only for requests with more than one output token.
- mean and percentiles over successful requests; percentiles interpolate linearly between closest ranks (numpy's
  default, which vLLM calls). Where vLLM reports 0 for an empty list, this reports None.
- request throughput = completed / duration; output throughput = output tokens of completed requests / duration.
- goodput = completed requests meeting every SLO / duration; a request below two output tokens counts as TPOT 0
  (vLLM's rule), and an SLO holds when the value is at most its bound.

The duration is the wall time the requests were running (in compare mode, the sum of one target's blocks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from loadtest.record import RequestRecord
from retrieval.scores import percentile

PERCENTILES = (50, 90, 99)
METRICS = ("ttft", "tpot", "itl", "e2el")
STATS = ("mean", "p50", "p90", "p99")
RATES = ("request_throughput", "output_throughput", "goodput")

Distribution = dict[str, float | None]


@dataclass(frozen=True)
class SLO:
    """Service-level objectives in milliseconds; None: not checked."""

    ttft_ms: float | None = 450.0
    tpot_ms: float | None = 40.0
    e2el_ms: float | None = None


@dataclass
class Summary:
    """One set of requests (a target at one load level, or one assistant within it)."""

    requests: int
    completed: int
    failed: int
    errors: dict[str, int]
    duration_s: float
    output_tokens: int
    request_throughput: float
    output_throughput: float
    goodput: float
    good: int
    ttft_ms: Distribution = field(default_factory=dict)
    tpot_ms: Distribution = field(default_factory=dict)
    itl_ms: Distribution = field(default_factory=dict)
    e2el_ms: Distribution = field(default_factory=dict)
    first_error: str = ""

    def distribution(self, metric: str) -> Distribution:
        """The distribution of one of METRICS."""
        value: Distribution = getattr(self, f"{metric}_ms")
        return value


def distribution(seconds: list[float]) -> Distribution:
    """Mean and percentiles in milliseconds; None for each when there are no values."""
    if not seconds:
        return dict.fromkeys(STATS)
    stats: Distribution = {"mean": sum(seconds) / len(seconds) * 1000}
    for q in PERCENTILES:
        stats[f"p{q}"] = percentile(seconds, q) * 1000
    return stats


def is_good(record: RequestRecord, slo: SLO) -> bool:
    """Whether a successful request meets every SLO given (vLLM's goodput rule)."""
    if not record.ok:
        return False
    checks = (
        (slo.ttft_ms, record.ttft),
        (slo.tpot_ms, record.tpot or 0.0),  # below two tokens: TPOT 0, as vLLM counts it
        (slo.e2el_ms, record.latency),
    )
    return all(bound is None or (value is not None and value * 1000 <= bound) for bound, value in checks)


def summarize(records: Iterable[RequestRecord], duration_s: float, slo: SLO | None = None) -> Summary:
    """Throughput, goodput, errors by type and the latency distributions of `records` run over `duration_s`."""
    slo = slo or SLO()
    records = list(records)
    done = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    tokens = sum(r.output_tokens for r in done)
    good = sum(is_good(r, slo) for r in done)
    per_s = 1 / duration_s if duration_s > 0 else 0.0
    return Summary(
        requests=len(records),
        completed=len(done),
        failed=len(failed),
        errors=dict(Counter(str(r.error) for r in failed).most_common()),
        duration_s=duration_s,
        output_tokens=tokens,
        request_throughput=len(done) * per_s,
        output_throughput=tokens * per_s,
        goodput=good * per_s,
        good=good,
        ttft_ms=distribution([r.ttft for r in done if r.ttft is not None]),
        tpot_ms=distribution([t for r in done if (t := r.tpot) is not None]),
        itl_ms=distribution([gap for r in done for gap in r.itl]),
        e2el_ms=distribution([r.latency for r in done if r.latency is not None]),
        first_error=f"{failed[0].error}: {failed[0].detail}" if failed else "",
    )


def by_assistant(records: Iterable[RequestRecord]) -> dict[str, list[RequestRecord]]:
    """Records grouped by assistant, in order of first appearance."""
    groups: dict[str, list[RequestRecord]] = {}
    for record in records:
        groups.setdefault(record.assistant, []).append(record)
    return groups


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(gateway: Summary, direct: Summary) -> dict[str, float | None]:
    """Gateway / direct for each latency statistic and each rate (None where direct is 0 or missing)."""
    out: dict[str, float | None] = {}
    for metric in METRICS:
        g, d = gateway.distribution(metric), direct.distribution(metric)
        for stat in STATS:
            out[f"{metric}_{stat}"] = _ratio(g.get(stat), d.get(stat))
    for rate in RATES:
        out[rate] = _ratio(getattr(gateway, rate), getattr(direct, rate))
    return out
