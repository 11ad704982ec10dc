"""The load generator's metrics on recorded streams, timed by a synthetic clock (vLLM bench's definitions)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from loadtest.metrics import SLO, by_assistant, distribution, is_good, ratios, summarize
from loadtest.record import RequestRecord, StreamRecorder, record_body
from loadtest.report import cost, markdown
from retrieval.scores import percentile

FIXTURES = Path(__file__).parent / "fixtures"
SENT = 100.0  # the synthetic clock's reading when the request was sent


def pieces(name: str, size: int | None = None) -> list[tuple[float, bytes]]:
    """A recorded stream as (arrival time, bytes) reads: `: t=` comment lines mark when the bytes after them came.

    With `size`, each read is cut into reads of `size` bytes arriving at the same time.
    """
    parts = re.split(rb"(?m)^: t=([0-9.]+)\r?\n", (FIXTURES / name).read_bytes())
    reads = [(SENT + float(t), data) for t, data in zip(parts[1::2], parts[2::2], strict=True)]
    reads[0] = (reads[0][0], parts[0] + reads[0][1])  # the header comments arrive with the first read
    if size is None:
        return reads
    return [(t, data[i : i + size]) for t, data in reads for i in range(0, len(data), size)]


def replay(name: str, size: int | None = None) -> RequestRecord:
    """Feed a recorded stream through the recorder with the clock set to each read's arrival time."""
    now = [SENT]
    recorder = StreamRecorder(RequestRecord("product-expert", "gateway", True, SENT), clock=lambda: now[0])
    for at, data in pieces(name, size):
        now[0] = at
        recorder.feed(data)
    return recorder.finish()


def test_vllm_stream_timings() -> None:
    record = replay("vllm_chat_stream.sse")
    assert record.ok, record.detail
    # TTFT at the first chunk with text, not at the role chunk (0.200).
    assert record.ttft == pytest.approx(0.250)
    assert record.itl == pytest.approx([0.030, 0.040, 0.010])
    # The end is the last chunk with choices (the finish chunk), not the usage chunk or [DONE].
    assert record.latency == pytest.approx(0.331)
    assert record.text_chunks == 4
    assert record.output_tokens == 6  # from the usage chunk, not the chunk count
    assert record.prompt_tokens == 120
    assert record.tpot == pytest.approx((0.331 - 0.250) / 5)


@pytest.mark.parametrize("size", [1, 7, 64])
def test_reads_split_anywhere_give_the_same_record(size: int) -> None:
    for name in ("vllm_chat_stream.sse", "gateway_stream_no_usage.sse"):
        assert replay(name, size) == replay(name)


def test_gateway_stream_without_usage_counts_text_chunks() -> None:
    record = replay("gateway_stream_no_usage.sse")
    assert record.ok, record.detail
    assert record.ttft == pytest.approx(0.400)
    assert record.itl == pytest.approx([0.0, 0.200])  # two events in one read: a gap of 0
    assert record.latency == pytest.approx(0.600)
    assert record.output_tokens == 3
    assert record.tpot == pytest.approx(0.100)


def test_error_event_and_truncated_stream_fail_by_type() -> None:
    error = replay("error_stream.sse")
    assert (error.error, error.detail) == ("stream_error", "generation failed")
    truncated = replay("truncated_stream.sse")
    assert truncated.error == "incomplete"
    assert truncated.tpot is None


