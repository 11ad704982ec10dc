"""A tiny, randomly initialised Qwen3 with random LoRA adapters, to test the production architecture's plumbing.

It keeps Qwen3-8B's module names (q/k/v/o and gate/up/down projections, q/k norms), grouped-query layout
(4 query heads per KV head) and untied embeddings, shrunk so that vLLM on CPU starts it in about a minute.
It has learnt nothing and its output is noise: it proves that LoRA targets, engine flags and routing work for
Qwen3, never behaviour (a 4-layer Qwen3 trained from scratch for minutes scored 0 % on the demo task).

It does carry Qwen3's real chat template, so that what the template decides is decided by vLLM itself as in
production: `enable_thinking: false` appending an empty think block, tools listed in the system turn for the
hermes-style `<tool_call>` format. The vocabulary is SmolLM2's, which shares Qwen's ChatML markers, plus the four
tokens Qwen3's vocabulary adds for thinking and tool calls: vLLM finds the end of the thinking by token id (that
is where structured output starts constraining), so spelled out in pieces they would never end it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from adapters.training import ALL_PROJECTIONS

PLUMBING_NAME = "qwen3-plumbing"
# Qwen3's chat template, a reviewed data file next to this module. Source: llama.cpp's copy of the template of
# Hugging Face's Qwen/Qwen3-0.6B (models/templates/Qwen-Qwen3-0.6B.jinja in ggml-org/llama.cpp, read from the
# fork ye-NX/llama.cpp at b354d7c9ecb76c97c07098617cdebbdfffa2583e), line endings as LF. The Qwen3 dense models
# of the first release, Qwen3-8B included, ship this template. The digest is pinned here because the kit's
# fingerprint covers this module's source, not the data file: a changed template must change this file too.
QWEN3_TEMPLATE = Path(__file__).with_name("qwen3_chat_template.jinja")
QWEN3_TEMPLATE_SHA256 = "87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5"
# Added tokens of Qwen3's tokenizer (ids 151657-151668 there), not special: decoded text keeps them, as the
# reasoning and tool parsers read it.
QWEN3_ADDED_TOKENS = ("<tool_call>", "</tool_call>", "<think>", "</think>")


def qwen3_chat_template() -> str:
    """Qwen3's chat template, checked against the pinned digest."""
    text = QWEN3_TEMPLATE.read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()
    if digest != QWEN3_TEMPLATE_SHA256:
        raise ValueError(f"{QWEN3_TEMPLATE} changed (sha256 {digest}); review it and update QWEN3_TEMPLATE_SHA256")
    return text


def build_plumbing(tokenizer_dir: Path, out: Path, adapters: list[str], rank: int = 8, seed: int = 0) -> Path:
    """Write the model to out/base and one random-weight adapter per name to out/adapters/<name>."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import AddedToken
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.chat_template = qwen3_chat_template()
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in QWEN3_ADDED_TOKENS])
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    base_dir = out / "base"
    model = Qwen3ForCausalLM(config)
    model.save_pretrained(base_dir, safe_serialization=True)
    tokenizer.save_pretrained(base_dir)
    for i, name in enumerate(adapters):
        torch.manual_seed(seed + 1 + i)
        fresh = Qwen3ForCausalLM.from_pretrained(base_dir)
        # init_lora_weights=False: random A and B, so each adapter really changes the output.
        peft_model = get_peft_model(
            fresh,
            LoraConfig(
                r=rank,
                lora_alpha=2 * rank,
                target_modules=ALL_PROJECTIONS,
                init_lora_weights=False,
                task_type="CAUSAL_LM",
            ),
        )
        peft_model.save_pretrained(out / "adapters" / name)
    return out
