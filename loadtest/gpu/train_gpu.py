"""LoRA training on the GPU host with lorag's own trainer (`lorag train lora`), on a Qwen3-8B-shaped model.

    python3 train_gpu.py weights --config-dir /tmp/qwen3-8b-dummy --out /tmp/qwen3-8b-rand
    python3 train_gpu.py run --base /tmp/qwen3-8b-rand --data /tmp/train/data --out /tmp/train/r16 --rank 16 ...

`weights` gives the weightless model folder (config + Qwen's tokenizer, as rag.sh setup leaves it) random bf16
weights (initialised on the GPU, Qwen3-8B's shapes, 8.19 B parameters), because the trainer loads a real checkpoint.
`run` is `lorag train lora` in this process, so that it can report what the command does not: the GPU's peak
memory (torch's allocator: allocated and reserved), the time to load the base, and samples/s of the training
loop alone (from the run record's seconds), extrapolated to an epoch of a 26,000-sample mix. One JSON line each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def weights(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    began = time.perf_counter()
    config = AutoConfig.from_pretrained(args.config_dir)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    made = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, max_shard_size="5GB")
    for f in args.config_dir.iterdir():  # tokenizer, chat template, generation config: the serving folder's own
        if f.is_file() and not (args.out / f.name).exists():
            shutil.copy2(f, args.out / f.name)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"step": "weights", "parameters": params, "init_s": round(made - began, 1),
                      "save_s": round(time.perf_counter() - made, 1), "out": str(args.out)}), flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    import torch

    from lorag.cli import main

    torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    command = ["train", "lora", "--base", str(args.base), "--data", str(args.data), "--out", str(args.out),
               "--rank", str(args.rank), "--steps", str(args.steps), "--batch", str(args.batch),
               "--max-length", str(args.max_length), "--eval-samples", "0"]
    rc = main(command)
    wall = time.perf_counter() - began
    record = json.loads((args.out / "run.json").read_text())
    report = record["report"]
    samples = report["steps"] * args.batch
    per_s = samples / report["seconds"]
    card = json.loads((args.data / "card.json").read_text())
    print(json.dumps({
        "step": "run", "rc": rc, "rank": args.rank, "command": "lorag " + " ".join(command),
        "steps": report["steps"], "batch": args.batch, "train_s": report["seconds"], "wall_s": round(wall, 1),
        "load_and_save_s": round(wall - report["seconds"], 1),
        "samples_per_s": round(per_s, 2), "tokens_per_s": round(report["tokens"] / report["seconds"]),
        "mean_tokens_per_sample": round(report["tokens"] / samples, 1),
        "epoch_26k_min": round(26000 / per_s / 60, 1),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "first_loss": report["first_loss"], "last_loss": report["last_loss"],
        "adapter_mib": round(sum(f.stat().st_size for f in args.out.glob("adapter_model.*")) / 2**20, 1),
        "data_card": {k: card.get(k) for k in ("samples", "counts")},
        "gpu": torch.cuda.get_device_name(),
    }), flush=True)
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("weights")
    w.add_argument("--config-dir", type=Path, required=True)
    w.add_argument("--out", type=Path, required=True)
    w.set_defaults(func=weights)
    r = sub.add_parser("run")
    r.add_argument("--base", type=Path, required=True)
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--rank", type=int, default=16)
    r.add_argument("--steps", type=int, default=40)
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--max-length", type=int, default=1024)
    r.set_defaults(func=run)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
