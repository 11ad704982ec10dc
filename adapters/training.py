"""A reusable LoRA trainer for chat models on CPU or GPU: the core of lorag's fine-tuning kit.

Input is a list of chat conversations; the loss covers assistant turns only. Two choices make CPU training fast
enough for the demo kit (measured in BENCHMARKS.md): logits are computed only at supervised positions (the
49k-200k-wide LM head is otherwise a large share of each step), and matmuls run under bfloat16 autocast where the
CPU supports it, with fp32 master weights for the LoRA parameters.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

Message = dict[str, str]
Conversation = list[Message]

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IGNORE = -100


class LoraTrainConfig(BaseModel):
    """Hyper-parameters of one LoRA run; saved next to the adapter so a run can be repeated."""

    rank: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(ALL_PROJECTIONS))
    layers: list[int] | None = Field(
        default=None,
        description="Decoder layers that get LoRA (None: all). Backward stops at the lowest one, so upper "
        "layers only make a step cheaper.",
    )
    learning_rate: float = Field(default=2e-3, gt=0)
    warmup_steps: int = Field(default=2, ge=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    steps: int = Field(default=30, ge=1)
    batch_size: int = Field(default=8, ge=1)
    max_length: int = Field(default=512, ge=16)
    copy_weight: float = Field(
        default=1.0,
        ge=1,
        description="Loss weight of answer tokens that repeat the prompt (two tokens in a row seen there: names, "
        "prices, codes quoted from a facts block) against 1 for the rest of the answer.",
    )
    weight_decay: float = 0.0
    seed: int = 0
    bf16: bool = True
    threads: int | None = None
    max_seconds: float | None = Field(default=None, description="Stop early once training has run this long.")
    eval_every: int | None = Field(
        default=None,
        ge=0,
        description="Eval loss on the held-out conversations every N steps, besides before the first and after "
        "the last (0: only those two; None: about 20 points over the run).",
    )

    def eval_steps(self) -> set[int]:
        """Steps after which the eval loss is taken (0: before training)."""
        every = max(1, self.steps // 20) if self.eval_every is None else self.eval_every
        return {0, self.steps, *(range(every, self.steps, every) if every else ())}


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids and labels (IGNORE outside assistant turns)."""

    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class TrainReport:
    """What a run did, written to training.json beside the adapter."""

    steps: int
    seconds: float
    tokens: int
    supervised_tokens: int
    first_loss: float
    last_loss: float
    examples: int
    eval_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss per supervised token)
    eval_seconds: float = 0.0  # not in `seconds`, which is training alone

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def tokenize_conversation(tokenizer: Any, messages: Conversation, max_length: int) -> TokenizedExample:
    """Render with the model's chat template; label exactly the assistant turns (content and end token).

    Spans are found on the rendered text (the template's output for a prefix of the conversation is a prefix of
    the whole) and mapped to tokens through the fast tokenizer's offsets, so no template is parsed by hand.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True))
        end = len(tokenizer.apply_chat_template(messages[: i + 1], tokenize=False))
        if not text.startswith(tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)):
            raise ValueError("chat template output is not prefix-stable; cannot locate assistant turns")
        spans.append((start, end))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoded["input_ids"]
    labels = [IGNORE] * len(ids)
    for t, (a, _b) in enumerate(encoded["offset_mapping"]):
        if any(s <= a < e for s, e in spans):
            labels[t] = ids[t]
    return TokenizedExample(ids[:max_length], labels[:max_length])


def copy_weights(example: TokenizedExample, weight: float) -> list[float]:
    """Per-token loss weights: `weight` for supervised tokens that continue a token pair seen in the prompt.

    A grounded answer is mostly wording the adapter learns in a few steps, and a few tokens copied from the
    context (the product's name, price and stock) that decide whether it is right; weighting those puts more of
    each step on reading the right line.
    """
    ids, labels = example.input_ids, example.labels
    seen = {(ids[t - 1], ids[t]) for t in range(1, len(ids)) if labels[t] == IGNORE and labels[t - 1] == IGNORE}
    return [weight if t > 0 and labels[t] != IGNORE and (ids[t - 1], ids[t]) in seen else 1.0 for t in range(len(ids))]


def _lr_at(step: int, cfg: LoraTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_steps + 1)
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.learning_rate * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def _batches(examples: Sequence[TokenizedExample], cfg: LoraTrainConfig) -> list[list[TokenizedExample]]:
    """Shuffled batches of similar length: padding to the longest row otherwise wastes about a third of a step.

    Each pass over the examples is sorted by length, cut into batches and the batches shuffled, so consecutive
    steps still see unrelated data (windows of 8 batches left 4 % padding on the demo kit's data; a whole pass
    leaves 0.3 %).
    """
    rng = random.Random(cfg.seed)
    order: list[TokenizedExample] = []
    while len(order) < cfg.steps * cfg.batch_size:
        chunk = list(examples)
        rng.shuffle(chunk)
        order.extend(chunk)
    order = order[: cfg.steps * cfg.batch_size]
    window = len(examples)
    batches: list[list[TokenizedExample]] = []
    for w in range(0, len(order), window):
        part = sorted(order[w : w + window], key=lambda e: len(e.input_ids))
        batches.extend(part[i : i + cfg.batch_size] for i in range(0, len(part), cfg.batch_size))
    rng.shuffle(batches)
    return batches


def _pad(torch: Any, batch: Sequence[TokenizedExample], pad_id: int) -> tuple[Any, Any]:
    """Right-padded token ids and labels (IGNORE on the padding) of one batch."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, ex in enumerate(batch):
        ids[row, : len(ex.input_ids)] = torch.tensor(ex.input_ids)
        labels[row, : len(ex.labels)] = torch.tensor(ex.labels)
    return ids, labels


def _token_losses(torch: Any, causal_lm: Any, ids: Any, labels: Any, device: str, use_bf16: bool) -> tuple[Any, Any]:
    """Cross-entropy at each supervised position, and the mask of those positions among the next tokens.

    Logits are computed only where the next token is supervised. No attention mask: rows are padded on the right
    and attention is causal, so no real token attends to padding, and without a mask SDPA takes its causal path
    instead of a masked one (5 % of a CPU step).
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE
    with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16):
        hidden = causal_lm.model(input_ids=ids).last_hidden_state
        logits = causal_lm.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="none"), keep


def _eval_loss(torch: Any, peft_model: Any, held: Sequence[TokenizedExample], pad_id: int, device: str,
               use_bf16: bool, batch_size: int) -> float:  # fmt: skip
    """Mean loss per supervised token over `held`, with the weights as they are now (unweighted by copy_weight)."""
    causal_lm = peft_model.get_base_model()
    peft_model.eval()
    total, count = 0.0, 0
    ordered = sorted(held, key=lambda e: len(e.input_ids))
    with torch.no_grad():
        for i in range(0, len(ordered), batch_size):
            ids, labels = _pad(torch, ordered[i : i + batch_size], pad_id)
            losses, keep = _token_losses(torch, causal_lm, ids.to(device), labels.to(device), device, use_bf16)
            total, count = total + float(losses.sum()), count + int(keep.sum())
    peft_model.train()
    return round(total / count, 4) if count else float("nan")


def train_lora(
    base_model: Path,
    conversations: Sequence[Conversation],
    out_dir: Path,
    cfg: LoraTrainConfig,
    progress: Callable[[int, int, float], None] | None = None,
    init_adapter: Path | None = None,
    held: Sequence[Conversation] = (),
    on_eval: Callable[[int, float], None] | None = None,
) -> TrainReport:
    """Train one LoRA adapter on `conversations` and save it in PEFT format to `out_dir`.

    With `init_adapter`, training continues from that adapter's weights (a new version of an existing adapter:
    its rank and target modules win over `cfg`'s) instead of starting from a fresh LoRA. With `held`
    conversations, the eval loss on them is taken at `cfg.eval_steps()` (step 0: the base model, or the adapter
    training starts from), reported to `on_eval(step, loss)` and kept in the report. Evaluation draws no random
    numbers and leaves the weights alone, so it does not change what is trained.
    """
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32).to(device)
    if init_adapter is not None:
        peft_model = PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    else:
        peft_model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.rank,
                lora_alpha=cfg.alpha,
                lora_dropout=cfg.dropout,
                target_modules=cfg.target_modules,
                layers_to_transform=cfg.layers,
                task_type="CAUSAL_LM",
            ),
        )
    examples = [tokenize_conversation(tokenizer, c, cfg.max_length) for c in conversations]
    held_examples = [tokenize_conversation(tokenizer, c, cfg.max_length) for c in held]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    causal_lm = peft_model.get_base_model()
    use_bf16 = cfg.bf16 and _bf16_ok(torch)
    if use_bf16:
        _freeze_linears_in_bf16(torch, causal_lm.model)
    peft_model.train()

    eval_at = cfg.eval_steps() if held_examples else set()
    eval_losses: list[tuple[int, float]] = []
    eval_seconds = 0.0

    def evaluate(step: int) -> None:
        nonlocal eval_seconds
        began = time.monotonic()
        loss = _eval_loss(torch, peft_model, held_examples, pad_id, device, use_bf16, max(8, cfg.batch_size))
        eval_seconds += time.monotonic() - began
        eval_losses.append((step, loss))
        if on_eval:
            on_eval(step, loss)

    started = time.monotonic()
    if 0 in eval_at:
        evaluate(0)
    losses: list[float] = []
    tokens = supervised = steps_done = 0
    for step, batch in enumerate(_batches(examples, cfg)):
        ids, labels = _pad(torch, batch, pad_id)
        weights = torch.ones(ids.shape)
        if cfg.copy_weight != 1:
            for row, ex in enumerate(batch):
                weights[row, : len(ex.input_ids)] = torch.tensor(copy_weights(ex, cfg.copy_weight))
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        ids, labels, weights = ids.to(device), labels.to(device), weights.to(device)
        # Predict token t+1 from position t; keep only positions whose next token is supervised.
        token_loss, keep = _token_losses(torch, causal_lm, ids, labels, device, use_bf16)
        weight = weights[:, 1:][keep]
        loss = (token_loss * weight).sum() / weight.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        tokens += sum(len(ex.input_ids) for ex in batch)
        supervised += int(keep.sum())
        steps_done = step + 1
        if progress:
            progress(steps_done, cfg.steps, losses[-1])
        stop = bool(cfg.max_seconds and time.monotonic() - started - eval_seconds > cfg.max_seconds)
        if steps_done in eval_at or (stop and held_examples):
            evaluate(steps_done)
        if stop:
            break
    seconds = time.monotonic() - started - eval_seconds

    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out_dir)
    report = TrainReport(
        steps=steps_done,
        seconds=round(seconds, 1),
        tokens=tokens,
        supervised_tokens=supervised,
        first_loss=round(losses[0], 4),
        last_loss=round(sum(losses[-3:]) / len(losses[-3:]), 4),
        examples=len(examples),
        eval_losses=eval_losses,
        eval_seconds=round(eval_seconds, 1),
    )
    (out_dir / "training.json").write_text(
        json.dumps({"config": cfg.model_dump(), "report": report.to_json()}, indent=2) + "\n"
    )
    return report


def _freeze_linears_in_bf16(torch: Any, decoder: Any) -> None:
    """Store the frozen base weights of the decoder's linear layers in bfloat16, once.

    Autocast would round them to bfloat16 for every matmul anyway, but it does so again on every forward and
    backward (3 % of a 2-conversation CPU step here). Embeddings, norms (the fp32 residual stream) and the
    trainable LoRA weights keep float32, so the arithmetic is the same as before (same losses).
    """
    for module in decoder.modules():
        if isinstance(module, torch.nn.Linear) and not module.weight.requires_grad:
            module.weight.data = module.weight.data.to(torch.bfloat16)


def _bf16_ok(torch: Any) -> bool:
    """bfloat16 autocast pays off on GPUs with bf16 and CPUs with native bf16 (AVX512-BF16/AMX); elsewhere it
    is slower."""
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
