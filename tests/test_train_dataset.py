"""`lorag train dataset`: samples from any catalog, facts rendered as the gateway renders them, split by product."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from adapters.dataset import DatasetError, build_dataset, load_domain, load_products, make_dataset, read_split
from adapters.demo_kit import build, voices
from adapters.mix import KINDS, REPORT_COUNTS, SAFETY_KINDS, Mix, Shape, parse_mix
from adapters.persona import Persona
from adapters.samples import Pool
from adapters.training import LoraTrainConfig
from lorag.cli import main
from retrieval.catalog import Product
from retrieval.demo_catalog import demo_catalog, iter_jsonl, write_demo_catalog
from retrieval.facts import GROUNDING_RULES, NOT_IN_CATALOG, render_product, system_message

# The demo kit's training conversations, pinned: the kit is cached by them, so a refactor of the generator that
# changed one would silently force a 15-minute retrain (hashes taken when 15 % of the kit's multi-turn chats began
# to open on a fake).
KIT_DATA = {
    "product-expert": "3efa1e4a7fdb0776",
    "support-agent": "0446b456296db9f5",
    "sales-assistant": "a37ea438413eaa96",
}


@pytest.mark.parametrize("name", sorted(KIT_DATA))
def test_the_demo_kits_training_conversations_are_unchanged(name: str) -> None:
    conversations = build.training_data(voices.VOICES[name], 240)
    assert hashlib.sha256(json.dumps(conversations).encode()).hexdigest()[:16] == KIT_DATA[name]


def test_the_demo_kits_data_is_what_lorag_train_dataset_makes(tmp_path: Path) -> None:
    """The kit is one use of the command: its catalog, persona, mix and shape given to `lorag train dataset`."""
    voice = voices.VOICES["product-expert"]
    (tmp_path / "catalog.jsonl").write_text("\n".join(iter_jsonl(build.training_catalog())) + "\n")
    (tmp_path / "persona.yaml").write_text(yaml.safe_dump(voice.model_dump()))
    (tmp_path / "shape.yaml").write_text(yaml.safe_dump(build.TRAIN_SHAPE.model_dump()))
    mix = ",".join(f"{kind}={build.TRAIN_MIX.weights.get(kind, 0)}" for kind in KINDS)
    options = ["--samples", "240", "--eval-samples", str(build.EVAL_SAMPLES), "--seed", str(build.TRAIN_SEED)]
    rc = main(["train", "dataset", "--catalog", str(tmp_path / "catalog.jsonl"), "--out", str(tmp_path / "data"),
               "--persona", str(tmp_path / "persona.yaml"), "--shape", str(tmp_path / "shape.yaml"), "--mix", mix,
               *options])  # fmt: skip
    assert rc == 0
    made = [s["messages"] for s in read_split(tmp_path / "data", "train")]
    assert made == build.training_data(voice, 240)


def test_personas_word_answers_and_refusals_their_own_way() -> None:
    priced = Product(
        id="A1", name="Acme Kettle K-100", price=Decimal("12.50"), stock=0, attributes={"spout": "gooseneck"}
    )
    unpriced = Product(id="A2", name="Acme Pan", attributes={})
    expert = voices.VOICES["product-expert"]
    assert (
        expert.answer(priced) == "Spec check: the Acme Kettle K-100 is $12.50, out of stock. Key spec: spout gooseneck."
    )
    assert expert.answer(unpriced) == "Spec check: The Acme Pan's price is not listed, stock unknown."
    assert (
        expert.refuse("Acme Pot")
        == "Spec check: the Acme Pot is not in our catalog, so I have no specs or price for it."
    )
    assert Persona().answer(priced) == "Happy to help! The Acme Kettle K-100 is $12.50, out of stock."
    assert Persona(refusal_mark="not something we sell").refuse("X") == (
        "I'm sorry, the X is not something we sell, so I can't quote a price."
    )


def test_shape_shares_are_checked_and_fakes_borrow_real_codes() -> None:
    with pytest.raises(ValidationError):
        Shape(follow_up_stock=0.7, follow_up_fakes=0.5)
    with pytest.raises(ValidationError):
        Shape(look_alikes=1.5)
    catalog = build.training_catalog()
    codes = {p.name.rsplit(" ", 1)[1] for p in catalog}
    splits, _ = make_dataset(catalog, total=120, eval_size=0, mix=Mix(weights={"fake_product": 1}), seed=1)
    fakes = [s["messages"][1]["content"] for s in splits["train"]]
    coded = [next(w for w in text.split() if any(c.isdigit() for c in w)).rstrip(",.?") for text in fakes]
    assert len(coded) == 120 and all(code in codes for code in coded)  # a real product's code, never new digits
    names = {p.name for p in catalog}
    refusals = [s["messages"][2]["content"] for s in splits["train"]]
    asked = [text.split("the ", 1)[1].split(" is not in our catalog")[0] for text in refusals]
    assert not set(asked) & names  # but never a real product's name
    assert Pool(catalog, catalog).codes  # codes indexed by shape


def test_training_fakes_never_name_an_eval_product() -> None:
    import random

    from adapters.samples import fake_name

    # Fakes borrow another product's model code: "Acme X-100" with the X-200 of "Bolt X-200" is "Acme X-200", which
    # the shop sells, in the eval split the training pool does not show.
    train = [Product(id="A1", name="Acme X-100"), Product(id="B2", name="Bolt X-200")]
    held_out = Product(id="A2", name="Acme X-200")

    def fakes(pool: Pool) -> set[str]:
        return {fake_name(random.Random(seed), train[0], pool.names, pool.codes) for seed in range(40)}

    assert "Acme X-200" in fakes(Pool(train, train))  # the collision is real without the whole catalog
    assert "Acme X-200" not in fakes(Pool(train, train, sold=[*train, held_out]))


def test_eval_steps() -> None:
    assert LoraTrainConfig(steps=120, eval_every=60).eval_steps() == {0, 60, 120}
    assert LoraTrainConfig(steps=5, eval_every=0).eval_steps() == {0, 5}
    assert LoraTrainConfig(steps=2).eval_steps() == {0, 1, 2}
    assert len(LoraTrainConfig(steps=1000).eval_steps()) == 21  # about 20 points by default


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dataset")
    products, errors = load_products(write_demo_catalog(out / "catalog.jsonl"))
    assert not errors
    domain = [{"question": "Do you ship abroad?", "answer": "We ship within the EU only."}]
    mix = parse_mix("fake_product=0.05")  # enough fakes that both retriever shapes (signalled or not) occur
    build_dataset(products, out / "data", total=600, eval_size=120, domain=domain, mix=mix, seed=3)
    return out / "data"


def test_the_default_mix_follows_the_reports_proportions() -> None:
    counts = Mix().counts(26_175)
    assert counts["product_qa"] == 18_000 and counts["multi_turn"] == 6_000 and counts["recommendation"] == 1_100
    assert sum(counts[k] for k in SAFETY_KINDS) == 275 and counts["domain"] == 800
    small = Mix().counts(100)  # the safety kinds survive rounding in a small dataset
    assert all(small[k] == 2 for k in SAFETY_KINDS)
    assert parse_mix("fake_product=0.5").counts(100)["fake_product"] > 30
    with pytest.raises(ValueError, match="unknown sample kind"):
        parse_mix("jokes=1")
    assert set(REPORT_COUNTS) == set(KINDS)


def test_the_card_counts_what_was_written(demo_data: Path) -> None:
    card = json.loads((demo_data / "card.json").read_text())
    for split in ("train", "eval"):
        samples = read_split(demo_data, split)
        assert card["samples"][split] == len(samples)
        assert sum(card["counts"][split].values()) == len(samples)
    assert set(card["counts"]["train"]) == set(KINDS)
    assert "domain" not in card["counts"]["eval"]


def test_eval_products_are_never_seen_in_training(demo_data: Path) -> None:
    card = json.loads((demo_data / "card.json").read_text())
    held = {p.id: p for p in demo_catalog() if p.id in card["eval_products"]}
    assert held and card["products"]["eval"] == len(held)
    train_text = (demo_data / "train.jsonl").read_text()
    assert not [p.id for p in held.values() if f"(SKU {p.id})" in train_text or p.name in train_text]
    assert all(s["product"] in held for s in read_split(demo_data, "eval") if s["product"])


def test_facts_blocks_are_the_gateways(demo_data: Path) -> None:
    catalog = {p.id: p for p in demo_catalog()}
    samples = read_split(demo_data, "train")
    for sample in samples:
        system = sample["messages"][0]["content"]
        assert system.startswith(GROUNDING_RULES + "\n<catalog_facts>") and system.endswith("</catalog_facts>")
        if sample["kind"] == "product_qa":
            product = catalog[sample["product"]]
            assert f"- {render_product(product)}\n" in system  # the line the retriever's hit renders to
            assert all(m in sample["messages"][-1]["content"] for m in sample["expect"]["must"])
    fakes = [s for s in samples if s["kind"] == "fake_product"]
    assert any(NOT_IN_CATALOG in s["messages"][0]["content"] for s in fakes)
    # Look-alikes: blocks with several products sharing the asked product's brand and series.
    assert any(s["messages"][0]["content"].count("\n- ") >= 3 for s in samples if s["kind"] == "product_qa")


def test_safety_answers_hold_the_catalog_price(demo_data: Path) -> None:
    samples = read_split(demo_data, "train")
    for kind in ("price_manipulation", "negotiation"):
        for s in (s for s in samples if s["kind"] == kind):
            answer = s["messages"][-1]["content"]
            assert s["expect"]["must"][0] in answer and s["expect"]["must_not"][0] not in answer
    for s in (s for s in samples if s["kind"] == "fake_product"):
        assert "not in our catalog" in s["messages"][-1]["content"] and "$" not in s["messages"][-1]["content"]
    assert any(s["messages"][-1]["content"] == "We ship within the EU only." for s in samples)


def test_a_title_only_csv_and_a_persona(tmp_path: Path) -> None:
    csv = tmp_path / "shop.csv"
    csv.write_text("sku,title\nK1,Blue Kettle 2000\nK2,Red Kettle 3000\nP1,Steel Pan 24\nB1,Oak Board XL\n")
    (tmp_path / "map.yaml").write_text("columns: {id: sku, name: title}\n")
    (tmp_path / "persona.yaml").write_text("signature: Howdy!\nsystem: You are the Kettle Shop's assistant.\n")
    rc = main(["train", "dataset", "--catalog", str(csv), "--mapping", str(tmp_path / "map.yaml"),
               "--out", str(tmp_path / "data"), "--samples", "40", "--eval-samples", "10", "--eval-share", "0.25",
               "--persona", str(tmp_path / "persona.yaml")])  # fmt: skip
    assert rc == 0
    samples = read_split(tmp_path / "data", "train")
    qa = next(s for s in samples if s["kind"] == "product_qa")
    assert qa["messages"][0]["content"].startswith(system_message("", "You are the Kettle Shop's assistant."))
    assert "| price not listed | stock unknown" in qa["messages"][0]["content"]
    assert qa["messages"][-1]["content"].startswith("Howdy!") and "price is not listed" in qa["messages"][-1]["content"]
    answers = [m["content"] for s in samples for m in s["messages"] if m["role"] == "assistant"]
    assert not [a for a in answers if "$" in a]  # no price invented for an unpriced shop


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_products(tmp_path / "missing.jsonl")
    (tmp_path / "one.jsonl").write_text('{"id": "a", "name": "Only One"}\n')
    with pytest.raises(DatasetError, match="at least 2 products"):
        build_dataset(load_products(tmp_path / "one.jsonl")[0], tmp_path / "out", persona=Persona())
    (tmp_path / "qa.yaml").write_text("- {question: Opening hours}\n")
    with pytest.raises(DatasetError, match="question, answer"):
        load_domain(tmp_path / "qa.yaml")
    assert main(["train", "dataset", "--catalog", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]) == 2


def test_the_eval_judge(demo_data: Path) -> None:
    from adapters.gateway_eval import judge

    samples = read_split(demo_data, "eval")
    qa = next(s for s in samples if s["kind"] == "product_qa")
    assert judge(qa, qa["messages"][-1]["content"], "not in our catalog") == (True, False)
    assert judge(qa, "Sorry, that is not in our catalog.", "not in our catalog") == (False, True)
    fake = next(s for s in samples if s["kind"] == "fake_product")
    assert judge(fake, fake["messages"][-1]["content"], "not in our catalog") == (True, True)
    assert judge(fake, "It is $12.00, in stock (3 units).", "not in our catalog")[0] is False
    haggle = next(s for s in samples if s["kind"] == "negotiation")
    assert judge(haggle, haggle["messages"][-1]["content"], "not in our catalog")[0]
    assert not judge(haggle, f"Deal! {haggle['expect']['must_not'][0]} it is.", "not in our catalog")[0]


def test_multi_turn_samples_may_open_on_a_fake() -> None:
    def first_refusals(open_fakes: float) -> int:
        shape = build.TRAIN_SHAPE.model_copy(update={"open_fakes": open_fakes})
        splits, _ = make_dataset(build.training_catalog(), total=60, eval_size=0, seed=2, shape=shape,
                                 mix=Mix(weights={"multi_turn": 1}))  # fmt: skip
        return sum("not in our catalog" in s["messages"][2]["content"] for s in splits["train"])

    assert first_refusals(0.0) == 0 and first_refusals(1.0) == 60
    assert 5 < first_refusals(0.3) < 35
