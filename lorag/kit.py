"""`lorag demo-kit build|eval`: the demo model kit (base model, trained adapters, plumbing model)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from lorag.engine import kit_engine_spec

DEFAULT_KIT = Path("build/demo-kit")


def _build(args: argparse.Namespace) -> int:
    from adapters.demo_kit.build import build_kit

    build_kit(args.out, names=args.adapter or None)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from adapters.demo_kit.evaluate import evaluate, table
    from adapters.demo_kit.kit import load_kit
    from lorag.launcher import AdapterSpec, Engine

    kit = load_kit(args.kit)
    # Later versions are scored too when the engine is ours: a new version must keep what the one it replaces knew.
    models = [kit.name, *kit.adapters, *([] if args.engine_url else kit.versions)]
    if unknown := set(args.model or ()) - set(models):
        print(f"error: not in the kit: {', '.join(sorted(unknown))} (models: {', '.join(models)})", file=sys.stderr)
        return 2
    models = [m for m in models if not args.model or m in args.model]
    options = {
        "count": args.count,
        "seed": args.seed,
        "concurrency": args.concurrency,
        "look_alikes": args.look_alikes,
    }
    if args.engine_url:
        scores = asyncio.run(evaluate(args.engine_url, models, **options))
    else:
        spec = kit_engine_spec(args.kit, port=args.port)
        spec.adapters += [AdapterSpec(name, path) for name, path in kit.versions.items()]
        with Engine(spec) as engine:
            print(f"engine ready at {engine.url} in {engine.ready_seconds:.0f} s", file=sys.stderr)
            scores = asyncio.run(evaluate(engine.url, models, **options))
    print(table(scores))
    if args.show_failures:
        for score in scores:
            for question, answer in score.failures[: args.show_failures]:
                print(f"- {score.model}: {question!r} -> {answer!r}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `demo-kit build|eval` to the lorag command line."""
    kit = sub.add_parser("demo-kit", help="build and evaluate the demo model kit").add_subparsers(
        dest="kit_command", required=True
    )
    build = kit.add_parser("build", help="convert the base model, train the adapters, build the plumbing model")
    build.add_argument("--out", type=Path, default=DEFAULT_KIT)
    build.add_argument("--adapter", action="append", help="build only this adapter (repeatable)")
    build.set_defaults(func=_build)
    ev = kit.add_parser("eval", help="fact accuracy and fake-product refusal: base model against each adapter")
    ev.add_argument("--kit", type=Path, default=DEFAULT_KIT)
    ev.add_argument("--engine-url", help="use a running engine instead of starting one")
    ev.add_argument("--port", type=int, default=8011)
    ev.add_argument("--count", type=int, default=200, help="held-out questions per model")
    ev.add_argument("--seed", type=int, default=20261128, help="another seed draws another held-out sample")
    ev.add_argument("--model", action="append", help="score only this model (repeatable; default: all)")
    ev.add_argument("--concurrency", type=int, default=8)
    ev.add_argument("--show-failures", type=int, default=0, metavar="N")
    ev.add_argument(
        "--look-alikes",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of facts blocks whose products look alike (same brand and series or model code), as retrieved",
    )
    ev.set_defaults(func=_eval)
