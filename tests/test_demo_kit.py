"""The demo kit's data, voices, judging and trainer pieces (no engine)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from adapters.dataset import make_dataset
from adapters.demo_kit.build import TRAIN_SHAPE, training_catalog, training_data
from adapters.demo_kit.data import Question, asked_name, questions, reply
from adapters.demo_kit.evaluate import judge
from adapters.demo_kit.kit import KitModel
from adapters.demo_kit.voices import REFUSAL_MARK, VOICES
from adapters.mix import Mix
from adapters.training import (
    IGNORE,
    LoraTrainConfig,
    TokenizedExample,
    _batches,
    _lr_at,
    copy_weights,
    tokenize_conversation,
)
from lorag.cli import main
from retrieval.demo_catalog import demo_catalog, look_alike_name, product_name
from retrieval.facts import NOT_IN_CATALOG
from tests.conftest import KIT_DIR


def _brands(qs: list[Question]) -> set[str]:
    return {p.name.split()[0] for q in qs for p in q.facts}


def test_held_out_names_never_appear_in_training() -> None:
    convos = training_data(VOICES["support-agent"], 200, seed=1)
    train_text = "\n".join(m["content"] for c in convos for m in c)
    held = questions("heldout", 200, seed=2)
    assert not any(brand in train_text for brand in _brands(held))
    assert not any(p.name.split()[0] in train_text for p in demo_catalog())


def test_generation_is_deterministic() -> None:
    assert training_data(VOICES["sales-assistant"], 20, seed=5) == training_data(VOICES["sales-assistant"], 20, seed=5)
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
    convo = next(c for c in training_data(VOICES["product-expert"], 20, seed=8) if len(c) > 3)
    ex = tokenize_conversation(tokenizer, convo, max_length=2048)
    supervised = tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE])
    answers = [m["content"] for m in convo if m["role"] == "assistant"]
    assert supervised.replace("<|im_end|>", "").split() == " ".join(answers).split()
    assert supervised.count("<|im_end|>") == len(answers)  # the model learns to stop


def test_copy_weight_goes_to_answer_tokens_that_continue_a_pair_from_the_prompt() -> None:
    prompt, answer = [5, 6, 7], [5, 6, 8, 6, 7]
    ex = TokenizedExample(prompt + answer, [IGNORE] * 3 + answer)
    # Seen in the prompt: (5, 6) and (6, 7). (7, 5) spans prompt and answer, and the answer's own pairs don't count.
    assert copy_weights(ex, 3.0) == [1, 1, 1, 1, 3.0, 1, 1, 3.0]
    assert copy_weights(ex, 1.0) == [1.0] * 8


def test_copy_weight_marks_the_quoted_price_and_name_not_the_voice(kit: KitModel) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(kit.path)
    asked = next(q for q in questions("train", 50, seed=4) if q.product is not None and len(q.facts) > 1)
    assert asked.product is not None
    answer = VOICES["support-agent"].answer(asked.product, random.Random(0))
    ex = tokenize_conversation(tokenizer, [*asked.messages(), {"role": "assistant", "content": answer}], 2048)
    weights = copy_weights(ex, 3.0)
    heavy = tokenizer.decode([t for t, w in zip(ex.input_ids, weights, strict=True) if w > 1])
    light = tokenizer.decode(
        [t for t, w, lab in zip(ex.input_ids, weights, ex.labels, strict=True) if w == 1 and lab != IGNORE]
    )
    digits = f"{asked.product.price:.2f}".replace(".", "")
    assert digits in "".join(ch for ch in heavy if ch.isdigit())  # the price, digit by digit
    assert asked.product.name.split(" ", 1)[1].split()[0] in heavy  # the name after its first token
    assert "Happy to help" in light and "Happy" not in heavy  # the voice is weighted 1
    assert all(w == 1 for w, lab in zip(weights, ex.labels, strict=True) if lab == IGNORE)


def test_batches_cover_every_step_with_full_batches() -> None:
    examples = [TokenizedExample([1] * n, [1] * n) for n in range(1, 30)]
    cfg = LoraTrainConfig(steps=7, batch_size=4)
    batches = _batches(examples, cfg)
    assert len(batches) == 7 and all(len(b) == 4 for b in batches)


def test_batches_pair_similar_lengths_in_shuffled_order() -> None:
    examples = [TokenizedExample([1] * n, [1] * n) for n in range(1, 65)]
    batches = _batches(examples, LoraTrainConfig(steps=32, batch_size=2))
    widths = [[len(e.input_ids) for e in b] for b in batches]
    assert all(max(w) - min(w) <= 1 for w in widths)  # one pass sorted by length: neighbours share a batch
    assert sorted(n for w in widths for n in w) == list(range(1, 65))
    assert [max(w) for w in widths] != sorted(max(w) for w in widths)  # but the steps still come in random order


def test_the_kits_shape_moves_training_answers_not_the_held_out_set() -> None:
    def refusal_share(follow_up_fakes: float) -> float:
        shape = TRAIN_SHAPE.model_copy(update={"follow_up_fakes": follow_up_fakes, "open_fakes": 0.0})
        splits, _ = make_dataset(training_catalog(), total=200, eval_size=0, mix=Mix(weights={"multi_turn": 1}),
                                 persona=VOICES["support-agent"], shape=shape, seed=4)  # fmt: skip
        answers = [m["content"] for s in splits["train"] for m in s["messages"] if m["role"] == "assistant"]
        return sum(REFUSAL_MARK in a for a in answers) / len(answers)

    assert refusal_share(0.1) < 0.1 < refusal_share(0.4) < refusal_share(0.8)
    answers = [m["content"] for c in training_data(VOICES["support-agent"], 240) for m in c if m["role"] == "assistant"]
    assert 0.2 < sum(REFUSAL_MARK in a for a in answers) / len(answers) < 0.35  # ~70 % quote a listed product
    held = questions("heldout", 300, seed=20261128)
    assert 0.5 < sum(q.product is not None for q in held) / len(held) < 0.7  # held out keeps its 60 % mix


def test_look_alike_blocks_hold_names_a_retriever_would_rank_together() -> None:
    rng = random.Random(3)
    for _ in range(50):
        name = product_name(rng, "train")
        other = look_alike_name(rng, "train", name)
        (head, code), (other_head, other_code) = name.rsplit(" ", 1), other.rsplit(" ", 1)
        assert other != name and other.split()[0] == name.split()[0]
        assert (head == other_head) != (code == other_code)  # same series or same code, not both


def _one_brand_share(look_alikes: float) -> float:
    shape = TRAIN_SHAPE.model_copy(update={"look_alikes": look_alikes})
    splits, _ = make_dataset(training_catalog(), total=200, eval_size=0, mix=Mix(weights={"product_qa": 1}),
                             persona=VOICES["support-agent"], shape=shape, seed=2)  # fmt: skip
    blocks = [[ln for ln in s["messages"][0]["content"].splitlines() if ln.startswith("- ")] for s in splits["train"]]
    multi = [b for b in blocks if len(b) > 1]
    return sum(len({line.split()[1] for line in b}) == 1 for b in multi) / len(multi)


def test_the_kits_facts_blocks_are_half_look_alikes() -> None:
    # Look-alikes share the rarest words of the name (brand, series, model code): mostly one brand per block.
    assert _one_brand_share(0.0) < 0.1 < 0.6 < _one_brand_share(1.0)
    assert _one_brand_share(0.0) < _one_brand_share(TRAIN_SHAPE.look_alikes) < _one_brand_share(1.0)


def test_eval_refuses_a_model_the_kit_does_not_hold(kit: KitModel, capsys: pytest.CaptureFixture[str]) -> None:
    # The engine URL is never reached: the model list is checked first.
    argv = ["demo-kit", "eval", "--kit", str(KIT_DIR), "--engine-url", "http://127.0.0.1:9", "--model", "nope"]
    assert main([*argv, "--model", "support-agent"]) == 2
    err = capsys.readouterr().err
    assert "not in the kit: nope" in err and kit.name in err


def test_held_out_look_alike_set_keeps_its_questions_and_packs_each_block_with_one_brand() -> None:
    plain, packed = questions("heldout", 200, 20261128), questions("heldout", 200, 20261128, look_alikes=1.0)
    assert {q.kind for q in packed} == {q.kind for q in plain}
    multi = [q.facts for q in packed if len(q.facts) > 1]
    assert len(multi) > 50 and all(len({p.name.split()[0] for p in facts}) == 1 for facts in multi)
    assert sum(len({p.name.split()[0] for p in q.facts}) > 1 for q in plain) > 50  # random blocks mix brands


def test_right_padded_rows_need_no_attention_mask(kit: KitModel) -> None:
    """The trainer drops the attention mask: with right padding and causal attention no real token sees padding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(kit.path)
    model = AutoModelForCausalLM.from_pretrained(kit.path, dtype=torch.float32).eval()
    short, long = (
        tokenize_conversation(tokenizer, c, 640).input_ids
        for c in training_data(VOICES["product-expert"], 20, seed=12)[:2]
    )
    short, long = sorted((short, long), key=len)
    assert len(short) < len(long)
    ids = torch.zeros((2, len(long)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate((short, long)):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    with torch.no_grad():
        masked = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        unmasked = model.model(input_ids=ids).last_hidden_state
    real = mask.bool()
    assert torch.allclose(masked[real], unmasked[real], atol=1e-4)
    assert not torch.allclose(masked[~real], unmasked[~real], atol=1e-4)  # padding itself does differ


def test_built_kit_manifest_and_adapters(kit: KitModel) -> None:
    assert set(kit.adapters) == set(VOICES)
    for name, path in kit.adapters.items():
        config = json.loads((path / "adapter_config.json").read_text())
        assert config["r"] == 16 and set(config["target_modules"]) >= {"q_proj", "down_proj"}
        report = json.loads((path / "training.json").read_text())["report"]
        assert report["last_loss"] < report["first_loss"]
        # Trained by `lorag train lora`'s path on `lorag train dataset`'s samples: a run record, the eval loss
        # at steps 0, 60 and 120, and the dataset with its card beside the kit.
        run = json.loads((path / "run.json").read_text())
        assert run["report"]["steps"] == 120 and run["eval_loss"] < run["eval_loss_base"]
        rows = list(csv.DictReader((path / "losses.csv").read_text().splitlines()))
        assert [r["step"] for r in rows if r["eval_loss"]] == ["0", "60", "120"]
        card = json.loads((KIT_DIR / "data" / name / "card.json").read_text())
        assert card["persona"] == VOICES[name].model_dump() and card["samples"]["train"] == 240
        lines = (KIT_DIR / "data" / name / "train.jsonl").read_text().splitlines()
        train = [json.loads(line)["messages"] for line in lines]
        assert train == training_data(VOICES[name], 240)


def test_lora_on_chosen_layers_only(kit: KitModel, tmp_path: Path) -> None:
    from safetensors import safe_open

    from adapters.training import train_lora

    convos = training_data(VOICES["support-agent"], 20, seed=3)[:2]
    cfg = LoraTrainConfig(steps=1, batch_size=2, layers=[28, 29], max_length=256)
    report = train_lora(kit.path, convos, tmp_path / "adapter", cfg)
    assert report.steps == 1
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [28, 29]
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as weights:
        layers = {int(key.split("layers.")[1].split(".")[0]) for key in weights.keys()}  # noqa: SIM118
    assert layers == {28, 29}


def test_eval_loss_is_taken_without_changing_what_is_trained(kit: KitModel, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from adapters.training import train_lora

    convos = training_data(VOICES["support-agent"], 20, seed=3)
    cfg = LoraTrainConfig(steps=2, batch_size=2, layers=[28, 29], max_length=256, eval_every=1)
    plain = train_lora(kit.path, convos[:4], tmp_path / "plain", cfg)
    seen: list[tuple[int, float]] = []
    watched = train_lora(
        kit.path, convos[:4], tmp_path / "watched", cfg, held=convos[4:8], on_eval=lambda *e: seen.append(e)
    )
    assert plain.eval_losses == [] and watched.eval_losses == seen and [s for s, _ in seen] == [0, 1, 2]
    assert seen[-1][1] < seen[0][1]  # the held-out loss falls as the adapter learns the voice
    a, b = (load_file(str(tmp_path / d / "adapter_model.safetensors")) for d in ("plain", "watched"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