def test_stream_without_text_fails() -> None:
    recorder = StreamRecorder(RequestRecord("a", "t", True, 0.0), clock=lambda: 1.0)
    recorder.feed(b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\ndata: [DONE]\n\n')
    assert recorder.finish().error == "no_content"


def test_whole_answer_ttft_is_latency() -> None:
    body = {"choices": [{"message": {"content": "Yes."}}], "usage": {"completion_tokens": 3, "prompt_tokens": 9}}
    record = record_body(RequestRecord("a", "t", False, SENT), json.dumps(body).encode(), SENT + 0.5)
    assert record.ok
    assert (record.ttft, record.latency, record.output_tokens, record.itl) == (0.5, 0.5, 3, [])
    assert record.tpot is None  # not streamed: no per-token timing
    assert record_body(RequestRecord("a", "t", False, 0), b"{}", 1).error == "bad_response"


def test_percentiles_interpolate_linearly() -> None:
    values = [0.5, 0.1, 0.4, 0.2, 0.3]
    assert [percentile(values, q) for q in (0, 50, 90, 99, 100)] == pytest.approx([0.1, 0.3, 0.46, 0.496, 0.5])
    stats = distribution(values)
    assert stats == pytest.approx({"mean": 300.0, "p50": 300.0, "p90": 460.0, "p99": 496.0})
    assert distribution([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def _done(ttft: float, latency: float, tokens: int, itl: list[float], assistant: str = "a") -> RequestRecord:
    return RequestRecord(assistant, "gateway", True, 0.0, ttft, latency, itl, tokens, text_chunks=tokens)


def test_summary_and_goodput() -> None:
    records = [
        _done(0.100, 0.400, 11, [0.03] * 10),  # TPOT 30 ms: good
        _done(0.500, 0.800, 11, [0.03] * 10),  # TTFT 500 ms > 450: not good
        _done(0.100, 0.600, 11, [0.05] * 10, "b"),  # TPOT 50 ms > 40: not good
        _done(0.450, 0.450, 1, []),  # one token: TPOT counts as 0, TTFT at the bound: good
        RequestRecord("b", "gateway", True, 0.0, error="http_500"),
        RequestRecord("b", "gateway", True, 0.0, error="timeout"),
        RequestRecord("b", "gateway", True, 0.0, error="http_500", detail="boom"),
    ]
    assert [is_good(r, SLO()) for r in records] == [True, False, False, True, False, False, False]
    s = summarize(records, duration_s=2.0)
    assert (s.requests, s.completed, s.failed, s.good) == (7, 4, 3, 2)
    assert s.errors == {"http_500": 2, "timeout": 1}
    assert s.first_error == "http_500: "
    assert s.request_throughput == pytest.approx(2.0)
    assert s.goodput == pytest.approx(1.0)
    assert s.output_tokens == 34
    assert s.output_throughput == pytest.approx(17.0)
    assert s.ttft_ms["mean"] == pytest.approx(287.5)
    assert s.ttft_ms["p50"] == pytest.approx(275.0)
    # TPOT only over requests of two tokens or more: 30, 30, 50 ms.
    assert s.tpot_ms["p50"] == pytest.approx(30.0)
    assert s.tpot_ms["mean"] == pytest.approx(110 / 3)
    # ITL pools every gap: twenty of 30 ms, ten of 50 ms.
    assert s.itl_ms["mean"] == pytest.approx(110 / 3)
    assert s.itl_ms["p99"] == pytest.approx(50.0)
    assert s.e2el_ms["p90"] == pytest.approx(740.0)
    # An end-to-end SLO is checked too when given; none checked: every completed request is good.
    assert summarize(records, 2.0, SLO(ttft_ms=None, tpot_ms=None, e2el_ms=500)).good == 2
    assert summarize(records, 2.0, SLO(None, None, None)).good == 4
    assert list(by_assistant(records)) == ["a", "b"]


def test_ratios_and_cost() -> None:
    gateway = summarize([_done(0.2, 0.5, 11, [0.03] * 10)], 1.0)
    direct = summarize([_done(0.1, 0.4, 11, [0.03] * 10)], 0.5)
    r = ratios(gateway, direct)
    assert r["ttft_p50"] == pytest.approx(2.0)
    assert r["itl_mean"] == pytest.approx(1.0)
    assert r["request_throughput"] == pytest.approx(0.5)
    # $3.60/h at 1 req/s: $1 per 1,000 requests; 100,000/day is 1.16 req/s: two servers at 1 good req/s.
    priced = cost(gateway, 3.6, 100_000)
    assert priced["cost_per_1k_requests"] == pytest.approx(1.0)
    assert (priced["servers"], priced["cost_per_day"]) == (2, pytest.approx(172.8))
    assert cost(summarize([], 1.0), 3.6, 10)["servers"] is None


def test_markdown_tables() -> None:
    from dataclasses import asdict

    from loadtest.driver import Load, Measured
    from loadtest.report import level_result

    measured = {
        "gateway": Measured([_done(0.2, 0.5, 4, [0.1] * 3)], 1.0),
        "direct": Measured([_done(0.1, 0.4, 4, [0.1] * 3)], 1.0),
    }
    level = level_result(Load("closed", 4), measured, SLO(), price_per_hour=2.0)
    assert level["ratios"]["ttft_mean"] == pytest.approx(2.0)
    assert level["targets"]["gateway"]["assistants"]["a"]["completed"] == 1
    text = markdown([level])
    assert "| c=4 | gateway | 1 | 0 | 1.00 |" in text
    assert "| c=4 | 2.00 / 2.00 / 2.00 / 2.00 |" in text
    assert "$ per 1,000 requests" in text
    assert asdict(SLO()) == {"ttft_ms": 450.0, "tpot_ms": 40.0, "e2el_ms": None}
