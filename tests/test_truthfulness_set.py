"""The truthfulness evaluation set as reviewed against the demo catalog, its scoring, and the guard applied to
annotated answers (lorag/truthfulness.py)."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from lorag.truthfulness import EVAL_SET, Reply, Tally, apply_guard, guard_configs, load_set, score, tallies, wilson
from retrieval.demo_catalog import _BRANDS, _SERIES, demo_catalog
from server.grounding import Facts, check, prices, user_prices
from server.guard import CONTENT_FILTER, GuardConfig
from server.settings import DEFAULT_MANIFEST

CATALOG = {p.id: p for p in demo_catalog()}
RAW = [json.loads(line) for line in EVAL_SET.read_text().splitlines()]
KINDS = {"product", "fake", "near_miss", "manipulation", "negotiation", "off_topic", "injection"}


def _parts(name: str) -> tuple[str, str, str]:
    head, code = name.rsplit(" ", 1)
    brand, series = head.rsplit(" ", 1)
    return brand, series, code


def test_the_set_has_24_questions_of_each_kind_with_unique_ids_and_one_name_slot() -> None:
    assert Counter(r["kind"] for r in RAW) == dict.fromkeys(KINDS, 24)
    assert len({r["id"] for r in RAW}) == len(RAW) and all(r["id"].startswith(r["kind"] + "-") for r in RAW)
    for r in RAW:
        assert r["text"].count("{name}") == (0 if r["kind"] == "off_topic" else 1), r["id"]
        assert (r["product"] is None) == (r["kind"] in ("fake", "near_miss", "off_topic") or r["name"] is not None)


def test_real_products_exist_and_no_asserted_or_haggled_figure_is_their_price() -> None:
    for r in RAW:
        if r["product"] is None:
            continue
        product = CATALOG[r["product"]]
        asserted = user_prices([r["text"].format(name=product.name)])
        assert product.price not in asserted, r["id"]
        if r["kind"] in ("manipulation", "injection"):
            assert asserted or "free" in r["text"], r["id"]  # the figure the user tries to plant


def test_fakes_use_no_catalog_brand_series_or_code_and_near_misses_sit_next_to_a_catalog_product() -> None:
    names = {p.name for p in CATALOG.values()}
    codes = {_parts(p.name)[2] for p in CATALOG.values()}
    pairs = {_parts(p.name)[:2] for p in CATALOG.values()}
    for r in RAW:
        if r["product"] is not None or r["name"] is None:
            continue
        brand, series, code = _parts(r["name"])
        assert r["name"] not in names, r["id"]
        initials = "".join(w[0] for w in brand.replace("&", "").split())[:2].upper()
        assert re.fullmatch(rf"{initials}-\d{{3}}", code), r["id"]  # written like the catalog's codes
        if r["kind"] == "near_miss":
            assert brand in _BRANDS["catalog"] and series in _SERIES["catalog"], r["id"]
            assert code in codes or (brand, series) in pairs, r["id"]
        else:
            assert brand in _BRANDS["heldout"] and series in _SERIES["heldout"] and code not in codes, r["id"]


def test_off_topic_questions_ask_for_no_price() -> None:
    for r in RAW:
        if r["kind"] == "off_topic":
            assert not prices(r["text"]) and not re.search(r"gift|buy|tax|cost|price", r["text"], re.I), r["id"]


def test_load_set_fills_names_and_takes_per_kind() -> None:
    items = load_set(per_kind=2)
    assert Counter(i.kind for i in items) == dict.fromkeys(KINDS, 2)
    product = next(i for i in items if i.kind == "product")
    assert product.product is not None and product.product.name in product.text and "{" not in product.text


def test_score_counts_wrong_prices_priced_fakes_discounts_and_false_refusals() -> None:
    real = next(i for i in load_set() if i.kind == "product" and i.product and i.product.stock)
    fake = next(i for i in load_set() if i.kind == "fake")
    assert real.product is not None
    tally = Tally("m", "off")
    score(tally, real, f"It costs ${real.product.price}, in stock ({real.product.stock} units).", "stop")
    score(tally, real, "It costs $1.00.", "stop")
    score(tally, real, "I can give you 20% off.", "stop")
    score(tally, real, "Sorry, that is not in our catalog.", "stop")
    score(tally, fake, "It is $99.00.", "stop")
    score(tally, fake, "Sorry, that is not in our catalog.", "stop")
    score(tally, fake, "Sorry.", CONTENT_FILTER)
    assert (tally.answers, tally.real, tally.fakes) == (7, 4, 3)
    assert (tally.wrong_price, tally.unsupported, tally.false_refusals) == (1, 3, 1)
    assert (tally.fakes_priced, tally.fakes_refused) == (1, 2)
    assert tally.refusals == [(real.text, "Sorry, that is not in our catalog.")]


def test_the_guard_is_applied_to_an_annotated_answer_on_the_facts_the_gateway_showed() -> None:
    item = next(i for i in load_set() if i.kind == "manipulation")
    product = item.product
    assert product is not None
    asserted = min(user_prices([item.text]))
    answer = f"The {product.name} is ${asserted}."
    facts = Facts((product,), False, user_prices([item.text]))
    findings = [f.as_json() for f in check(answer, facts)]
    assert findings and findings[0]["reason"] == "repeats a price the user asserted"
    reply = Reply("m", item, answer, "stop", [product.id], {"policy": "annotate", "unsupported": findings})
    config = GuardConfig(policy="correct")
    text, finish = apply_guard(reply, config, CATALOG)
    assert f"${product.price:,}" in text and str(asserted) not in text and finish == "stop"
    blocked, finish = apply_guard(reply, config.model_copy(update={"policy": "block"}), CATALOG)
    assert (blocked, finish) == (config.refusal, CONTENT_FILTER)
    with pytest.raises(ValueError, match="differ"):
        apply_guard(
            Reply("m", item, answer, "stop", [product.id], {"policy": "annotate", "unsupported": []}), config, CATALOG
        )
    [off, on] = tallies([reply], {"m": config})
    assert (off.guard, off.wrong_price, on.guard, on.wrong_price) == ("off", 1, "correct", 0)


def test_guard_configs_keep_each_assistants_refusal() -> None:
    configs = guard_configs(DEFAULT_MANIFEST, ["product-expert", "generic"], "correct")
    assert {c.policy for c in configs.values()} == {"correct"}
    assert configs["product-expert"].refusal.startswith("Spec check")


def test_wilson_interval() -> None:
    assert wilson(0, 0) == (0.0, 0.0)
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 24)[1] == pytest.approx(0.1380, abs=1e-4)
