"""The soak benchmark's own arithmetic and report (loadtest/soak_report.py); no timing, no processes."""

from __future__ import annotations

import json
from typing import Any, cast

from loadtest.http1 import Answer
from loadtest.soak import keys, manifest
from loadtest.soak_report import (
    KeySpec,
    Record,
    classify,
    markdown,
    minute_rows,
    offered_per_minute,
    predicted_rejections,
    report,
)


def _answer(status: int, body: bytes, **headers: str) -> Answer:
    return Answer(status, headers, body, 0.001, 0.002)


def test_fixed_windows_open_at_the_first_request_after_the_last_one_closed() -> None:
    # 3 per window: the one opened at 0 refuses 30 and 59.9; the next opens at 61 (not at 60) and refuses 64 and
    # 120.9; 121.5 opens a third.
    times = [0, 10, 20, 30, 59.9, 61, 62, 63, 64, 120.9, 121.5]
    assert predicted_rejections(times, rpm=3) == (4, 3)
    assert predicted_rejections([5.0, 0.0, 1.0], rpm=2) == (1, 1)  # order does not matter
    assert predicted_rejections([], rpm=5) == (0, 0)
    # A steady 2/s for five minutes against 60 per minute: 5 windows of 120 requests, 60 refused in each.
    steady = [i / 2 for i in range(600)]
    assert predicted_rejections(steady, rpm=60) == (300, 5)


def test_only_the_last_key_is_offered_more_than_its_limit() -> None:
    specs = keys(limited_rpm=1200, streams=32)
    per_key = 32 // len(specs)
    over = [s.name for s in specs if s.rpm is not None and offered_per_minute(per_key, 0.1) > s.rpm]
    assert over == ["globex-batch"]
    assert offered_per_minute(8, 0.1) == 4800
    assert {s.tenant for s in specs} == {"acme", "globex"}
    names = set(manifest().split("name: ")[1:])
    assert len(names) == 3


def test_what_counts_as_expected() -> None:
    done = b'data: {"choices":[]}\n\ndata: [DONE]\n\n'
    assert classify(_answer(200, done), stream=True, limited=False) == (200, "")
    assert classify(_answer(200, b'data: {"error":{}}\n\ndata: [DONE]\n\n'), True, False)[1].startswith("error event")
    assert classify(_answer(200, b"data: {}\n\n"), True, False)[1].startswith("stream did not end")
    assert classify(_answer(200, b'{"choices":[]}'), stream=False, limited=False) == (200, "")
    limited = json.dumps({"error": {"code": "rate_limit_exceeded"}}).encode()
    assert classify(_answer(429, limited, **{"retry-after": "12"}), False, limited=True) == (429, "")
    assert classify(_answer(429, limited), False, limited=True)[1]  # no Retry-After
    assert classify(_answer(429, limited, **{"retry-after": "12"}), False, limited=False)[1]  # not that key
    assert classify(_answer(503, b"{}"), False, True) == (503, "status 503: b'{}'")


def test_report_per_key_and_per_minute() -> None:
    specs = [
        KeySpec("a", "t1", ("x",), rpm=None, tpm=None, streams=None),
        KeySpec("b", "t2", ("y",), rpm=2, tpm=None, streams=None),
    ]
    records = [
        Record(0.5, 0, 200, 0.010, ""),
        Record(1.0, 1, 200, 0.020, ""),
        Record(2.0, 1, 200, 0.030, ""),
        Record(3.0, 1, 429, 0.001, ""),
        Record(61.0, 0, 200, 0.050, ""),
        Record(62.0, 0, 502, 0.004, "status 502: b''"),
        Record(63.0, 1, 200, 0.060, ""),
    ]
    rss = [(0.0, 100 * 1024), (60.0, 101 * 1024), (120.0, 103 * 1024)]
    result = report(records, rss, specs, clients=[1, 1], limited={1}, minutes=2)
    assert result["unexpected"] == 1 and result["unexpected_kinds"] == {"status 502": 1}
    a, b = cast(list[dict[str, Any]], result["keys"])
    assert a["outcomes"] == {"200": 2, "502": 1} and a["unexpected"] == 1 and "rpm" not in a
    assert (b["predicted_429"], b["observed_429"], b["windows"]) == (1, 1, 2)
    assert result["rss_start_mib"] == 100 and result["rss_growth_mib"] == 3
    first, second = minute_rows(records, rss, 2)
    assert (first["requests"], first["ok"], first["rate_limited"], first["unexpected"]) == (4, 3, 1, 0)
    assert (second["requests"], second["ok"], second["unexpected"], second["rss_mib"]) == (3, 2, 1, 103)
    assert first["p50_ms"] == 20.0 and cast(float, result["p99_last_over_first"]) > 1
    text = markdown(result)
    assert "| b | t2 | 1 | 4 | 200: 3, 429: 1 | 0 | 1 / 1 (2) |" in text
    assert "unexpected errors: 1 (first: status 502" in text
