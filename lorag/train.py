"""`lorag train dataset|lora|runs|eval`: from a business's own catalog to a trained, evaluated adapter."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _dataset(args: argparse.Namespace) -> int:
    import yaml

    from adapters.dataset import DatasetError, build_dataset, load_domain, load_products
    from adapters.mix import Mix, Shape, parse_mix
    from adapters.persona import load_persona
    from retrieval.loaders import PRESETS, load_mapping

    try:
        mapping = PRESETS[args.preset] if args.preset else load_mapping(args.mapping) if args.mapping else None
        products, errors = load_products(args.catalog, mapping)
        mix = parse_mix(args.mix) if args.mix else Mix()
        shape = Shape.model_validate(yaml.safe_load(args.shape.read_text()) or {}) if args.shape else Shape()
        card = build_dataset(
            products,
            args.out,
            total=args.samples,
            eval_size=args.eval_samples,
            mix=mix.model_copy(update={"floor": args.floor}),
            persona=load_persona(args.persona, args.name),
            domain=load_domain(args.domain),
            eval_share=args.eval_share,
            seed=args.seed,
            source=str(args.catalog),
            shape=shape,
        )
    except (DatasetError, ValueError, OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if errors:
        print(f"{len(errors)} catalog rows skipped, first: {errors[0]}", file=sys.stderr)
    print(json.dumps({k: card[k] for k in ("products", "samples", "counts")}, indent=2))
    print(f"dataset written to {args.out} (data card: {args.out / 'card.json'})")
    return 0


def _lora(args: argparse.Namespace) -> int:
    from adapters.dataset import DatasetError
    from adapters.finetune import run_lora
    from adapters.training import LoraTrainConfig

    options = {
        "rank": args.rank,
        "alpha": args.alpha or 2 * args.rank,
        "learning_rate": args.lr,
        "batch_size": args.batch,
        "max_length": args.max_length,
        "steps": args.steps or 1,
        "threads": args.threads,
        "bf16": not args.no_bf16,
        "seed": args.seed,
        "layers": list(range(args.layers[0], args.layers[1])) if args.layers else None,
        "eval_every": args.eval_every,
        **({"target_modules": args.target.split(",")} if args.target else {}),
    }
    try:
        record = run_lora(
            args.base,
            args.data,
            args.out,
            LoraTrainConfig(**options),
            epochs=None if args.steps else args.epochs,
            eval_samples=args.eval_samples,
        )
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rep = record["report"]
    print(f"adapter written to {args.out}: {rep['steps']} steps in {rep['seconds']} s, loss {rep['last_loss']}")
    print(f"eval loss {record['eval_loss_base']} (base) -> {record['eval_loss']}; run record {args.out / 'run.json'}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    from adapters.finetune import load_runs, runs_table

    runs = load_runs(args.paths)
    if not runs:
        print(f"error: no run.json under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    print(runs_table(runs))
    return 0


def _layers(text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    if not sep or not low.isdigit() or not high.isdigit() or int(low) >= int(high):
        raise argparse.ArgumentTypeError("layers are LOW:HIGH, e.g. 12:30 (LoRA on layers 12..29)")
    return int(low), int(high)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `train dataset|lora|runs|eval` to the lorag command line."""
    group = sub.add_parser("train", help="fine-tune an assistant on your own catalog").add_subparsers(
        dest="train_command", required=True
    )
    ds = group.add_parser("dataset", help="chat samples from a catalog, split by product, with a data card")
    ds.add_argument("--catalog", type=Path, required=True, help="JSONL or CSV/TSV catalog, as `lorag catalog` reads")
    ds.add_argument("--mapping", type=Path, help="column mapping file (YAML/JSON), as for `lorag catalog ingest`")
    ds.add_argument("--preset", choices=["wands"], help="a built-in column mapping")
    ds.add_argument("--out", type=Path, required=True)
    ds.add_argument("--samples", type=int, default=2000, help="training samples (about; every kind keeps --floor)")
    ds.add_argument("--eval-samples", type=int, default=200)
    ds.add_argument("--mix", help="kind=weight,... (default: the report's ~18k/1.1k/6k/800/275 proportions)")
    ds.add_argument("--floor", type=int, default=2, help="fewest samples of each kind in use")
    ds.add_argument("--persona", type=Path, help="YAML/JSON persona: signature, system, refusal wording")
    ds.add_argument("--name", help="the assistant's name (overrides the persona file's)")
    ds.add_argument("--domain", type=Path, help="the business's own Q&A: YAML/JSON list or JSONL of question/answer")
    ds.add_argument("--eval-share", type=float, default=0.1, help="share of products kept for the eval split")
    ds.add_argument(
        "--shape",
        type=Path,
        help="YAML/JSON of sample-shape shares (adapters.mix.Shape: look_alikes, follow_ups, fake_signal, ...)",
    )
    ds.add_argument("--seed", type=int, default=0)
    ds.set_defaults(func=_dataset)

    lo = group.add_parser("lora", help="train a LoRA adapter on a dataset; record losses, curve and settings")
    lo.add_argument("--base", type=Path, required=True, help="base model directory (Hugging Face format)")
    lo.add_argument("--data", type=Path, required=True, help="a `lorag train dataset` directory")
    lo.add_argument("--out", type=Path, required=True)
    lo.add_argument("--rank", type=int, default=16)
    lo.add_argument("--alpha", type=int, help="default: twice the rank")
    lo.add_argument("--target", help="comma-separated modules (default: all linear projections)")
    lo.add_argument("--layers", type=_layers, help="LOW:HIGH decoder layers that get LoRA (default: all)")
    lo.add_argument("--lr", type=float, default=2e-4)
    lo.add_argument("--epochs", type=float, default=3.0)
    lo.add_argument("--steps", type=int, help="optimizer steps (overrides --epochs)")
    lo.add_argument("--batch", type=int, default=8)
    lo.add_argument("--max-length", type=int, default=1024)
    lo.add_argument("--eval-samples", type=int, default=32, help="eval-split chats for the eval loss")
    lo.add_argument(
        "--eval-every",
        type=int,
        metavar="N",
        help="eval loss every N steps (0: first and last only; default: about 20 points over the run)",
    )
    lo.add_argument("--threads", type=int, help="CPU threads (default: the cores free when training starts)")
    lo.add_argument("--no-bf16", action="store_true", help="train in fp32 even where bf16 is supported")
    lo.add_argument("--seed", type=int, default=0)
    lo.set_defaults(func=_lora)

    runs = group.add_parser("runs", help="recorded runs side by side")
    runs.add_argument("paths", type=Path, nargs="+", help="adapter directories, or directories holding them")
    runs.set_defaults(func=_runs)
    register_eval(group)


