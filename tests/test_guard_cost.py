"""The guard-cost benchmark's pieces (loadtest/guard_cost.py): its answer, its manifest, its summary."""

from __future__ import annotations

from pathlib import Path

from loadtest.guard_cost import POLICIES, PRODUCT, answer_text, manifest, summarise, table
from loadtest.record import RequestRecord
from retrieval.demo_catalog import demo_catalog
from server.assistants import load_manifest
from server.grounding import Facts, check, prices


def test_the_stub_answer_quotes_the_products_catalog_price_and_stock_and_the_guard_backs_it() -> None:
    product = {p.id: p for p in demo_catalog()}[PRODUCT]
    text = answer_text(product)
    assert [c.amount for c in prices(text)] == [product.price] and "in stock (" in text
    assert check(text, Facts((product,))) == []  # supported: every policy lets it through unchanged


def test_the_manifest_has_one_retrieving_assistant_per_policy(tmp_path: Path) -> None:
    path = tmp_path / "assistants.yaml"
    path.write_text(manifest(holdback=48))
    assistants = load_manifest(path).assistants
    assert [(a.name, a.guard.policy, a.retrieval.enabled) for a in assistants] == [
        (f"guard-{p}", p, True) for p in POLICIES
    ]
    assert {a.guard.holdback_chars for a in assistants} == {48}


def _record(ttft: float, itl: list[float], ok: bool = True) -> RequestRecord:
    record = RequestRecord("a", "t", True, 0.0, ttft=ttft, latency=ttft + sum(itl), itl=itl, text_chunks=len(itl) + 1)
    if not ok:
        record.fail("http_500", "boom")
    return record


def test_summary_gives_percentiles_in_ms_and_ttft_added_against_off() -> None:
    off = summarise("off", [_record(0.010, [0.020, 0.020])] * 3, None)
    held = summarise("correct", [_record(0.150, [0.020, 0.0])] * 3 + [_record(1.0, [], ok=False)], off)
    assert off["ttft_p50_ms"] == 10.0 and off["itl_p99_ms"] == 20.0 and off["chunks_per_answer"] == 3.0
    assert (
        round(held["ttft_added_p50_ms"], 6) == 140.0 and round(held["itl_p50_ms"], 6) == 10.0
    )  # half the gaps 0, half 20
    assert (held["n"], held["errors"]) == (3, 1) and held["first_error"] == "http_500: boom"
    assert "| correct | 150.0 / 150.0 | +140.0 / +140.0 |" in table([off, held])
