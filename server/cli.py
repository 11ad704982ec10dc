"""The `lorag` command line. Subcommands import their heavy dependencies (torch, vLLM) only when they run."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.engine import EngineSpec

DEFAULT_KIT = Path("build/demo-kit")


def _demo_kit_build(args: argparse.Namespace) -> int:
    from adapters.demo_kit.build import build_kit

    build_kit(args.out, names=args.adapter or None)
    return 0


def _demo_kit_eval(args: argparse.Namespace) -> int:
    from adapters.demo_kit.evaluate import evaluate, table
    from adapters.demo_kit.kit import load_kit
    from server.engine import AdapterSpec, Engine

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
        spec = _kit_spec(args.kit, port=args.port)
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


def _kit_spec(kit_dir: Path, port: int, plumbing: bool = False, host: str = "127.0.0.1") -> EngineSpec:
    from adapters.demo_kit.kit import load_kit
    from server.engine import kit_spec

    return kit_spec(load_kit(kit_dir, plumbing=plumbing), port, host)


def _engine(args: argparse.Namespace) -> int:
    from server.engine import AdapterSpec, Engine, EngineSpec

    if args.model:
        adapters = []
        for item in args.adapter or []:
            name, sep, path = item.partition("=")
            if not sep:
                print(f"--adapter expects NAME=PATH, got {item!r}", file=sys.stderr)
                return 2
            adapters.append(AdapterSpec(name, Path(path)))
        spec = EngineSpec(
            model=args.model,
            served_name=args.served_model_name or args.model,
            adapters=adapters,
            port=args.port,
            host=args.host,
        )
    else:
        spec = _kit_spec(args.kit, args.port, plumbing=args.plumbing, host=args.host)
    spec.max_model_len = args.max_model_len
    spec.extra_args = args.extra or []
    engine = Engine(spec)
    print(
        f"starting vLLM for {spec.served_name} with adapters {[a.name for a in spec.adapters]} "
        f"(log: {engine.log_path})",
        file=sys.stderr,
    )
    engine.start(timeout=args.timeout)
    print(f"engine ready in {engine.ready_seconds:.0f} s: {engine.url}/v1", flush=True)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        # Wake twice a second to notice an engine that died on its own.
        while not stopping.wait(0.5):
            if engine.process is None or engine.process.poll() is not None:
                print(f"engine exited:\n{engine.log_tail()}", file=sys.stderr)
                return 1
    finally:
        print("stopping engine", file=sys.stderr)
        engine.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorag", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    kit = sub.add_parser("demo-kit", help="build and evaluate the demo model kit").add_subparsers(
        dest="kit_command", required=True
    )
    build = kit.add_parser("build", help="convert the base model, train the adapters, build the plumbing model")
    build.add_argument("--out", type=Path, default=DEFAULT_KIT)
    build.add_argument("--adapter", action="append", help="build only this adapter (repeatable)")
    build.set_defaults(func=_demo_kit_build)
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
    ev.set_defaults(func=_demo_kit_eval)

    eng = sub.add_parser("engine", help="start vLLM with LoRA adapters (the demo kit by default)")
    eng.add_argument("--kit", type=Path, default=DEFAULT_KIT)
    eng.add_argument("--plumbing", action="store_true", help="serve the kit's tiny Qwen3 plumbing model")
    eng.add_argument("--model", help="a model path or hub id instead of the kit")
    eng.add_argument("--served-model-name")
    eng.add_argument("--adapter", action="append", metavar="NAME=PATH", help="with --model (repeatable)")
    eng.add_argument("--host", default="127.0.0.1")
    eng.add_argument("--port", type=int, default=8001)
    eng.add_argument("--max-model-len", type=int, default=2048)
    eng.add_argument("--timeout", type=float, default=600, help="seconds to wait for /health")
    eng.add_argument("extra", nargs="*", help="after --, extra arguments passed to vLLM")
    eng.set_defaults(func=_engine)
    from loadtest.cli import register as register_load
    from retrieval.cli import register as register_retrieval
    from server.admin_cli import register as register_adapters
    from server.serve import register as register_serve

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    register_retrieval(sub, bench)
    register_load(bench)
    register_serve(sub)
    register_adapters(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
