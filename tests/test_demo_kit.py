"""The demo kit's data, voices, judging and trainer pieces (no engine)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from adapters.demo_kit.data import Question, asked_name, questions, reply, training_conversations
from adapters.demo_kit.evaluate import judge
from adapters.demo_kit.kit import KitModel
from adapters.demo_kit.voices import REFUSAL_MARK, VOICES
from adapters.training import IGNORE, LoraTrainConfig, _batches, _lr_at, tokenize_conversation
from retrieval.demo_catalog import demo_catalog
from retrieval.facts import NOT_IN_CATALOG


def _brands(qs: list[Question]) -> set[str]:
    return {p.name.split()[0] for q in qs for p in q.facts}


def test_held_out_names_never_appear_in_training() -> None:
    convos = training_conversations(VOICES["support-agent"], 200, seed=1)
    train_text = "\n".join(m["content"] for c in convos for m in c)
    held = questions("heldout", 200, seed=2)
    assert not any(brand in train_text for brand in _brands(held))
    assert not any(p.name.split()[0] in train_text for p in demo_catalog())


def test_generation_is_deterministic() -> None:
    assert training_conversations(VOICES["sales-assistant"], 20, seed=5) == training_conversations(
        VOICES["sales-assistant"], 20, seed=5
    )
    assert [q.text for q in questions("heldout", 30, 9)] == [q.text for q in questions("heldout", 30, 9)]


def test_held_out_set_covers_every_kind_of_question() -> None:
    kinds = {q.kind for q in questions("heldout", 200, seed=20261128)}
    assert kinds == {"known", "near_miss", "absent", "signalled"}


def test_signalled_questions_carry_the_retriever_signal() -> None:
    for q in questions("heldout", 200, seed=3):
        system = q.messages()[0]["content"]
        assert (NOT_IN_CATALOG in system) == (q.kind == "signalled")
        if q.product is None:
            assert all(p.name != asked_name(q) for p in q.facts)


@pytest.mark.parametrize("name", list(VOICES))
def test_trained_replies_pass_the_judge(name: str) -> None:
    rng = random.Random(0)
    for q in questions("heldout", 60, seed=4):
        answer = reply(VOICES[name], q, rng)
        assert judge(q, answer), (q.text, answer)
        if q.product is None:
            assert REFUSAL_MARK in answer and "$" not in answer


def test_judge_rejects_wrong_price_and_priced_refusal() -> None:
    q = next(q for q in questions("heldout", 50, seed=6) if q.product is not None)
    fake = next(q for q in questions("heldout", 50, seed=6) if q.product is None)
    assert not judge(q, f"The {q.product.name} is $0.01, in stock (1 units).")  # type: ignore[union-attr]
    assert not judge(fake, f"The {asked_name(fake)} is not in our catalog, but it costs $20.00.")


def test_lr_schedule_warms_up_then_decays() -> None:
    cfg = LoraTrainConfig(steps=20, warmup_steps=2, learning_rate=1e-3, min_lr_ratio=0.1)
    lrs = [_lr_at(s, cfg) for s in range(20)]
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert lrs[-1] >= 1e-4


def test_tokenizer_labels_exactly_the_assistant_turns(kit: KitModel) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(kit.path)
    convo = training_conversations(VOICES["product-expert"], 1, seed=8)[0]
    ex = tokenize_conversation(tokenizer, convo, max_length=2048)
    supervised = tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE])
    answers = [m["content"] for m in convo if m["role"] == "assistant"]
    assert supervised.replace("<|im_end|>", "").split() == " ".join(answers).split()
    assert supervised.count("<|im_end|>") == len(answers)  # the model learns to stop


def test_batches_cover_every_step_with_full_batches() -> None:
    from adapters.training import TokenizedExample

    examples = [TokenizedExample([1] * n, [1] * n) for n in range(1, 30)]
    cfg = LoraTrainConfig(steps=7, batch_size=4)
    batches = _batches(examples, cfg)
    assert len(batches) == 7 and all(len(b) == 4 for b in batches)


def test_built_kit_manifest_and_adapters(kit: KitModel) -> None:
    assert set(kit.adapters) == set(VOICES)
    for path in kit.adapters.values():
        config = json.loads((path / "adapter_config.json").read_text())
        assert config["r"] == 16 and set(config["target_modules"]) >= {"q_proj", "down_proj"}
        report = json.loads((path / "training.json").read_text())["report"]
        assert report["last_loss"] < report["first_loss"]


def test_lora_on_chosen_layers_only(kit: KitModel, tmp_path: Path) -> None:
    from safetensors import safe_open

    from adapters.training import train_lora

    convos = training_conversations(VOICES["support-agent"], 2, seed=3)
    cfg = LoraTrainConfig(steps=1, batch_size=2, layers=[28, 29], max_length=256)
    report = train_lora(kit.path, convos, tmp_path / "adapter", cfg)
    assert report.steps == 1
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [28, 29]
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as weights:
        layers = {int(key.split("layers.")[1].split(".")[0]) for key in weights.keys()}  # noqa: SIM118
    assert layers == {28, 29}