def _eval(args: argparse.Namespace) -> int:
    import asyncio

    from adapters.dataset import DatasetError, read_card, read_split
    from adapters.gateway_eval import evaluate, table

    try:
        samples = read_split(args.data, "eval")
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    samples = samples[: args.limit] if args.limit else samples
    mark = read_card(args.data).get("persona", {}).get("refusal_mark", "not in our catalog")
    models = [args.adapter, *([args.base_assistant] if args.base_assistant else [])]
    try:
        scores = asyncio.run(evaluate(args.url, models, samples, api_key=args.api_key, refusal_mark=mark))
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(table(scores))
    for score in scores:
        for question, answer in score.failures[: args.show_failures]:
            print(f"- {score.model}: {question!r} -> {answer!r}")
    return 0


def register_eval(group: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`train eval`: an assistant through the gateway on the eval split, the base assistant beside."""
    ev = group.add_parser("eval", help="fact accuracy, refusals per safety kind, false refusals, through the gateway")
    ev.add_argument("--adapter", required=True, help="the assistant (the `model` a client names) to score")
    ev.add_argument("--data", type=Path, required=True, help="the dataset whose eval split is asked")
    ev.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway")
    ev.add_argument("--api-key", help="a gateway API key, if keys are on")
    ev.add_argument("--base-assistant", default="generic", help="scored beside ('' to skip)")
    ev.add_argument("--limit", type=int, help="ask only the first N eval samples")
    ev.add_argument("--show-failures", type=int, default=0, metavar="N")
    ev.set_defaults(func=_eval)
