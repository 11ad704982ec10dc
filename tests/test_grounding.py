"""Unit tier: claims in an answer checked against the facts shown (server.grounding) and the guard's policies on a
whole answer (server.guard)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from retrieval.catalog import Product
from retrieval.retriever import Hit
from server.grounding import Facts, asked, check, claims, mentions, parse_amount, prices, user_prices
from server.guard import GuardConfig, guard_completion, judge, request_facts

GRINDER = Product(id="GRN-1004", name="Vellora Crema V-520", price=Decimal("1299.00"), currency="USD", stock=12)
KETTLE = Product(id="KTL-1010", name="Moka Nord Atlas MN-450", price=Decimal("49.50"), currency="USD", stock=0)
EURO = Product(id="SCL-1020", name="Luma Nimbus L-300", price=Decimal("1299.00"), currency="EUR", stock=3)
SHOWN = Facts((GRINDER, KETTLE))


@pytest.mark.parametrize(
    ("written", "amount"),
    [
        ("1,299.00", "1299"),
        ("1299", "1299"),
        ("1.299,00", "1299"),
        ("1'299", "1299"),
        ("1\u202f299.50", "1299.5"),
        ("49.5", "49.5"),
        ("1,29", "1.29"),
        ("1.299.000", "1299000"),
    ],
)
def test_amounts_are_read_whatever_the_separators(written: str, amount: str) -> None:
    assert parse_amount(written) == Decimal(amount)


def test_a_dotted_thousand_is_a_thousand_only_in_euros() -> None:
    assert parse_amount("1.299", "EUR") == Decimal(1299) and parse_amount("1.299", "USD") == Decimal("1.299")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("It is $1,299.00 today.", [("1299", "USD")]),
        ("It is 1299 dollars.", [("1299", "USD")]),
        ("USD 1299 or EUR 1.299,00", [("1299", "USD"), ("1299", "EUR")]),
        ("It costs 49.50, in stock.", [("49.50", None)]),
        ("Between $100-$200 or 100 to 200 euros.", [("100", "USD"), ("200", "USD"), ("100", "EUR"), ("200", "EUR")]),
        ("£20 and 30 bucks", [("20", "GBP"), ("30", "USD")]),
    ],
)
def test_prices_in_every_usual_spelling(text: str, found: list[tuple[str, str | None]]) -> None:
    assert [(c.amount, c.currency) for c in prices(text)] == [(Decimal(a), cur) for a, cur in found]


def test_measurements_and_counts_are_not_prices() -> None:
    text = "Burr size 64 mm, 0.01 g precision, 1.5 L, 40 steps, 2 kg, 1-2 cups, model V-520."
    assert prices(text) == []


def test_stock_phrases_and_discounts_are_claims() -> None:
    found = claims("In stock (12 units), or 3 left, or out of stock; we give 20% off. I can't give 50% off.")
    assert [(c.kind, c.amount, c.out_of_stock) for c in found] == [
        ("stock", Decimal(12), False),
        ("stock", Decimal(3), False),
        ("stock", Decimal(0), True),
        ("discount", None, False),
    ]


def test_a_negated_in_stock_says_out_of_stock_and_is_never_corrected_into_in_stock() -> None:
    for text in (
        "The Moka Nord Atlas MN-450 isn't in stock.",
        "It is currently not in stock.",
        "We have none in stock.",
    ):
        [claim] = claims(text)
        assert (claim.amount, claim.out_of_stock) == (Decimal(0), True), text
        assert check(text, SHOWN) == [], text  # the kettle's stock is 0: a true answer
    [finding] = check("The Vellora Crema V-520 is not in stock.", SHOWN)
    assert finding.fix == "in stock (12 units)"


def test_a_model_code_shared_by_shown_products_is_checked_against_each_and_never_fixed_to_one() -> None:
    terra = Product(id="BNS-1", name="Moka Nord Terra MN-675", price=Decimal("49.00"), currency="USD", stock=1)
    solo = Product(id="BNS-2", name="Moka Nord Solo MN-675", price=Decimal("18.49"), currency="USD", stock=1)
    shown = Facts((terra, solo))
    assert check("The MN-675 costs $18.49.", shown) == []
    assert check("The Moka Nord Solo MN-675 costs $18.49.", shown) == []
    [finding] = check("The MN-675 costs $5.", shown)
    assert finding.action == "block"
    [finding] = check("The Moka Nord Solo MN-675 costs $49.00.", shown)
    assert finding.fix == "$18.49"


def test_a_shown_look_alike_priced_in_answer_to_a_product_not_shown_is_refused_unless_offered_as_an_alternative() -> (
    None
):
    missing, ids = asked("Is the Vellora Aurora V-520 in stock? How much?", [GRINDER, KETTLE])
    assert (missing, ids) == (("Vellora Aurora V-520",), frozenset())
    facts = Facts((GRINDER, KETTLE), asked_missing=missing, asked_ids=ids)
    [price, stock] = check("The Vellora Crema V-520 is $1,299.00, in stock (12 units).", facts)
    assert price.action == stock.action == "block" and "in answer to the Vellora Aurora V-520" in price.reason
    [bare] = check("It is $49.50.", facts)  # no product named: any shown one's price is a substitute too
    assert bare.action == "block"
    offered = "The Vellora Aurora V-520 is not in our catalog. The Vellora Crema V-520 is $1,299.00."
    assert check(offered, facts) == []


def test_a_shown_product_the_user_names_beside_one_not_shown_may_be_priced() -> None:
    missing, ids = asked("Is the Vellora Aurora V-520 or the Moka Nord Atlas MN-450 cheaper?", [GRINDER, KETTLE])
    assert (missing, ids) == (("Vellora Aurora V-520",), frozenset({KETTLE.id}))
    facts = Facts((GRINDER, KETTLE), asked_missing=missing, asked_ids=ids)
    assert check("The Moka Nord Atlas MN-450 is $49.50.", facts) == []


def test_only_the_latest_message_says_what_is_asked() -> None:
    block = "<catalog_facts>...</catalog_facts>"
    hits = [Hit(GRINDER, 1.0, 0.9)]
    earlier = request_facts(block, hits, ["Is the Vellora Aurora V-520 in stock?", "And the Vellora Crema V-520?"])
    assert earlier is not None and earlier.asked_missing == () and earlier.asked_ids == {GRINDER.id}
    assert check("The Vellora Crema V-520 is $1,299.00.", earlier) == []


def test_product_names_match_by_full_name_code_or_sku_and_near_misses_do_not() -> None:
    text = (
        "Vellora Crema V-520, the Crema V-520, GRN-1004 and V-520 are shown; "
        "Vellora Aurora V-520 and Brennt Solo B-110 are not."
    )
    named = [(c.text, p.id if p else None) for c, p in mentions(text, [GRINDER, KETTLE])]
    assert named == [
        ("Vellora Crema V-520", "GRN-1004"),
        ("Crema V-520", "GRN-1004"),
        ("GRN-1004", "GRN-1004"),
        ("V-520", "GRN-1004"),
        ("Vellora Aurora V-520", None),
        ("Brennt Solo B-110", None),
    ]


def test_a_trained_answer_is_supported() -> None:
    text = "Spec check: the Vellora Crema V-520 is $1,299.00, in stock (12 units). Key spec: burr size 64 mm."
    assert check(text, SHOWN) == []
    assert check("The Moka Nord Atlas MN-450 costs 49.5 dollars and is out of stock.", SHOWN) == []


def test_a_wrong_price_is_matched_to_the_product_named_before_it() -> None:
    text = "The Vellora Crema V-520 is $1,299.00 and the Moka Nord Atlas MN-450 is $1,299.00 too."
    [finding] = check(text, SHOWN)
    assert finding.claim.start > text.index("MN-450") and finding.action == "fix"
    assert finding.product == "KTL-1010" and finding.fix == "$49.50"


def test_a_price_in_another_currency_is_wrong() -> None:
    [finding] = check("The Vellora Crema V-520 is 1299 euros.", SHOWN)
    assert finding.fix == "$1,299.00"
    assert check("The Luma Nimbus L-300 is 1.299,00 €.", Facts((EURO,))) == []


def test_a_wrong_stock_figure_gets_the_catalog_phrase() -> None:
    [finding] = check("The Moka Nord Atlas MN-450 is in stock (4 units).", SHOWN)
    assert finding.fix == "out of stock"


def test_a_price_for_a_fake_or_a_not_in_catalog_product_cannot_be_fixed() -> None:
    fake = check("The Vellora Aurora V-520 is $1,299.00.", SHOWN)
    assert [(f.claim.kind, f.action) for f in fake] == [("product", "note"), ("price", "block")]
    unknown = Facts((GRINDER,), unknown=True)
    [finding] = check("It costs $1,299.00.", unknown)
    assert finding.action == "block" and "NOT IN CATALOG" in finding.reason


def test_a_refusal_may_name_the_fake_product() -> None:
    text = "Sadly the Vellora Aurora V-520 is not in our catalog. Ask me about something we stock!"
    assert check(text, Facts((GRINDER,), unknown=True)) == []


def test_a_price_the_user_asserted_is_named_as_such() -> None:
    facts = Facts((GRINDER,), user_prices=user_prices(["It's $5 on your site, right?"]))
    [finding] = check("Yes, the Vellora Crema V-520 is $5.", facts)
    assert finding.reason == "repeats a price the user asserted" and finding.fix == "$1,299.00"


def test_an_unnamed_price_is_checked_against_every_product_shown() -> None:
    assert check("That one is $49.50.", SHOWN) == []
    [finding] = check("That one is $60.", SHOWN)
    assert finding.action == "block"  # two products shown: no telling which price was meant
    [single] = check("That one is $60.", Facts((KETTLE,)))
    assert single.fix == "$49.50"


def _answer(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


def test_annotate_lists_and_changes_nothing() -> None:
    answer = _answer("The Vellora Crema V-520 is $999.")
    verdict = guard_completion(answer, SHOWN, GuardConfig(policy="annotate"))
    assert answer["choices"][0]["message"]["content"] == "The Vellora Crema V-520 is $999."
    assert verdict.header == "unsupported=1"
    assert answer["grounding"]["unsupported"] == [
        {"kind": "price", "text": "$999", "reason": "a price the catalog does not list", "product": "GRN-1004",
         "catalog": "$1,299.00"}
    ]  # fmt: skip


def test_correct_replaces_the_figure_with_the_catalogs_and_marks_it() -> None:
    answer = _answer("The Vellora Crema V-520 is $999, in stock (2 units).")
    verdict = guard_completion(answer, SHOWN, GuardConfig(policy="correct"))
    assert answer["choices"][0]["message"]["content"] == (
        "The Vellora Crema V-520 is $1,299.00 (catalog price), in stock (12 units) (catalog price)."
    )
    assert verdict.header == "corrected=2" and answer["choices"][0]["finish_reason"] == "stop"


def test_correct_refuses_what_it_cannot_fix_and_block_refuses_everything() -> None:
    config = GuardConfig(policy="correct", refusal="Spec check: I can't confirm that.")
    text, _, _, blocked = judge("Sure, 50% off the Vellora Crema V-520: $649.50!", SHOWN, config)
    assert blocked and text == "Spec check: I can't confirm that."
    answer = _answer("The Vellora Crema V-520 is $999.")
    verdict = guard_completion(answer, SHOWN, GuardConfig(policy="block", refusal="No."))
    assert answer["choices"][0]["message"]["content"] == "No."
    assert answer["choices"][0]["finish_reason"] == "content_filter" and verdict.header == "blocked"
    clean = _answer("The Vellora Crema V-520 is $1,299.00.")
    assert guard_completion(clean, SHOWN, GuardConfig(policy="block")).header == "supported"
    assert clean["choices"][0]["message"]["content"] == "The Vellora Crema V-520 is $1,299.00."


def test_an_unquoted_yaml_off_is_the_off_policy() -> None:
    import yaml

    assert GuardConfig.model_validate(yaml.safe_load("policy: off")).policy == "off"
    with pytest.raises(ValueError, match="policy"):
        GuardConfig.model_validate({"policy": True})
