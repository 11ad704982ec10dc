"""The soak's arithmetic and report (loadtest/soak.py runs it): what each answer counts as, how many 429s a key's
fixed windows predict, and the per-key and per-minute tables."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from loadtest.http1 import Answer
from retrieval.scores import percentile

WINDOW_S = 60.0  # the gateway's rate-limit window: one minute from a key's first request in it


@dataclass(frozen=True)
class KeySpec:
    """One API key of the soak and its limits (None: none)."""

    name: str
    tenant: str
    assistants: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    streams: int | None


@dataclass(frozen=True, slots=True)
class Record:
    """One request of the measured run: sent `t` seconds in, by key `key`; `problem` is empty when expected."""

    t: float
    key: int
    status: int  # 0: no HTTP answer
    seconds: float
    problem: str


def offered_per_minute(clients: int, interval: float) -> float:
    """The most requests per minute `clients` clients can send, one every `interval` seconds each."""
    return clients * WINDOW_S / interval


def classify(answer: Answer, stream: bool, limited: bool) -> tuple[int, str]:
    """The status and what is wrong with it ("" when it is what the soak expects)."""
    body = answer.body
    if answer.status == 200:
        if stream and not body.endswith(b"data: [DONE]\n\n"):
            return 200, f"stream did not end with [DONE]: {body[-120:]!r}"
        if stream and b'"error"' in body:
            return 200, f"error event in the stream: {body[-200:]!r}"
        if not stream and b'"choices"' not in body:
            return 200, f"no choices: {body[:200]!r}"
        return 200, ""
    if answer.status == 429 and limited:
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        if code == "rate_limit_exceeded" and answer.headers.get("retry-after", "").isdigit():
            return 429, ""
    return answer.status, f"status {answer.status}: {body[:200]!r}"


def predicted_rejections(times: list[float], rpm: int, window: float = WINDOW_S) -> tuple[int, int]:
    """(429s, windows) for requests of one key sent at `times`: a window opens at the first request after the
    last one closed and admits `rpm` requests; the rest of that window's requests are refused."""
    refused = windows = 0
    start = count = 0.0
    for t in sorted(times):
        if windows == 0 or t >= start + window:
            start, count, windows = t, 0, windows + 1
        count += 1
        if count > rpm:
            refused += 1
    return refused, windows


def minute_rows(records: list[Record], rss: list[tuple[float, int]], minutes: float) -> list[dict[str, object]]:
    """Per minute of the run (by send time): requests, 200s, 429s, unexpected, p50/p99 ms of the 200s, and the RSS
    at the minute's end."""
    rows: list[dict[str, object]] = []
    for m in range(max(1, int(-(-minutes // 1)))):
        inside = [r for r in records if m * 60 <= r.t < (m + 1) * 60]
        ok = [r.seconds for r in inside if r.status == 200 and not r.problem]
        samples = [kib for t, kib in rss if t <= (m + 1) * 60]
        rows.append(
            {
                "minute": m + 1,
                "requests": len(inside),
                "ok": len(ok),
                "rate_limited": sum(1 for r in inside if r.status == 429 and not r.problem),
                "unexpected": sum(1 for r in inside if r.problem),
                "p50_ms": percentile(ok, 50) * 1000 if ok else None,
                "p99_ms": percentile(ok, 99) * 1000 if ok else None,
                "rss_mib": samples[-1] / 1024 if samples else None,
            }
        )
    return rows


def report(
    records: list[Record],
    rss: list[tuple[float, int]],
    specs: list[KeySpec],
    clients: list[int],
    limited: set[int],
    minutes: float,
) -> dict[str, object]:
    """Everything the soak reports, as JSON-ready values."""
    keys = []
    for k, spec in enumerate(specs):
        mine = [r for r in records if r.key == k]
        row: dict[str, object] = {
            "key": spec.name,
            "tenant": spec.tenant,
            "clients": clients[k],
            "requests": len(mine),
            "outcomes": dict(Counter(str(r.status) for r in mine)),
            "unexpected": sum(1 for r in mine if r.problem),
        }
        if k in limited and spec.rpm is not None:
            predicted, windows = predicted_rejections([r.t for r in mine], spec.rpm)
            observed = sum(1 for r in mine if r.status == 429 and not r.problem)
            row |= {"rpm": spec.rpm, "windows": windows, "predicted_429": predicted, "observed_429": observed}
        keys.append(row)
    problems = Counter(r.problem.split(":")[0] for r in records if r.problem)
    first = next((r.problem for r in records if r.problem), "")
    start_rss = rss[0][1] / 1024 if rss else None
    end_rss = rss[-1][1] / 1024 if rss else None
    minutes_rows = minute_rows(records, rss, minutes)
    p99s = [row["p99_ms"] for row in minutes_rows if isinstance(row["p99_ms"], float)]
    duration = minutes * 60
    return {
        "requests": len(records),
        "requests_per_s": len(records) / duration if duration else 0.0,
        "unexpected": sum(problems.values()),
        "unexpected_kinds": dict(problems),
        "first_unexpected": first,
        "keys": keys,
        "rss_start_mib": start_rss,
        "rss_end_mib": end_rss,
        "rss_max_mib": max(kib for _, kib in rss) / 1024 if rss else None,
        "rss_growth_mib": end_rss - start_rss if start_rss is not None and end_rss is not None else None,
        "p99_last_over_first": p99s[-1] / p99s[0] if len(p99s) > 1 and p99s[0] else None,
        "minutes": minutes_rows,
    }


def _num(value: object, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else "-" if value is None else str(value)


def markdown(result: dict[str, object]) -> str:
    """The report as markdown tables."""
    lines = [
        f"{result['requests']} requests ({_num(result['requests_per_s'])}/s), unexpected errors: {result['unexpected']}"
        + (f" (first: {result['first_unexpected']})" if result["first_unexpected"] else ""),
        f"gateway RSS {_num(result['rss_start_mib'])} MiB at the start, {_num(result['rss_end_mib'])} MiB at the end "
        f"(growth {_num(result['rss_growth_mib'])} MiB, max {_num(result['rss_max_mib'])} MiB); "
        f"p99 last minute / first minute {_num(result['p99_last_over_first'], 2)}",
        "",
        "| key | tenant | clients | requests | outcomes | unexpected | 429 predicted / observed (windows) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["keys"]:  # type: ignore[attr-defined]
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(row["outcomes"].items()))
        limit = f"{row['predicted_429']} / {row['observed_429']} ({row['windows']})" if "rpm" in row else "-"
        cells = [row["key"], row["tenant"], row["clients"], row["requests"], outcomes, row["unexpected"], limit]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [
        "",
        "| minute | requests | 200 | 429 | unexpected | p50 ms | p99 ms | RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in result["minutes"]:  # type: ignore[attr-defined]
        cells = [m["minute"], m["requests"], m["ok"], m["rate_limited"], m["unexpected"]]
        cells += [_num(m["p50_ms"], 2), _num(m["p99_ms"], 2), _num(m["rss_mib"])]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
