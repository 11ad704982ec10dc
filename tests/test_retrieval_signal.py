"""The unknown-product signal on real shopper text: sizes, units and capitals are not codes or brands."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from retrieval.question import content_words, covers, parse

REAL = Path(__file__).resolve().parents[1] / "retrieval" / "data" / "real_queries"


def _real_queries() -> list[str]:
    with (REAL / "wands_query.tsv").open(encoding="utf-8", newline="") as fh:
        wands = [row["query"] for row in csv.DictReader(fh, delimiter="\t")]
    return wands + (REAL / "esci_us_queries.txt").read_text(encoding="utf-8").splitlines()


def test_real_queries_name_no_code_and_no_brand() -> None:
    queries = _real_queries()
    assert len(queries) == 630
    # Each query that parses as naming a product is one the signal could call "not in the catalog".
    assert [q for q in queries if parse(q).names_product] == []


@pytest.mark.parametrize(
    "text",
    [
        "48'x34' shower pan",
        '18" x 24" mirror',
        "2x4x8 stud",
        "GU10 led bulb",
        "r19 insulation",
        "e26 bulbs",
        "AWG12 wire",
        "5 gal bucket",
    ],
)
def test_sizes_units_and_dimensions_are_not_codes(text: str) -> None:
    assert parse(text).codes == frozenset()


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("Is the V-520 in stock?", {"V520"}),
        ("esp-1042 price", {"ESP1042"}),
        ("Tell me about the Aurin Meridian A-565.", {"A565"}),
        ("Estrelo Tundra E-400 price", {"E400"}),
    ],
)
def test_model_codes_are_still_codes(text: str, codes: set[str]) -> None:
    assert parse(text).codes == codes


def test_title_case_search_box_text_names_no_brand() -> None:
    assert parse("GE Cook Top").names == ()
    assert parse("Bath Vanity Light Fixtures").names == ()
    # In a sentence, capitals still mark names: the demo's fake brands must stay caught.
    assert parse("Do you carry a Jorund Quill cold brew maker?").names == ("Jorund", "Quill")
    assert parse("Is the Korva Tundra K-745 in stock?").names == ("Korva", "Tundra")


def test_lexical_coverage_forgives_typos_and_split_compounds() -> None:
    assert covers(content_words("bath sinnk"), "Glacier Bay 19 in. Bath Sink in White")
    assert covers(content_words("GE Cook Top"), "GE 30 in. Electric Cooktop in Black")
    assert covers(content_words("ceiling fans"), "Hampton Bay 52 in. Ceiling Fan")
    assert not covers(content_words("waterproof bathroom scale"), "Tamperly coffee scale, waterproof")
    assert not covers(content_words("rice cooker"), "Kettlewick gooseneck kettle")
    assert not covers((), "anything")
    # Typos are forgiven against the name only: a description's "roaster" is no "toaster".
    assert not covers(content_words("toasters"), "Luma dripper. Pairs with any roaster's beans", "Luma Terra L-700")
    assert covers(content_words("toasters"), "Toaster 2-slice", "Toaster 2-slice")
