"""A tiny, randomly initialised Qwen3 with random LoRA adapters, to test the production architecture's plumbing.

It keeps Qwen3-8B's module names (q/k/v/o and gate/up/down projections, q/k norms), grouped-query layout
(4 query heads per KV head) and untied embeddings, shrunk so that vLLM on CPU starts it in about a minute.
It has learnt nothing and its output is noise: it proves that LoRA targets, engine flags and routing work for
Qwen3, never behaviour (a 4-layer Qwen3 trained from scratch for minutes scored 0 % on the demo task).
"""

from __future__ import annotations

from pathlib import Path

from adapters.training import ALL_PROJECTIONS

PLUMBING_NAME = "qwen3-plumbing"


def build_plumbing(tokenizer_dir: Path, out: Path, adapters: list[str], rank: int = 8, seed: int = 0) -> Path:
    """Write the model to out/base and one random-weight adapter per name to out/adapters/<name>."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
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
