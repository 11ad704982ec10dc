"""Sweep demo-kit training settings on a GPU: train each candidate and score it on the held-out set.

Exploration only: on an H200 a 30-step run takes seconds, so many settings and seeds fit in one lease, where 2 CPU
cores need 5 minutes per run plus an eval. Scoring uses the same held-out questions and judge as
`lorag demo-kit eval`, and a second set where every facts block holds look-alikes (`eval --look-alikes 1`), with
transformers' greedy generate in bfloat16 (the CPU engine serves bfloat16) instead of vLLM. The chosen setting is
then trained and evaluated for real on 2 CPU cores (BENCHMARKS.md).

Usage (GPU host, repo root): python3 loadtest/gpu/kit_sweep.py BASE_DIR RUNS.json OUT_DIR [WORKERS]
RUNS.json is a list of {"name", "voice", "seed", "rules", "mix": {kind: weight}, "shape": {Shape field: value},
"config": {LoraTrainConfig fields}}; "rules" replaces the grounding rules for training and scoring alike; "mix" and
"shape" override the kit's TRAIN_MIX weights and TRAIN_SHAPE fields.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
import traceback
from pathlib import Path

from retrieval.facts import GROUNDING_RULES as DEFAULT_RULES


def _score(base: Path, adapter: Path, count: int = int(os.environ.get("SWEEP_QUESTIONS", "200"))) -> dict[str, object]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adapters.demo_kit.data import questions
    from adapters.demo_kit.evaluate import judge

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(base)
    tok.padding_side = "left"
    if tok.pad_token is None:  # the GGUF conversion under some transformers releases leaves it unset
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).to(device)
    model = PeftModel.from_pretrained(model, adapter).eval()
    scores: dict[str, object] = {}
    # The held-out set of `lorag demo-kit eval`, then one where every block holds look-alikes, as retrieved.
    for prefix, look_alikes in (("", 0.0), ("la_", 1.0)):
        held_out = questions("heldout", count, 20261128, look_alikes)
        prompts = [tok.apply_chat_template(q.messages(), tokenize=False, add_generation_prompt=True) for q in held_out]
        answers: list[str] = []
        for i in range(0, len(prompts), 100):
            enc = tok(prompts[i : i + 100], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=48, do_sample=False, pad_token_id=tok.pad_token_id)
            answers += tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        pairs = list(zip(held_out, answers, strict=True))
        facts = [judge(q, a) for q, a in pairs if q.product is not None]
        fakes = [judge(q, a) for q, a in pairs if q.product is None]
        scores[f"{prefix}facts"] = round(sum(facts) / len(facts), 4)
        scores[f"{prefix}refusals"] = round(sum(fakes) / len(fakes), 4)
        scores[f"{prefix}failures"] = [{"kind": q.kind, "q": q.text, "a": a} for q, a in pairs if not judge(q, a)][:12]
    return scores


def _run(job: tuple[dict[str, object], str, str]) -> dict[str, object]:
    run, base_s, out_s = job
    base, out = Path(base_s), Path(out_s)
    try:
        from adapters.demo_kit import build, voices
        from adapters.mix import Mix, Shape
        from adapters.training import LoraTrainConfig, train_lora
        from retrieval import facts

        # Pool workers run many jobs: set the rules for every run, not only those that change them.
        facts.GROUNDING_RULES = str(run.get("rules", DEFAULT_RULES))
        cfg = LoraTrainConfig(**run["config"])  # type: ignore[arg-type]
        voice = voices.VOICES[str(run["voice"])]
        # The kit's own samples (adapters.demo_kit.build: the fine-tuning kit's generator with the kit's mix and
        # shape). Rounds before 2026-12-02 set knobs of the kit's former generator (known_share, max_turns,
        # look_alikes), which this script no longer reproduces.
        seed = int(run.get("seed", 11))  # type: ignore[call-overload]
        # "mix" and "shape" override the kit's TRAIN_MIX weights and TRAIN_SHAPE fields for this run.
        weights = {**build.TRAIN_MIX.weights, **dict(run.get("mix", {}))}  # type: ignore[call-overload]
        mix = Mix(weights=weights, floor=build.TRAIN_MIX.floor)
        shape = Shape(**{**build.TRAIN_SHAPE.model_dump(), **dict(run.get("shape", {}))})  # type: ignore[call-overload]
        convs = build.training_data(voice, cfg.steps * cfg.batch_size, seed=seed, mix=mix, shape=shape)
        adapter = Path(os.environ.get("SWEEP_ADAPTERS", str(out / "adapters"))) / str(run["name"])
        started = time.monotonic()
        report = train_lora(base, convs, adapter, cfg)
        train_s = time.monotonic() - started
        score = _score(base, adapter)
        return {
            **run,
            **score,
            "tokens": report.tokens,
            "supervised": report.supervised_tokens,
            "last_loss": report.last_loss,
            "gpu_train_s": round(train_s, 1),
        }
    except Exception:
        return {**run, "error": traceback.format_exc()[-2000:]}


def main() -> None:
    base, runs_file, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    runs = json.loads(runs_file.read_text())
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with mp.get_context("spawn").Pool(workers) as pool, (out / "results.jsonl").open("a") as sink:
        for result in pool.imap_unordered(_run, [(r, str(base), str(out)) for r in runs]):
            sink.write(json.dumps(result) + "\n")
            sink.flush()
            if "error" in result:
                print(f"{result['name']}: ERROR {str(result['error'])[-300:]}", flush=True)
            else:
                print(
                    f"{result['name']}: facts {result['facts']:.3f} refusals {result['refusals']:.3f} "
                    f"look-alikes {result['la_facts']:.3f} {result['la_refusals']:.3f} "
                    f"tokens {result['tokens']} loss {result['last_loss']} "
                    f"({result['gpu_train_s']} s, {time.monotonic() - started:.0f} s in)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
